"""``retrain_schedule``: cron from the environment, retrains on the release last ingested."""

from __future__ import annotations

import importlib
import json

import dagster as dg
import pytest

from recsys_pipeline import schedules
from recsys_pipeline.resources import LakeResource


def test_retrain_schedule_defaults_weekly_and_stopped():
    assert schedules.retrain_schedule.cron_schedule == schedules.DEFAULT_CRON == "0 3 * * 1"
    assert schedules.retrain_schedule.default_status == dg.DefaultScheduleStatus.STOPPED
    assert schedules.retrain_schedule.job_name == "full_pipeline_job"


def test_cron_comes_from_the_environment_and_bad_ones_name_the_variable(monkeypatch):
    monkeypatch.setenv(schedules.CRON_ENV, "30 1 * * *")
    assert schedules.retrain_cron() == "30 1 * * *"
    for bad in ("0 3 * *", "61 3 * * 1", "every monday"):
        monkeypatch.setenv(schedules.CRON_ENV, bad)
        with pytest.raises(ValueError, match=r"\$RECSYS_RETRAIN_CRON="):
            schedules.retrain_cron()
    monkeypatch.setenv(schedules.CRON_ENV, "0 4 * * 0")
    monkeypatch.setenv(schedules.TIMEZONE_ENV, "Europe/Berlin")
    reloaded = importlib.reload(schedules)
    try:
        assert reloaded.retrain_schedule.cron_schedule == "0 4 * * 0"
        assert reloaded.retrain_schedule.execution_timezone == "Europe/Berlin"
    finally:
        monkeypatch.delenv(schedules.CRON_ENV)
        monkeypatch.delenv(schedules.TIMEZONE_ENV)
        importlib.reload(schedules)


def test_a_tick_retrains_on_the_release_last_ingested(tmp_lake, tiny_release):
    lake = LakeResource(root=str(tmp_lake))

    def tick() -> dg.RunRequest:
        context = dg.build_schedule_context(resources={"lake": lake})
        return schedules.retrain_schedule(context)

    assert tick().run_config == {}  # nothing ingested yet: the embedded default
    (tmp_lake / "raw" / "movielens_release.json").write_text(
        json.dumps({"source": str(tiny_release)}))
    request = tick()
    assert request.run_config == {"ops": {"raw__movielens_release": {"config": {
        "path": str(tiny_release)}}}}
    assert request.tags["trigger"] == "retrain_schedule"
