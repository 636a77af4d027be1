"""``raw_watch.ingested_source``: the release last ingested, read against the lake it is read
in, so a moved or copied lake never re-ingests from the old location."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from recsys_pipeline.data.raw_watch import ingested_source
from recsys_pipeline_tests.conftest import write_tiny_release


def _record(raw: Path, source: str | Path, new_users_dir: str | Path | None = None) -> None:
    """What assets.ingest.movielens_release writes (the fields this module reads)."""
    record: dict = {"name": "ml-latest-small", "source": str(source)}
    if new_users_dir is not None:
        record["new_users"] = {"dir": str(new_users_dir), "sha256": {}}
    raw.mkdir(parents=True, exist_ok=True)
    (raw / "movielens_release.json").write_text(json.dumps(record))


def test_nothing_ingested_and_relative_sources(tmp_path):
    raw = tmp_path / "lake" / "raw"
    raw.mkdir(parents=True)
    assert ingested_source(raw) is None
    _record(raw, "ml-1m")
    assert ingested_source(raw) == raw / "ml-1m"


def test_a_moved_or_copied_lake_ingests_its_own_copy(tmp_path):
    old = tmp_path / "old_lake"
    write_tiny_release(old / "raw" / "tiny")
    _record(old / "raw", old / "raw" / "tiny", old / "raw" / "new_users")
    assert ingested_source(old / "raw") == old / "raw" / "tiny"  # in place: unchanged

    copied = tmp_path / "copied_lake"
    shutil.copytree(old, copied)  # the old lake is still there: the copy's release is used
    assert ingested_source(copied / "raw") == copied / "raw" / "tiny"
    zipped = tmp_path / "zipped_lake"
    shutil.copytree(old, zipped)
    _record(zipped / "raw", old / "raw" / "ml-25m.zip", old / "raw" / "new_users")
    assert ingested_source(zipped / "raw") == zipped / "raw" / "ml-25m.zip"

    moved = tmp_path / "moved_lake"
    old.rename(moved)  # moved: the recorded path is gone
    assert ingested_source(moved / "raw") == moved / "raw" / "tiny"


def test_a_release_outside_the_lake_stays_where_it_was(tmp_path):
    outside = write_tiny_release(tmp_path / "downloads" / "raw" / "ml-x")
    lake_raw = tmp_path / "lake" / "raw"
    _record(lake_raw, outside, lake_raw / "new_users")
    assert ingested_source(lake_raw) == outside
    moved_raw = tmp_path / "moved" / "raw"
    shutil.copytree(lake_raw, moved_raw)
    assert ingested_source(moved_raw) == outside
    # an older record (no new_users folder) under a folder that happens to be named raw/
    _record(moved_raw, outside)
    assert ingested_source(moved_raw) == outside


def test_an_older_record_maps_by_the_raw_folder(tmp_path):
    old_raw, new_raw = tmp_path / "old" / "raw", tmp_path / "new" / "raw"
    write_tiny_release(new_raw / "tiny")
    _record(new_raw, old_raw / "tiny")  # no new_users: which raw/ is read off the path
    assert ingested_source(new_raw) == new_raw / "tiny"  # old gone, here present
    write_tiny_release(old_raw / "tiny")
    assert ingested_source(new_raw) == new_raw / "tiny"  # both: this lake's copy
    shutil.rmtree(new_raw / "tiny")
    assert ingested_source(new_raw) == old_raw / "tiny"  # only the old one exists
    _record(new_raw, old_raw / "gone")
    assert ingested_source(new_raw) == new_raw / "gone"  # neither: this lake's, named clearly
