"""``retrain_schedule``: cron from the environment, retrains on the release last ingested,
skips while a full pipeline is queued or running; the instance config runs one run at a time."""

from __future__ import annotations

import importlib
import json
import os
import shutil
from pathlib import Path

import dagster as dg
import pytest
from dagster._core.remote_origin import (
    RegisteredCodeLocationOrigin,
    RemoteJobOrigin,
    RemoteRepositoryOrigin,
)
from dagster._core.test_utils import create_run_for_test

from recsys_pipeline import schedules
from recsys_pipeline.resources import LakeResource

REPO_ROOT = Path(__file__).resolve().parents[1]


def pending_run(instance: dg.DagsterInstance, status: dg.DagsterRunStatus,
                path: str | None = None, job_name: str = "full_pipeline_job") -> dg.DagsterRun:
    """A run in ``instance`` as the daemon leaves it (queued ones need a job origin)."""
    origin = RemoteJobOrigin(repository_origin=RemoteRepositoryOrigin(
        code_location_origin=RegisteredCodeLocationOrigin(location_name="recsys"),
        repository_name="__repository__"), job_name=job_name)
    config = {} if path is None else {
        "ops": {"raw__movielens_release": {"config": {"path": path}}}}
    return create_run_for_test(instance, job_name=job_name, status=status, run_config=config,
                               remote_job_origin=origin)


@pytest.fixture
def instance():
    """A persistent instance (a schedule context drops an ephemeral one); contexts built on it
    are entered with ``with``, which disposes the instance they open from its ref."""
    with dg.instance_for_test() as persistent:
        yield persistent


def test_retrain_schedule_defaults_weekly_and_stopped():
    assert schedules.retrain_schedule.cron_schedule == schedules.DEFAULT_CRON == "0 3 * * 1"
    assert schedules.retrain_schedule.default_status == dg.DefaultScheduleStatus.STOPPED
    assert schedules.retrain_schedule.job_name == "full_pipeline_job"


def test_cron_comes_from_the_environment_and_bad_ones_name_the_variable(monkeypatch):
    monkeypatch.setenv(schedules.CRON_ENV, "30 1 * * *")
    assert schedules.retrain_cron() == "30 1 * * *"
    for alias in ("@daily", "@weekly", "@hourly"):  # Dagster accepts them: so does the check
        monkeypatch.setenv(schedules.CRON_ENV, alias)
        assert schedules.retrain_cron() == alias
    for bad in ("0 3 * *", "61 3 * * 1", "every monday", "0 3 * * 1 0", "@reboot"):
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


def test_a_bad_timezone_or_cron_fails_the_load_naming_the_variable(monkeypatch):
    """The code location fails to load with one line naming the variable and its value (not
    Dagster's 'Invalid execution timezone ... for retrain_schedule')."""
    monkeypatch.setenv(schedules.TIMEZONE_ENV, "utc")
    assert schedules.retrain_timezone() == "utc"  # Dagster's own spelling, accepted
    for bad in ("Europe/Berln", "Mars/Olympus", "../etc/passwd"):
        monkeypatch.setenv(schedules.TIMEZONE_ENV, bad)
        with pytest.raises(ValueError, match=rf"^\$RECSYS_RETRAIN_TIMEZONE={bad!r} is not a "
                                             "known timezone"):
            schedules.retrain_timezone()
    try:
        with pytest.raises(ValueError, match=r"\$RECSYS_RETRAIN_TIMEZONE='Europe/Berln'"):
            monkeypatch.setenv(schedules.TIMEZONE_ENV, "Europe/Berln")
            importlib.reload(schedules)
        monkeypatch.delenv(schedules.TIMEZONE_ENV)
        monkeypatch.setenv(schedules.CRON_ENV, "@weekly")
        assert importlib.reload(schedules).retrain_schedule.cron_schedule == "@weekly"
        monkeypatch.setenv(schedules.CRON_ENV, "0 3 * *")
        with pytest.raises(ValueError, match=r"\$RECSYS_RETRAIN_CRON='0 3 \* \*'"):
            importlib.reload(schedules)
    finally:
        monkeypatch.delenv(schedules.CRON_ENV, raising=False)
        monkeypatch.delenv(schedules.TIMEZONE_ENV, raising=False)
        importlib.reload(schedules)


def test_a_tick_retrains_on_the_release_last_ingested(tmp_lake, tiny_release, instance):
    lake = LakeResource(root=str(tmp_lake))

    def tick() -> dg.RunRequest:
        with dg.build_schedule_context(instance=instance, resources={"lake": lake}) as context:
            return schedules.retrain_schedule(context)

    assert tick().run_config == {}  # nothing ingested yet: the embedded default
    (tmp_lake / "raw" / "movielens_release.json").write_text(
        json.dumps({"source": str(tiny_release)}))
    request = tick()
    assert request.run_config == {"ops": {"raw__movielens_release": {"config": {
        "path": str(tiny_release)}}}}
    assert request.tags["trigger"] == "retrain_schedule"


