"""Schedules. ``retrain_schedule`` re-runs the whole pipeline on the lake's current data.

Stopped by default: turn it on in the Dagster UI (*Automation*) or with
``dagster schedule start retrain_schedule``. Its cron comes from ``$RECSYS_RETRAIN_CRON``
(default ``0 3 * * 1``, Mondays 03:00) in ``$RECSYS_RETRAIN_TIMEZONE`` (default ``UTC``), read
when the code location loads. Each tick retrains on the release last ingested into the lake
(``raw/movielens_release.json``; the embedded ml-latest-small when nothing was ingested yet),
with the new users stored under ``raw/new_users``; every trained model then meets the
champion gate (``champion.py``) before it may replace the serving champion.
"""

import os

import dagster as dg

from recsys_pipeline.data.raw_watch import ingested_source
from recsys_pipeline.jobs import full_pipeline_job
from recsys_pipeline.resources import LakeResource

CRON_ENV, TIMEZONE_ENV = "RECSYS_RETRAIN_CRON", "RECSYS_RETRAIN_TIMEZONE"
DEFAULT_CRON, DEFAULT_TIMEZONE = "0 3 * * 1", "UTC"
RELEASE_OP = "raw__movielens_release"  # assets.ingest.movielens_release's op


def retrain_cron() -> str:
    """The cron string in effect; raises naming the variable when it is not a valid cron."""
    cron = os.environ.get(CRON_ENV, "").strip() or DEFAULT_CRON
    try:  # Dagster's own cron validation, on a throwaway definition
        dg.ScheduleDefinition(name="retrain_cron_probe", cron_schedule=cron, job_name="probe")
        valid = len(cron.split()) == 5
    except dg.DagsterInvalidDefinitionError:
        valid = False
    if not valid:
        raise ValueError(f"${CRON_ENV}={cron!r} is not a valid cron schedule "
                         "(five fields, e.g. '0 3 * * 1' for Mondays 03:00)")
    return cron


def retrain_run_config(lake: LakeResource) -> dict:
    """Run config for a retrain: ingest the release the lake last ingested, if any."""
    source = ingested_source(lake.raw_dir())
    if source is None:
        return {}
    return {"ops": {RELEASE_OP: {"config": {"path": str(source)}}}}


@dg.schedule(job=full_pipeline_job, cron_schedule=retrain_cron(),
             execution_timezone=os.environ.get(TIMEZONE_ENV, "").strip() or DEFAULT_TIMEZONE,
             default_status=dg.DefaultScheduleStatus.STOPPED,
             description="Retrain: re-ingest the release last ingested (plus stored new users), "
                         "re-prepare, retrain every model behind the champion gate. Cron from "
                         f"${CRON_ENV} (default '{DEFAULT_CRON}').")
def retrain_schedule(context: dg.ScheduleEvaluationContext,
                     lake: LakeResource) -> dg.RunRequest:
    return dg.RunRequest(run_config=retrain_run_config(lake), tags={"trigger": "retrain_schedule"})


all_schedules = [retrain_schedule]
