"""Map raw user/item ids to contiguous int32 indices, and back.

``user_idx`` is the rank of ``user_id`` among the distinct user ids of the encoded table
(``0 .. n_users-1``, ascending by ``user_id``); ``item_idx`` likewise for items. The mapping is
therefore a pure function of the set of ids, independent of row order. Maps are stored as two
Parquet tables (``user_map.parquet``, ``item_map.parquet``), never pickled.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from recsys_pipeline import schema
from recsys_pipeline.data import lake

logger = logging.getLogger(__name__)

USER_MAP_FILE = "user_map.parquet"
ITEM_MAP_FILE = "item_map.parquet"
_DENSE_FACTOR = 4  # use a dense lookup array while max(id) <= 4 * rows + slack
_DENSE_SLACK = 1 << 22
_SHOW = 5  # unknown ids named in an error message


def _factorize(ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sorted distinct ids and each row's rank among them (int32)."""
    if len(ids) and ids.min() >= 0 and ids.max() < _DENSE_FACTOR * len(ids) + _DENSE_SLACK:
        present = np.zeros(int(ids.max()) + 1, dtype=bool)
        present[ids] = True
        distinct = np.flatnonzero(present)
        lookup = np.cumsum(present, dtype=np.int32) - 1
        return distinct.astype(ids.dtype), lookup[ids]
    distinct, inverse = np.unique(ids, return_inverse=True)
    return distinct, inverse.astype(np.int32)


