"""Sensors. ``new_ratings_sensor`` starts the pipeline when ratings land in the lake's raw folder.

Stopped by default: turn it on in the Dagster UI. What it watches is defined in core
(``data.raw_watch``): release zips and ratings files, and new users' files
(``raw/new_users/*.csv``). Its cursor is the JSON snapshot ``{path: mtime_ns}`` of the last
tick. A tick that finds new or rewritten files, or new users' files deleted, requests ONE run
for all of them (``full_pipeline_job`` rewrites the whole lake, so two at once would overwrite
each other's tables): a new release is ingested from its own path (several new releases in
one tick: the newest by mtime, the others logged and tagged as skipped); new users' files
alone re-run the release last ingested (recorded in ``raw/movielens_release.json``), which
appends the new users still stored. The first tick (no cursor) only records the files
already there. Runs wait in the instance's run queue (``dagster.instance.yaml``: one run at
a time), so a sensor run and a retrain never write the lake together.
"""

import hashlib
import json
from pathlib import Path

import dagster as dg

from recsys_pipeline.data.raw_watch import (
    ingested_source,
    is_new_user_file,
    new_files,
    release_source,
    removed_new_users,
    watched_files,
)
from recsys_pipeline.jobs import full_pipeline_job
from recsys_pipeline.resources import LakeResource
from recsys_pipeline.schedules import RELEASE_OP, pending_pipeline_runs, retrain_run_config

MAX_RUN_KEY = 500  # a longer run key (many files in one tick) is replaced by its hash


def _newest_release(raw: Path, fresh: list[str], current: dict[str, int]
                    ) -> tuple[Path | None, list[Path]]:
    """The newest new release among ``fresh`` (by its files' mtime) and the others."""
    releases: dict[Path, int] = {}
    for rel in fresh:
        if not is_new_user_file(rel):
            source = release_source(raw, rel)
            releases[source] = max(releases.get(source, 0), current[rel])
    if not releases:
        return None, []
    newest = max(releases, key=lambda s: (releases[s], str(s)))
    return newest, sorted(s for s in releases if s != newest)


def _release_to_rerun(instance: dg.DagsterInstance, raw: Path) -> Path | None:
    """The release a run for new users' files alone re-ingests: the one the newest queued or
    running ``full_pipeline_job`` run ingests (the lake's once that run is done: a new release
    requested a tick ago must not be undone), else the one the lake last ingested."""
    for run in pending_pipeline_runs(instance):
        config = (run.run_config.get("ops") or {}).get(RELEASE_OP, {}).get("config") or {}
        if config.get("path"):
            return Path(config["path"])
    return ingested_source(raw)


def _run_key(changes: list[str]) -> str:
    key = ";".join(changes)
    if len(key) <= MAX_RUN_KEY:
        return key
    return f"{len(changes)} files sha256:{hashlib.sha256(key.encode()).hexdigest()}"


def _run_request(context: dg.SensorEvaluationContext, lake: LakeResource, raw: Path,
                 previous: dict[str, int],
                 current: dict[str, int], fresh: list[str], deleted: list[str]
                 ) -> dg.RunRequest:
    """One run for every change of the tick (see module doc)."""
    source, skipped = _newest_release(raw, fresh, current)
    if skipped:
        context.log.warning(f"{len(skipped) + 1} new releases in one tick: ingesting only the "
                            f"newest, {source}; skipped (not ingested): "
                            f"{', '.join(map(str, skipped))}")
    if source is None:
        source = _release_to_rerun(context.instance, raw)
    config = retrain_run_config(lake, context.instance, source)  # the lake's own settings
    changes = ([f"{p}@{current[p]}" for p in fresh]
               + [f"{p}@{previous[p]}:deleted" for p in deleted])
    tags = {"trigger_files": ", ".join(fresh)} if fresh else {}
    if deleted:
        tags["deleted_files"] = ", ".join(deleted)
    if skipped:
        tags["skipped_releases"] = ", ".join(map(str, skipped))
    return dg.RunRequest(run_key=_run_key(changes), run_config=config, tags=tags)


@dg.sensor(job=full_pipeline_job, minimum_interval_seconds=60,
           default_status=dg.DefaultSensorStatus.STOPPED,
           description="Run full_pipeline_job once per tick that finds new releases or new-user "
                       "ratings files (added, rewritten or deleted) in the lake's raw folder: a "
                       "new release is ingested from its path (the newest, if several).")
def new_ratings_sensor(context: dg.SensorEvaluationContext,
                       lake: LakeResource) -> dg.SensorResult:
    raw = lake.raw_dir()
    current = watched_files(raw)
    if context.cursor is None:
        return dg.SensorResult(skip_reason=f"first tick: {len(current)} file(s) under {raw} "
                                           "recorded", cursor=json.dumps(current))
    previous = json.loads(context.cursor)
    fresh, deleted = new_files(previous, current), removed_new_users(previous, current)
    if not fresh and not deleted:
        return dg.SensorResult(skip_reason=f"no new ratings file under {raw}",
                               cursor=json.dumps(current))
    context.log.info(f"ratings files changed under {raw}: new {', '.join(fresh) or 'none'}; "
                     f"deleted {', '.join(deleted) or 'none'}")
    request = _run_request(context, lake, raw, previous, current, fresh, deleted)
    return dg.SensorResult(run_requests=[request], cursor=json.dumps(current))


all_sensors = [new_ratings_sensor]
