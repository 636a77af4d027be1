"""``new_ratings_sensor`` and its core (``data.raw_watch``): each tick with new files (or new
users' files deleted) requests one run for all of them."""

from __future__ import annotations

import json
import os
from pathlib import Path

import dagster as dg

from recsys_pipeline.data.raw_watch import new_files, removed_new_users, watched_files
from recsys_pipeline.resources import LakeResource
from recsys_pipeline.sensors import new_ratings_sensor
from recsys_pipeline_tests.test_schedules import pending_run


def _tick(lake: Path, cursor: str | None,
          instance: dg.DagsterInstance | None = None) -> dg.SensorResult:
    context = dg.build_sensor_context(
        cursor=cursor, instance=instance or dg.DagsterInstance.ephemeral(),
        resources={"lake": LakeResource(root=str(lake))})
    return new_ratings_sensor(context)


def _path(request: dg.RunRequest) -> str:
    return request.run_config["ops"]["raw__movielens_release"]["config"]["path"]


def _touch(path: Path, text: str = "x\n", mtime_ns: int | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    if mtime_ns is not None:
        os.utime(path, ns=(mtime_ns, mtime_ns))
    return path


def test_watched_files_rules(tmp_lake):
    raw = tmp_lake / "raw"
    for rel in ("ml-1m/ratings.dat", "ml-100k/ml-100k/u.data", "ml-25m.zip",
                "new_users/user_7.csv", "ml-1m/movies.dat", "new_users/.user_8.csv.ab.tmp",
                "new_users/deep/user_9.csv", "a/b/c/ratings.csv", "notes.txt",
                ".hidden/ratings.csv", "movielens_release.json"):
        _touch(raw / rel, mtime_ns=5)
    assert watched_files(raw) == {"ml-100k/ml-100k/u.data": 5, "ml-1m/ratings.dat": 5,
                                  "ml-25m.zip": 5, "new_users/user_7.csv": 5}
    assert watched_files(tmp_lake / "missing") == {}
    assert new_files({"a": 1, "b": 2}, {"a": 1, "b": 3, "c": 1}) == ["b", "c"]
    assert removed_new_users({"new_users/u.csv": 1, "ml-1m/ratings.dat": 1, "new_users/v.csv": 2},
                             {"new_users/v.csv": 3}) == ["new_users/u.csv"]


def test_sensor_fires_once_per_tick(tmp_lake, tiny_release):
    raw = tmp_lake / "raw"
    first = _tick(tmp_lake, None)
    assert not first.run_requests and "first tick" in first.skip_reason.skip_message
    assert json.loads(first.cursor) == {"tiny/ratings.csv": watched_files(raw)["tiny/ratings.csv"]}
    assert not _tick(tmp_lake, first.cursor).run_requests

    # the lake last ingested the tiny release: a new user re-runs it
    (raw / "movielens_release.json").write_text(json.dumps({"source": str(tiny_release)}))
    _touch(raw / "new_users" / "user_31.csv", mtime_ns=1_000)
    second = _tick(tmp_lake, first.cursor)
    [request] = second.run_requests
    assert request.run_key == "new_users/user_31.csv@1000"
    assert request.tags["trigger_files"] == "new_users/user_31.csv"
    assert request.run_config == {"ops": {"raw__movielens_release": {"config": {
        "path": str(tiny_release)}}}}
    third = _tick(tmp_lake, second.cursor)
    assert not third.run_requests and third.cursor == second.cursor

    # two new releases (and a new user) in one tick: ONE run, ingesting the newest release
    # (the new user's file is appended to it); the other is named as skipped
    _touch(raw / "ml-1m" / "ratings.dat", mtime_ns=3_000)
    _touch(raw / "ml-25m.zip", mtime_ns=2_000)
    _touch(raw / "new_users" / "user_32.csv", mtime_ns=2_500)
    fourth = _tick(tmp_lake, third.cursor)
    [request] = fourth.run_requests
    assert _path(request) == str(raw / "ml-1m")
    assert request.run_key == ("ml-1m/ratings.dat@3000;ml-25m.zip@2000;"
                               "new_users/user_32.csv@2500")
    assert request.tags["trigger_files"] == ("ml-1m/ratings.dat, ml-25m.zip, "
                                             "new_users/user_32.csv")
    assert request.tags["skipped_releases"] == str(raw / "ml-25m.zip")
    assert not _tick(tmp_lake, fourth.cursor).run_requests

    # a rewritten file (new mtime) fires again, once
    _touch(raw / "new_users" / "user_31.csv", mtime_ns=4_000)
    [again] = _tick(tmp_lake, fourth.cursor).run_requests
    assert again.run_key == "new_users/user_31.csv@4000"


def test_new_user_without_an_ingested_release_uses_the_default(tmp_lake):
    first = _tick(tmp_lake, None)
    _touch(tmp_lake / "raw" / "new_users" / "user_1.csv", mtime_ns=10)
    [request] = _tick(tmp_lake, first.cursor).run_requests
    assert request.run_config == {}


def test_many_new_users_in_one_tick_request_one_run(tmp_lake, tiny_release):
    raw = tmp_lake / "raw"
    (raw / "movielens_release.json").write_text(json.dumps({"source": str(tiny_release)}))
    first = _tick(tmp_lake, None)
    for n in range(3):
        _touch(raw / "new_users" / f"user_{40 + n}.csv", mtime_ns=100 + n)
    [request] = _tick(tmp_lake, first.cursor).run_requests  # was one identical run per file
    assert request.run_key == ("new_users/user_40.csv@100;new_users/user_41.csv@101;"
                               "new_users/user_42.csv@102")
    assert request.tags["trigger_files"] == ("new_users/user_40.csv, new_users/user_41.csv, "
                                             "new_users/user_42.csv")
    assert _path(request) == str(tiny_release)

    # a tick with very many files: the run key is their hash, still one per set of changes
    second = _tick(tmp_lake, first.cursor)
    for n in range(60):
        _touch(raw / "new_users" / f"user_{100 + n}.csv", mtime_ns=500)
    [many] = _tick(tmp_lake, second.cursor).run_requests
    assert many.run_key.startswith("60 files sha256:") and len(many.run_key) < 100
    assert many.tags["trigger_files"].count("new_users/") == 60


def test_deleting_a_new_user_requests_a_retrain(tmp_lake, tiny_release):
    raw = tmp_lake / "raw"
    (raw / "movielens_release.json").write_text(json.dumps({"source": str(tiny_release)}))
    user = _touch(raw / "new_users" / "user_31.csv", mtime_ns=1_000)
    _touch(raw / "new_users" / "user_32.csv", mtime_ns=1_000)
    first = _tick(tmp_lake, None)
    user.unlink()
    second = _tick(tmp_lake, first.cursor)
    [request] = second.run_requests  # the old sensor ignored deletions
    assert request.run_key == "new_users/user_31.csv@1000:deleted"
    assert request.tags["deleted_files"] == "new_users/user_31.csv"
    assert "trigger_files" not in request.tags
    assert _path(request) == str(tiny_release)
    assert not _tick(tmp_lake, second.cursor).run_requests

    # stored again and deleted again: another run (another key); a deleted user and a new
    # one in the same tick: still one run
    _touch(user, mtime_ns=2_000)
    third = _tick(tmp_lake, second.cursor)
    user.unlink()
    _touch(raw / "new_users" / "user_33.csv", mtime_ns=3_000)
    [again] = _tick(tmp_lake, third.cursor).run_requests
    assert again.run_key == "new_users/user_33.csv@3000;new_users/user_31.csv@2000:deleted"

    # a release file deleted is not a retrain (nothing to ingest from it)
    fourth = _tick(tmp_lake, first.cursor)
    (tiny_release / "ratings.csv").unlink()
    assert not _tick(tmp_lake, fourth.cursor).run_requests


def test_new_users_follow_the_release_a_queued_run_ingests(tmp_lake, tiny_release):
    """A new release's run still queued has not recorded its release yet: a new user's run
    requested behind it must ingest that release, not undo it with the one recorded."""
    raw = tmp_lake / "raw"
    (raw / "movielens_release.json").write_text(json.dumps({"source": str(tiny_release)}))
    first = _tick(tmp_lake, None)
    _touch(raw / "new_users" / "user_31.csv", mtime_ns=1_000)
    instance = dg.DagsterInstance.ephemeral()
    pending_run(instance, dg.DagsterRunStatus.SUCCESS, "/old/done")  # done: recorded
    assert _path(_tick(tmp_lake, first.cursor, instance).run_requests[0]) == str(tiny_release)
    pending_run(instance, dg.DagsterRunStatus.QUEUED, str(raw / "ml-1m"))
    [request] = _tick(tmp_lake, first.cursor, instance).run_requests
    assert _path(request) == str(raw / "ml-1m")


def test_sensor_definition():
    assert new_ratings_sensor.default_status == dg.DefaultSensorStatus.STOPPED
    assert new_ratings_sensor.job_name == "full_pipeline_job"
    assert new_ratings_sensor.required_resource_keys == {"lake"}
