"""What a sensor watches in the lake's raw folder: release ratings files, zips, new users.

A *watched file* is, relative to ``raw/``:

* a zip directly in ``raw/`` (an official release download), or
* a release ratings file (``ratings.csv``, ``ratings.dat``, ``u.data``) in a folder at most
  two levels below ``raw/`` (``raw/ml-1m/ratings.dat``, ``raw/ml-100k/ml-100k/u.data``), or
* a stored new user, ``raw/new_users/*.csv`` (``serving.new_user.persist_new_user``).

Hidden files (a leading dot: temp files of atomic writes) are never watched. A file counts as
new when its path or its modification time (nanoseconds) is not in the previous snapshot; a
new user's file of the previous snapshot that is gone counts as removed (the user must leave
the models too).

``raw/movielens_release.json`` records the release last ingested; :func:`ingested_source`
reads its ``source`` against the lake it is read in, so a moved or copied lake re-ingests its
own copy of a release kept under ``raw/``, never the old location's.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path

RATINGS_FILE_NAMES = frozenset({"ratings.csv", "ratings.dat", "u.data"})
NEW_USERS_DIR = "new_users"  # serving.new_user.NEW_USERS_DIR
RELEASE_RECORD = "movielens_release.json"  # what assets.ingest.movielens_release wrote last
MAX_DEPTH = 3  # path parts below raw/ of a release ratings file


def _watched(rel: Path) -> bool:
    if any(part.startswith(".") for part in rel.parts):
        return False
    if len(rel.parts) == 1:
        return rel.suffix == ".zip"
    if rel.parts[0] == NEW_USERS_DIR:
        return len(rel.parts) == 2 and rel.suffix == ".csv"
    return len(rel.parts) <= MAX_DEPTH and rel.name in RATINGS_FILE_NAMES


def watched_files(raw_dir: str | os.PathLike[str]) -> dict[str, int]:
    """``{path relative to raw_dir: mtime in ns}`` of every watched file (see module doc).

    Args:
        raw_dir: The lake's raw folder; a missing folder has no files.

    Returns:
        The snapshot, keys in POSIX form, sorted.
    """
    raw = Path(raw_dir)
    if not raw.is_dir():
        return {}
    found = {}
    for path in raw.rglob("*"):
        rel = path.relative_to(raw)
        if len(rel.parts) <= MAX_DEPTH and _watched(rel) and path.is_file():
            found[rel.as_posix()] = path.stat().st_mtime_ns
    return dict(sorted(found.items()))


def new_files(previous: Mapping[str, int], current: Mapping[str, int]) -> list[str]:
    """Paths of ``current`` absent from ``previous`` or with another mtime, sorted."""
    return sorted(p for p, mtime in current.items() if previous.get(p) != mtime)


def is_new_user_file(rel: str) -> bool:
    """Whether a watched path (relative to ``raw/``) is a stored new user's file."""
    return Path(rel).parts[0] == NEW_USERS_DIR


def removed_new_users(previous: Mapping[str, int], current: Mapping[str, int]) -> list[str]:
    """New users' files of ``previous`` that are no longer in ``current``, sorted (a deleted
    user must leave the models: a retrain is due, as for an added one)."""
    return sorted(p for p in previous if p not in current and is_new_user_file(p))


def _record(raw_dir: str | os.PathLike[str]) -> dict:
    record = Path(raw_dir) / RELEASE_RECORD
    return json.loads(record.read_text(encoding="utf-8")) if record.is_file() else {}


def _recorded_raw(record: Mapping, source: Path) -> tuple[Path | None, bool]:
    """The raw folder the record was written in, and whether that is known exactly: the
    parent of the recorded new-users folder (``new_users.dir``, always written with the
    lake's raw folder), else the nearest folder named ``raw`` above ``source``."""
    folder = (record.get("new_users") or {}).get("dir")
    if folder and Path(folder).is_absolute():
        return Path(folder).parent, True
    return next((p for p in source.parents if p.name == "raw"), None), False


def ingested_source(raw_dir: str | os.PathLike[str]) -> Path | None:
    """The release last ingested into the lake (``source`` of ``raw/movielens_release.json``),
    None when nothing was ingested yet.

    A release that was inside the lake's raw folder when it was ingested is found in the
    lake of ``raw_dir``, by its path relative to that raw folder: a moved or copied lake
    re-ingests its own copy, never the old location's. A relative ``source`` is relative to
    ``raw_dir``. An older record that does not say which raw folder it was written in maps a
    ``.../raw/<path>`` source the same way when that path exists here or the recorded one is
    gone. A release outside the lake is where the record says.
    """
    record = _record(raw_dir)
    source = record.get("source")
    if not source:
        return None
    raw, path = Path(raw_dir), Path(source)
    if not path.is_absolute():
        return raw / path
    old_raw, exact = _recorded_raw(record, path)
    if old_raw is None or not path.is_relative_to(old_raw):
        return path
    here = raw / path.relative_to(old_raw)
    return here if exact or here.exists() or not path.exists() else path


def ingested_release_name(raw_dir: str | os.PathLike[str]) -> str:
    """The official name of the release last ingested (``""`` when nothing was ingested)."""
    return str(_record(raw_dir).get("name", ""))


def ingested_rating_scale(raw_dir: str | os.PathLike[str]) -> tuple[float, float, float] | None:
    """``(min, max, step)`` of the release last ingested (ml-1m, ml-100k: 1 to 5 in whole
    stars; the others 0.5 to 5 in half stars), None when nothing was ingested."""
    scale = _record(raw_dir).get("rating_scale")
    return (float(scale["min"]), float(scale["max"]), float(scale["step"])) if scale else None


def release_source(raw_dir: str | os.PathLike[str], rel: str) -> Path | None:
    """The release to ingest for a watched file: its folder (or the zip); for a new user's
    file the release last ingested (:func:`ingested_source`, None when there is none)."""
    path = Path(rel)
    if is_new_user_file(rel):
        return ingested_source(raw_dir)
    return Path(raw_dir) / (path if path.suffix == ".zip" else path.parent)
