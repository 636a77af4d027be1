"""``new_ratings_sensor`` and its core (``data.raw_watch``): each new file requests one run."""

from __future__ import annotations

import json
import os
from pathlib import Path

import dagster as dg

from recsys_pipeline.data.raw_watch import new_files, watched_files
from recsys_pipeline.resources import LakeResource
from recsys_pipeline.sensors import new_ratings_sensor


def _tick(lake: Path, cursor: str | None) -> dg.SensorResult:
    context = dg.build_sensor_context(cursor=cursor, resources={"lake": LakeResource(
        root=str(lake))})
    return new_ratings_sensor(context)


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


def test_sensor_fires_once_per_new_file(tmp_lake, tiny_release):
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
    assert request.tags["trigger_file"] == "new_users/user_31.csv"
    assert request.run_config == {"ops": {"raw__movielens_release": {"config": {
        "path": str(tiny_release)}}}}
    third = _tick(tmp_lake, second.cursor)
    assert not third.run_requests and third.cursor == second.cursor

    # two new releases in one tick: two runs, each ingesting its own release
    _touch(raw / "ml-1m" / "ratings.dat", mtime_ns=2_000)
    _touch(raw / "ml-25m.zip", mtime_ns=3_000)
    fourth = _tick(tmp_lake, third.cursor)
    paths = {r.run_key: r.run_config["ops"]["raw__movielens_release"]["config"]["path"]
             for r in fourth.run_requests}
    assert paths == {"ml-1m/ratings.dat@2000": str(raw / "ml-1m"),
                     "ml-25m.zip@3000": str(raw / "ml-25m.zip")}
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


def test_sensor_definition():
    assert new_ratings_sensor.default_status == dg.DefaultSensorStatus.STOPPED
    assert new_ratings_sensor.job_name == "full_pipeline_job"
    assert new_ratings_sensor.required_resource_keys == {"lake"}
