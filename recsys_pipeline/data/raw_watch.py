"""What a sensor watches in the lake's raw folder: release ratings files, zips, new users.

A *watched file* is, relative to ``raw/``:

* a zip directly in ``raw/`` (an official release download), or
* a release ratings file (``ratings.csv``, ``ratings.dat``, ``u.data``) in a folder at most
  two levels below ``raw/`` (``raw/ml-1m/ratings.dat``, ``raw/ml-100k/ml-100k/u.data``), or
* a stored new user, ``raw/new_users/*.csv`` (``serving.new_user.persist_new_user``).

Hidden files (a leading dot: temp files of atomic writes) are never watched. A file counts as
new when its path or its modification time (nanoseconds) is not in the previous snapshot.
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


def _record(raw_dir: str | os.PathLike[str]) -> dict:
    record = Path(raw_dir) / RELEASE_RECORD
    return json.loads(record.read_text(encoding="utf-8")) if record.is_file() else {}


def ingested_source(raw_dir: str | os.PathLike[str]) -> Path | None:
    """The release last ingested into the lake (``source`` of ``raw/movielens_release.json``),
    None when nothing was ingested yet."""
    source = _record(raw_dir).get("source")
    return Path(source) if source else None


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
    if path.parts[0] == NEW_USERS_DIR:
        return ingested_source(raw_dir)
    return Path(raw_dir) / (path if path.suffix == ".zip" else path.parent)
