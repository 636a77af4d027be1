"""Schedules. ``retrain_schedule`` re-runs the whole pipeline on the lake's current data.

Stopped by default: turn it on in the Dagster UI (*Automation*) or with
``dagster schedule start retrain_schedule``. Its cron comes from ``$RECSYS_RETRAIN_CRON``
(default ``0 3 * * 1``, Mondays 03:00; any cron Dagster accepts, ``@daily``/``@weekly``
included) in ``$RECSYS_RETRAIN_TIMEZONE`` (default ``UTC``; an IANA name such as
``Europe/Berlin``), read when the code location loads: a bad value fails the load with one
line naming the variable and its value (a misconfigured schedule must not silently run at
another time). Each tick retrains on the release last ingested into the lake
(``raw/movielens_release.json``; the embedded ml-latest-small when nothing was ingested yet),
with the new users stored under ``raw/new_users``; every trained model then meets the
champion gate (``champion.py``) before it may replace the serving champion. The retrain keeps
the settings that made the lake: each op's config from the run that last materialized its
asset (``lake_op_configs``). A tick skips
while a ``full_pipeline_job`` run is queued or in progress (that run retrains on the same
data), so ticks do not pile up behind the instance's one-run-at-a-time queue.
"""

import os
from collections.abc import Sequence

import dagster as dg

from recsys_pipeline.assets.catalog import pipeline_assets
from recsys_pipeline.data.raw_watch import ingested_source
from recsys_pipeline.jobs import all_jobs, full_pipeline_job
from recsys_pipeline.resources import LakeResource

CRON_ENV, TIMEZONE_ENV = "RECSYS_RETRAIN_CRON", "RECSYS_RETRAIN_TIMEZONE"
DEFAULT_CRON, DEFAULT_TIMEZONE = "0 3 * * 1", "UTC"
RELEASE_OP = "raw__movielens_release"  # assets.ingest.movielens_release's op
# a run in one of these will still write the lake (NOT_STARTED is left out: a run whose
# launch failed stays there for good and would block every tick)
PENDING_STATUSES = (dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.STARTING,
                    dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.CANCELING)


def _probe(**schedule_args: str) -> bool:
    """Whether Dagster accepts the schedule arguments, on a throwaway definition."""
    try:
        dg.ScheduleDefinition(name="retrain_probe", job_name="probe", **schedule_args)
    except dg.DagsterInvalidDefinitionError:
        return False
    return True


def retrain_cron() -> str:
    """The cron string in effect; raises naming the variable when Dagster rejects it."""
    cron = os.environ.get(CRON_ENV, "").strip() or DEFAULT_CRON
    if not _probe(cron_schedule=cron):
        raise ValueError(f"${CRON_ENV}={cron!r} is not a valid cron schedule (five fields, "
                         "e.g. '0 3 * * 1' for Mondays 03:00, or an alias such as '@daily')")
    return cron


def retrain_timezone() -> str:
    """The timezone in effect; raises naming the variable when it is not a known timezone."""
    timezone = os.environ.get(TIMEZONE_ENV, "").strip() or DEFAULT_TIMEZONE
    if not _probe(cron_schedule=DEFAULT_CRON, execution_timezone=timezone):
        raise ValueError(f"${TIMEZONE_ENV}={timezone!r} is not a known timezone "
                         "(an IANA name, e.g. 'UTC' or 'Europe/Berlin')")
    return timezone


def pending_pipeline_runs(instance: dg.DagsterInstance, limit: int = 1
                          ) -> Sequence[dg.DagsterRun]:
    """The newest ``full_pipeline_job`` runs queued or in progress (newest first)."""
    return instance.get_runs(dg.RunsFilter(job_name=full_pipeline_job.name,
                                           statuses=list(PENDING_STATUSES)), limit=limit)


def _pipeline_ops() -> dict[str, list[dg.AssetKey]]:
    """Op name -> its asset keys, for every asset ``full_pipeline_job`` runs."""
    return {a.node_def.name: sorted(a.keys, key=lambda k: k.to_user_string())
            for a in pipeline_assets()}


def lake_op_configs(instance: dg.DagsterInstance) -> dict[str, dict]:
    """Each op's config in the run that last materialized its asset: the settings that made
    the lake as it is (a prepare_job with the course filter, train_full_job's presets, a
    train_job -c ...), which a retrain keeps instead of falling back to the defaults."""
    preset = {job.name: (job.config or {}).get("ops", {}) for job in all_jobs
              if isinstance(getattr(job, "config", None), dict)}
    out: dict[str, dict] = {}
    for op, keys in _pipeline_ops().items():
        events = [e for e in map(instance.get_latest_materialization_event, keys) if e]
        event = max(events, key=lambda e: e.timestamp, default=None)
        run = instance.get_run_by_id(event.run_id) if event is not None else None
        if run is None:
            continue
        config = ((run.run_config or {}).get("ops") or {}).get(op) \
            or preset.get(run.job_name, {}).get(op)
        if config:
            out[op] = config
    return out


def retrain_run_config(lake: LakeResource, instance: dg.DagsterInstance | None = None,
                       source: object = None) -> dict:
    """Run config for a retrain: every op's config that made the current lake
    (:func:`lake_op_configs`), ingesting ``source`` (default: the release the lake last
    ingested; never downloading again)."""
    ops = lake_op_configs(instance) if instance is not None else {}
    source = source if source is not None else ingested_source(lake.raw_dir())
    release = {k: v for k, v in ops.pop(RELEASE_OP, {}).get("config", {}).items()
               if k not in ("path", "download", "release")}
    if source is not None:
        release["path"] = str(source)
    if release:
        ops[RELEASE_OP] = {"config": release}
    return {"ops": ops} if ops else {}


@dg.schedule(job=full_pipeline_job, cron_schedule=retrain_cron(),
             execution_timezone=retrain_timezone(),
             default_status=dg.DefaultScheduleStatus.STOPPED,
             description="Retrain: re-ingest the release last ingested (plus stored new users), "
                         "re-prepare, retrain every model behind the champion gate; skipped "
                         "while a full_pipeline_job run is queued or in progress. Cron from "
                         f"${CRON_ENV} (default '{DEFAULT_CRON}').")
def retrain_schedule(context: dg.ScheduleEvaluationContext,
                     lake: LakeResource) -> dg.RunRequest | dg.SkipReason:
    if pending := pending_pipeline_runs(context.instance):
        return dg.SkipReason(f"{full_pipeline_job.name} run {pending[0].run_id} is "
                             f"{pending[0].status.value.lower()}: it retrains on the same lake")
    return dg.RunRequest(run_config=retrain_run_config(lake, context.instance),
                         tags={"trigger": "retrain_schedule"})


all_schedules = [retrain_schedule]
