"""New users' ratings stored beside the release (``<lake>/raw/new_users/*.csv``).

``recsys-pipeline new-user --persist`` (``serving.new_user.persist_new_user``) writes each
new user as ``raw/new_users/user_<id>.csv`` in the ml-latest ``ratings.csv`` format, with an
id above every id of the release. The shipped release files are never edited: ingestion reads
these files and appends them to the release's ratings (``assets.ingest``), so the next
retraining includes the new users.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from recsys_pipeline import schema as S
from recsys_pipeline.data._formats import OffScaleError, Scale, read_layout_table
from recsys_pipeline.data._textio import Member
from recsys_pipeline.data.lake import file_sha256
from recsys_pipeline.data.raw_watch import NEW_USERS_DIR


def new_user_files(raw_dir: str | os.PathLike[str]) -> list[Path]:
    """Every visible ``*.csv`` in ``<raw_dir>/new_users``, sorted by name (none: ``[]``)."""
    folder = Path(raw_dir) / NEW_USERS_DIR
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.glob("*.csv") if p.is_file() and not p.name.startswith("."))


def describe_new_users(raw_dir: str | os.PathLike[str]) -> dict[str, str]:
    """``{file name: sha256}`` of the new users' files (recorded with the release)."""
    return {p.name: file_sha256(p) for p in new_user_files(raw_dir)}


@dataclass(frozen=True)
class NewUsers:
    """New users' ratings read for ingestion.

    Attributes:
        ratings: The rows of every file (canonical ratings schema), file by file.
        files: The files read, in order.
        users: Distinct new user ids.
    """

    ratings: pa.Table
    files: tuple[Path, ...]
    users: int


class ReleaseMismatchError(ValueError):
    """Stored new users that do not fit the release being ingested: ratings off its scale, or
    a user id it already uses (users stored for another release, most likely)."""


def read_new_users(files: list[Path], scale: Scale, release_user_ids: pa.ChunkedArray | pa.Array,
                   release_name: str = NEW_USERS_DIR) -> NewUsers:
    """Read the new users' files in the canonical ratings schema.

    Args:
        files: From :func:`new_user_files`.
        scale: The release's rating scale (a whole-star release rejects half stars).
        release_user_ids: ``user_id`` of the release's ratings; a new user must not reuse one.
        release_name: The release's name, for the messages (e.g. "ml-1m scale").

    Returns:
        The rows of every file.

    Raises:
        ValueError: A malformed file (naming file, line and column), or one user in two files.
        ReleaseMismatchError: A rating off the release's scale, or a user id the release
            already has (a ValueError too).
    """
    known = np.unique(np.asarray(release_user_ids, dtype=np.int64))
    seen: dict[int, Path] = {}
    tables = []
    for path in files:  # one file per user: a handful of files, each read vectorized
        try:
            table = read_layout_table("csv", "ratings", Member(path.parent, path.name),
                                      release_name, scale)
        except OffScaleError as exc:
            raise ReleaseMismatchError(str(exc)) from None
        ids = np.unique(table.column(S.USER_ID).to_numpy().astype(np.int64))
        clash = ids[np.isin(ids, known)]
        if clash.size:
            raise ReleaseMismatchError(
                f"{path}: user_id {int(clash[0])} already exists in the release's ratings; a "
                "new user needs an id above every release id (recsys-pipeline new-user "
                "--persist picks one)")
        for uid in ids.tolist():
            if uid in seen:
                raise ValueError(f"{path}: user_id {uid} is also in {seen[uid]}; each new user "
                                 "belongs in one file")
            seen[uid] = path
        tables.append(table)
    empty = S.empty_table("ratings")
    ratings = pa.concat_tables(tables) if tables else empty
    return NewUsers(ratings.cast(empty.schema), tuple(files), len(seen))
