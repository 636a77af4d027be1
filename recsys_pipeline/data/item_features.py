"""Item side features for feature-aware models (DeepFM): genre and tag multi-hots, years.

Rows follow the item map (row ``i`` describes ``item_idx == i``), so the arrays can be
handed straight to a model as per-item buffers. Everything is vectorised with pyarrow
compute and numpy scatter; there is no loop over items.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from recsys_pipeline import schema as S


@dataclass(frozen=True)
class ItemSideFeatures:
    """Per-item side features aligned with the item map.

    Attributes:
        genres: Genre multi-hot, float32.  # [n_items, n_genres]
        genre_names: Column names of ``genres`` (sorted).
        years: Release year, float64, NaN where unknown (item missing from movies or no year
            in its title).  # [n_items]
        tags: Tag multi-hot over the most widespread tags, float32, or None when not asked
            for.  # [n_items, n_tags]
        tag_names: Column names of ``tags``.
    """

    genres: np.ndarray
    genre_names: list[str]
    years: np.ndarray
    tags: np.ndarray | None = None
    tag_names: list[str] | None = None


def _multi_hot(rows: np.ndarray, values: pa.Array, n_rows: int) -> tuple[np.ndarray, list[str]]:
    """``out[rows[j], code(values[j])] = 1`` with columns the sorted distinct ``values``."""
    names = sorted(pc.unique(values).to_pylist()) if len(values) else []
    out = np.zeros((n_rows, len(names)), dtype=np.float32)
    if names:
        codes = pc.index_in(values, value_set=pa.array(names, pa.string())).to_numpy()
        out[rows, codes] = 1.0
    return out, names


def item_side_features(
    item_map: pa.Table, movies: pa.Table, tags: pa.Table | None = None, max_tags: int = 0
) -> ItemSideFeatures:
    """Genres, years and (optionally) tags of each mapped item.

    Tags are lower-cased and stripped; the ``max_tags`` tags put on the most distinct mapped
    items are kept (ties by tag text), so rare one-off tags do not become columns.

    Args:
        item_map: ``schema.ITEM_MAP_SCHEMA`` table; row ``i`` has ``item_idx == i``.
        movies: ``schema.MOVIES_SCHEMA`` table (clean movies).
        tags: ``schema.TAGS_SCHEMA`` table (clean tags), or None.
        max_tags: Number of tag columns (0: no tag feature).

    Returns:
        The features; items absent from ``movies`` get no genre and an unknown year.

    Raises:
        ValueError: ``item_map`` rows are not ``item_idx`` 0..n-1 in order, or ``max_tags`` < 0.
    """
    n_items = item_map.num_rows
    idx = item_map.column(S.ITEM_IDX).to_numpy()
    if not np.array_equal(idx, np.arange(n_items)):
        raise ValueError("item_map: column 'item_idx' must be 0..n_items-1 in row order")
    if max_tags < 0:
        raise ValueError(f"max_tags={max_tags} must be >= 0")
    item_ids = item_map.column(S.ITEM_ID)
    pos = pc.index_in(item_ids, value_set=movies.column(S.ITEM_ID)).to_numpy(
        zero_copy_only=False
    )  # movie row per item (NaN where absent)
    known = ~np.isnan(pos.astype(np.float64))
    rows = pos[known].astype(np.int64)
    item_rows = np.flatnonzero(known)
    years = np.full(n_items, np.nan)
    year_col = movies.column(S.YEAR).combine_chunks().take(pa.array(rows))
    years[item_rows] = year_col.to_numpy(zero_copy_only=False).astype(np.float64)
    genre_lists = movies.column(S.GENRES).combine_chunks().take(pa.array(rows))
    parents = pc.list_parent_indices(genre_lists).to_numpy()
    genres, genre_names = _multi_hot(item_rows[parents], pc.list_flatten(genre_lists), n_items)
    if tags is None or max_tags == 0:
        return ItemSideFeatures(genres, genre_names, years)
    tag_matrix, tag_names = _tag_multi_hot(item_ids, tags, max_tags)
    return ItemSideFeatures(genres, genre_names, years, tag_matrix, tag_names)


def _tag_multi_hot(
    item_ids: pa.ChunkedArray, tags: pa.Table, max_tags: int
) -> tuple[np.ndarray, list[str]]:
    """Multi-hot of the ``max_tags`` tags on the most distinct items of ``item_ids``."""
    n_items = len(item_ids)
    item_row = pc.index_in(tags.column(S.ITEM_ID), value_set=item_ids)
    text = pc.utf8_trim_whitespace(pc.utf8_lower(tags.column(S.TAG)))
    pairs = pa.table({"row": item_row, "tag": text}).filter(
        pc.and_(pc.is_valid(item_row), pc.greater(pc.utf8_length(text), 0))
    )
    pairs = pairs.group_by(["row", "tag"]).aggregate([])  # distinct (item, tag)
    counts = pairs.group_by("tag").aggregate([("row", "count")])
    counts = counts.sort_by([("row_count", "descending"), ("tag", "ascending")])
    top = counts.column("tag").slice(0, max_tags)
    keep = pairs.filter(pc.is_in(pairs.column("tag"), value_set=top))
    rows = keep.column("row").to_numpy().astype(np.int64)
    return _multi_hot(rows, keep.column("tag").combine_chunks(), n_items)
