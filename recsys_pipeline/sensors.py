"""Sensors. ``new_ratings_sensor`` starts the pipeline when ratings land in the lake's raw folder.

Stopped by default: turn it on in the Dagster UI. What it watches is defined in core
(``data.raw_watch``): release zips and ratings files, and new users' files
(``raw/new_users/*.csv``). Its cursor is the JSON snapshot ``{path: mtime_ns}`` of the last
tick, so each new or rewritten file requests exactly one run: a new release is ingested from
its own path, a new user's file re-runs the release last ingested (its source recorded in
``raw/movielens_release.json``). The first tick (no cursor)
only records the files already there.
"""

import json
from pathlib import Path

import dagster as dg

from recsys_pipeline.data.raw_watch import new_files, release_source, watched_files
from recsys_pipeline.jobs import full_pipeline_job
from recsys_pipeline.resources import LakeResource

RELEASE_OP = "raw__movielens_release"  # assets.ingest.movielens_release's op


def _run_request(raw: Path, rel: str, mtime_ns: int) -> dg.RunRequest:
    source = release_source(raw, rel)
    config = {} if source is None else {
        "ops": {RELEASE_OP: {"config": {"path": str(source)}}}}
    return dg.RunRequest(run_key=f"{rel}@{mtime_ns}", run_config=config,
                         tags={"trigger_file": rel})


@dg.sensor(job=full_pipeline_job, minimum_interval_seconds=60,
           default_status=dg.DefaultSensorStatus.STOPPED,
           description="Run full_pipeline_job once per new release or new-user ratings file "
                       "in the lake's raw folder (a new release is ingested from its path).")
def new_ratings_sensor(context: dg.SensorEvaluationContext,
                       lake: LakeResource) -> dg.SensorResult:
    raw = lake.raw_dir()
    current = watched_files(raw)
    if context.cursor is None:
        return dg.SensorResult(skip_reason=f"first tick: {len(current)} file(s) under {raw} "
                                           "recorded", cursor=json.dumps(current))
    fresh = new_files(json.loads(context.cursor), current)
    if not fresh:
        return dg.SensorResult(skip_reason=f"no new ratings file under {raw}",
                               cursor=json.dumps(current))
    context.log.info(f"new ratings file(s): {', '.join(fresh)}")
    return dg.SensorResult(run_requests=[_run_request(raw, p, current[p]) for p in fresh],
                           cursor=json.dumps(current))


all_sensors = [new_ratings_sensor]