def find_positions(known: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """Index of each of ``ids`` in ``known`` (distinct values, any order), -1 where absent.

    One binary search per id (``known`` is sorted first unless it already is).

    Args:
        known: The id of each index, e.g. a map's ``user_id`` column.  # [n]
        ids: Ids to find.  # [m]

    Returns:
        int64 indices into ``known``, -1 for an id it does not hold.  # [m]
    """
    known, ids = np.asarray(known), np.asarray(ids)
    if len(known) == 0:
        return np.full(ids.shape, -1, dtype=np.int64)
    order = None if bool(np.all(known[1:] >= known[:-1])) else np.argsort(known, kind="stable")
    sorted_known = known if order is None else known[order]
    pos = np.searchsorted(sorted_known, ids).clip(0, len(known) - 1)
    found = sorted_known[pos] == ids
    index = pos if order is None else order[pos]
    return np.where(found, index, -1).astype(np.int64)


def _lookup(known: np.ndarray, ids: np.ndarray, what: str) -> np.ndarray:
    """Positions of ``ids`` in ``known``; ValueError naming unknown ids."""
    ids = np.asarray(ids)
    pos = find_positions(known, ids)
    if (pos < 0).any():
        bad = np.unique(ids[pos < 0])
        raise ValueError(
            f"unknown {what} {bad[:_SHOW].tolist()}"
            f"{f' and {len(bad) - _SHOW} more' if len(bad) > _SHOW else ''}: not in the id map"
        )
    return pos.astype(np.int32)


def _check_range(idx: np.ndarray, n: int, what: str) -> np.ndarray:
    idx = np.asarray(idx)
    bad = (idx < 0) | (idx >= n)
    if bad.any():
        shown = np.unique(idx[bad])[:_SHOW].tolist()
        raise ValueError(
            f"unknown {what}: {int(bad.sum())} value(s) outside [0, {n}), e.g. {shown}"
        )
    return idx


@dataclass(frozen=True)
class IdMaps:
    """Both directions of the id <-> index mapping.

    Attributes:
        users: ``schema.USER_MAP_SCHEMA`` table (user_idx, user_id), row ``i`` has user_idx ``i``.
        items: ``schema.ITEM_MAP_SCHEMA`` table (item_idx, item_id, title), row ``i`` has
            item_idx ``i``; title is null where unknown.
    """

    users: pa.Table
    items: pa.Table

    @property
    def n_users(self) -> int:
        """Number of users (the user index space is ``0 .. n_users-1``)."""
        return self.users.num_rows

    @property
    def n_items(self) -> int:
        """Number of items (the item index space is ``0 .. n_items-1``)."""
        return self.items.num_rows

    def has_user(self, user_id: int) -> bool:
        """Whether original ``user_id`` is one of the map's users."""
        known = self.users.column(schema.USER_ID).to_numpy()
        return bool(find_positions(known, np.asarray([user_id], dtype=np.int64))[0] >= 0)

    def to_user_idx(self, user_ids: np.ndarray) -> np.ndarray:
        """``user_id`` values -> int32 ``user_idx``; ValueError naming any unknown id."""
        return _lookup(self.users.column(schema.USER_ID).to_numpy(), user_ids, schema.USER_ID)

    def to_item_idx(self, item_ids: np.ndarray) -> np.ndarray:
        """``item_id`` values -> int32 ``item_idx``; ValueError naming any unknown id."""
        return _lookup(self.items.column(schema.ITEM_ID).to_numpy(), item_ids, schema.ITEM_ID)

    def to_user_ids(self, user_idx: np.ndarray) -> np.ndarray:
        """``user_idx`` values -> ``user_id``; ValueError naming any out-of-range index."""
        idx = _check_range(user_idx, self.n_users, schema.USER_IDX)
        return self.users.column(schema.USER_ID).to_numpy()[idx]

    def to_item_ids(self, item_idx: np.ndarray) -> np.ndarray:
        """``item_idx`` values -> ``item_id``; ValueError naming any out-of-range index."""
        idx = _check_range(item_idx, self.n_items, schema.ITEM_IDX)
        return self.items.column(schema.ITEM_ID).to_numpy()[idx]


def _titles(item_ids: np.ndarray, movies: pa.Table | None) -> pa.Array:
    if movies is None:
        return pa.nulls(len(item_ids), pa.string())
    pos = pc.index_in(pa.array(item_ids), value_set=movies.column(schema.ITEM_ID))
    return movies.column(schema.TITLE).combine_chunks().take(pos)


def _encoded_table(user_idx: np.ndarray, item_idx: np.ndarray, ratings: pa.Table) -> pa.Table:
    cols = [
        pa.array(user_idx, schema.IDX_TYPE),
        pa.array(item_idx, schema.IDX_TYPE),
        ratings.column(schema.USER_ID),
        ratings.column(schema.ITEM_ID),
        ratings.column(schema.RATING),
        ratings.column(schema.TIMESTAMP),
    ]
    # one chunk per column, so later stages get zero-copy numpy views of every column
    return pa.Table.from_arrays(cols, schema=schema.ENCODED_RATINGS_SCHEMA).combine_chunks()


def encode_ids(ratings: pa.Table, movies: pa.Table | None = None) -> tuple[pa.Table, IdMaps]:
    """Assign contiguous indices to the users and items present in ``ratings``.

    Args:
        ratings: ``schema.RATINGS_SCHEMA`` table (already filtered).
        movies: Optional ``schema.MOVIES_SCHEMA`` table; its titles are joined into the item map.

    Returns:
        ``(encoded, maps)``: ``encoded`` has ``schema.ENCODED_RATINGS_SCHEMA`` (user_idx,
        item_idx, user_id, item_id, rating, timestamp) in the input's row order; ``maps`` are
        the :class:`IdMaps`.
    """
    user_ids, user_idx = _factorize(ratings.column(schema.USER_ID).to_numpy())
    item_ids, item_idx = _factorize(ratings.column(schema.ITEM_ID).to_numpy())
    users = pa.Table.from_arrays(
        [pa.array(np.arange(len(user_ids), dtype=np.int32)), pa.array(user_ids, schema.ID_TYPE)],
        schema=schema.USER_MAP_SCHEMA,
    )
    items = pa.Table.from_arrays(
        [
            pa.array(np.arange(len(item_ids), dtype=np.int32)),
            pa.array(item_ids, schema.ID_TYPE),
            _titles(item_ids, movies),
        ],
        schema=schema.ITEM_MAP_SCHEMA,
    )
    logger.info("encoded %d ratings: %d users, %d items", ratings.num_rows, len(users), len(items))
    return _encoded_table(user_idx, item_idx, ratings), IdMaps(users, items)


def apply_id_maps(ratings: pa.Table, maps: IdMaps) -> pa.Table:
    """Encode ``ratings`` with existing maps (e.g. new data scored by a trained model).

    Args:
        ratings: ``schema.RATINGS_SCHEMA`` table.
        maps: Maps from :func:`encode_ids`.

    Returns:
        ``schema.ENCODED_RATINGS_SCHEMA`` table; ValueError naming ids missing from the maps.
    """
    user_idx = maps.to_user_idx(ratings.column(schema.USER_ID).to_numpy())
    item_idx = maps.to_item_idx(ratings.column(schema.ITEM_ID).to_numpy())
    return _encoded_table(user_idx, item_idx, ratings)


def save_id_maps(maps: IdMaps, directory: str | os.PathLike) -> tuple[Path, Path]:
    """Write both maps as Parquet into ``directory`` (atomically, one file at a time).

    Args:
        maps: The maps to write.
        directory: Target folder; created if missing.

    Returns:
        Paths of the user map and item map files.
    """
    directory = Path(directory)
    paths = (directory / USER_MAP_FILE, directory / ITEM_MAP_FILE)
    lake.write_parquet(maps.users, paths[0])
    lake.write_parquet(maps.items, paths[1])
    return paths


def _read_map(path: Path, expected: pa.Schema, idx_col: str, id_col: str) -> pa.Table:
    if not path.is_file():
        raise FileNotFoundError(f"id map file not found: {path}")
    table = pq.read_table(path)
    if table.schema.names != expected.names:
        raise ValueError(f"{path}: columns {table.schema.names}, expected {expected.names}")
    table = table.cast(expected)
    idx = table.column(idx_col).to_numpy()
    if not np.array_equal(idx, np.arange(len(idx))):
        raise ValueError(f"{path}: column {idx_col!r} is not 0..{len(idx) - 1} in order")
    ids = table.column(id_col).to_numpy()
    if len(ids) > 1 and not (np.diff(ids) > 0).all():
        raise ValueError(f"{path}: column {id_col!r} is not strictly increasing")
    return table


def load_id_maps(directory: str | os.PathLike) -> IdMaps:
    """Read maps written by :func:`save_id_maps`, checking their shape.

    Args:
        directory: Folder holding ``user_map.parquet`` and ``item_map.parquet``.

    Returns:
        The :class:`IdMaps`; FileNotFoundError / ValueError naming the file otherwise.
    """
    directory = Path(directory)
    users = _read_map(
        directory / USER_MAP_FILE, schema.USER_MAP_SCHEMA, schema.USER_IDX, schema.USER_ID
    )
    items = _read_map(
        directory / ITEM_MAP_FILE, schema.ITEM_MAP_SCHEMA, schema.ITEM_IDX, schema.ITEM_ID
    )
    return IdMaps(users, items)
