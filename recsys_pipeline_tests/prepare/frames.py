"""Builders for the hand-built test frames of the prepared-data tests."""

from __future__ import annotations

import pyarrow as pa

from recsys_pipeline import schema
from recsys_pipeline.data.encode import encode_ids


def ratings_table(rows: list[tuple[int, int, float, int]]) -> pa.Table:
    """``schema.RATINGS_SCHEMA`` table from (user_id, item_id, rating, epoch seconds) rows."""
    users, items, ratings, ts = zip(*rows, strict=True) if rows else ((), (), (), ())
    return pa.Table.from_arrays(
        [
            pa.array(users, pa.int32()),
            pa.array(items, pa.int32()),
            pa.array(ratings, pa.float32()),
            pa.array(ts, pa.int64()).cast(schema.TIMESTAMP_TYPE),
        ],
        schema=schema.RATINGS_SCHEMA,
    )


def encoded_table(rows: list[tuple[int, int, float, int]]) -> pa.Table:
    """Encoded ratings from (user_id, item_id, rating, epoch seconds) rows.

    With ids ``0..n-1`` used densely, ``user_idx == user_id`` and ``item_idx == item_id``,
    which keeps hand-worked answers readable.
    """
    return encode_ids(ratings_table(rows))[0]