def test_a_tick_skips_while_a_full_pipeline_run_is_queued_or_running(tmp_lake, instance):
    lake = LakeResource(root=str(tmp_lake))

    def tick() -> dg.RunRequest | dg.SkipReason:
        with dg.build_schedule_context(instance=instance, resources={"lake": lake}) as context:
            return schedules.retrain_schedule(context)

    for status in (dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE,
                   dg.DagsterRunStatus.CANCELED, dg.DagsterRunStatus.NOT_STARTED):
        pending_run(instance, status)
    pending_run(instance, dg.DagsterRunStatus.STARTED, job_name="tune_job")
    assert isinstance(tick(), dg.RunRequest)  # finished runs and other jobs do not count
    for status in (dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.STARTED):
        run = pending_run(instance, status)
        skipped = tick()
        assert isinstance(skipped, dg.SkipReason)
        assert skipped.skip_message == (f"full_pipeline_job run {run.run_id} is "
                                        f"{status.value.lower()}: it retrains on the same lake")
        instance.delete_run(run.run_id)
    assert isinstance(tick(), dg.RunRequest)


def test_the_instance_template_queues_runs_one_at_a_time(tmp_path, monkeypatch):
    """dagster.instance.yaml (not dagster.yaml: `dagster dev` would warn that it ignores it)
    is the instance config the Makefile copies to $DAGSTER_HOME/dagster.yaml."""
    assert not (REPO_ROOT / "dagster.yaml").exists()
    assert "$(DAGSTER_HOME)/dagster.yaml: dagster.instance.yaml" in (
        REPO_ROOT / "Makefile").read_text()
    shutil.copy(REPO_ROOT / "dagster.instance.yaml", tmp_path / "dagster.yaml")
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path))
    with dg.DagsterInstance.from_config(os.fspath(tmp_path)) as instance:
        assert type(instance.run_coordinator).__name__ == "QueuedRunCoordinator"
        assert instance.get_concurrency_config().run_queue_config.max_concurrent_runs == 1


def test_a_copied_lake_retrains_on_its_own_copy_of_the_release(tmp_path, instance):
    from recsys_pipeline_tests.conftest import write_tiny_release

    old = tmp_path / "old_lake"
    write_tiny_release(old / "raw" / "tiny")
    (old / "raw" / "movielens_release.json").write_text(json.dumps({  # as ingest writes it
        "source": str(old / "raw" / "tiny"),
        "new_users": {"dir": str(old / "raw" / "new_users"), "sha256": {}}}))
    new = tmp_path / "new_lake"
    shutil.copytree(old, new)
    with dg.build_schedule_context(instance=instance,
                                   resources={"lake": LakeResource(root=str(new))}) as context:
        request = schedules.retrain_schedule(context)
    assert request.run_config == {"ops": {"raw__movielens_release": {"config": {
        "path": str(new / "raw" / "tiny")}}}}


# stand-ins for the real assets: same keys and op names, so their runs' configs look alike
# (config_schema: this module's string annotations would hide a Config class from Dagster)
@dg.asset(key_prefix="prepared", name="filtered_ratings",
          config_schema={"top_n_items": dg.Field(int, default_value=0)})
def _fake_filtered(context) -> int:
    return context.op_config["top_n_items"]


@dg.asset(key_prefix="raw", name="movielens_release", config_schema={
    "path": dg.Field(str, default_value=""), "release": dg.Field(str, default_value="auto"),
    "download": dg.Field(bool, default_value=False),
    "include_new_users": dg.Field(bool, default_value=True)})
def _fake_release(context) -> str:
    return context.op_config["path"]


@dg.asset(key_prefix="models", name="mf_model")
def _fake_mf() -> int:
    return 0


def test_a_retrain_keeps_the_settings_that_made_the_lake(tmp_lake, tiny_release, instance):
    """A lake prepared with the course filter and trained by train_full_job is retrained with
    those settings, not the demo defaults (which the champion gate would let take over as
    another split config)."""
    from recsys_pipeline.jobs import train_full_job

    filtered, release, mf = _fake_filtered, _fake_release, _fake_mf
    assert dg.materialize([filtered, release], instance=instance, run_config={"ops": {
        "prepared__filtered_ratings": {"config": {"top_n_items": 200}},
        "raw__movielens_release": {"config": {"path": "/gone", "include_new_users": False,
                                              "download": True, "release": "ml-1m"}}}}).success
    full = dg.define_asset_job("train_full_job", selection=[mf.key])  # run_config stays {}
    dg.Definitions(assets=[mf], jobs=[full]).resolve_job_def("train_full_job").execute_in_process(
        instance=instance)
    (tmp_lake / "raw" / "movielens_release.json").write_text(
        json.dumps({"source": str(tiny_release)}))
    with dg.build_schedule_context(instance=instance, resources={
            "lake": LakeResource(root=str(tmp_lake))}) as context:
        ops = schedules.retrain_schedule(context).run_config["ops"]
    assert ops["prepared__filtered_ratings"] == {"config": {"top_n_items": 200}}
    assert ops["models__mf_model"] == train_full_job.config["ops"]["models__mf_model"]
    assert ops["raw__movielens_release"] == {"config": {  # the lake's release, no download
        "path": str(tiny_release), "include_new_users": False}}
    assert "models__mlp_model" not in ops  # never materialized here: its defaults
