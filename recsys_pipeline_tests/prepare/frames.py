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


def take_rows(table: pa.Table, rows: list[int]) -> pa.Table:
    """The given row positions of ``table`` (in that order)."""
    return table.take(pa.array(rows, pa.int64()))


def column(table: pa.Table, name: str) -> list:
    """One column as a Python list."""
    return table.column(name).to_pylist()


RATING_VALUES = [0.5 * k for k in range(1, 11)]


def rating_rows_strategy(max_users: int = 8, max_items: int = 8, max_rows: int = 40):
    """Hypothesis strategy: rating rows with unique (user, item) and many timestamp ties."""
    from hypothesis import strategies as st

    @st.composite
    def rows(draw) -> list[tuple[int, int, float, int]]:
        n_users = draw(st.integers(1, max_users))
        n_items = draw(st.integers(1, max_items))
        pairs = draw(
            st.lists(
                st.tuples(st.integers(0, n_users - 1), st.integers(0, n_items - 1)),
                min_size=1,
                max_size=max_rows,
                unique=True,
            )
        )
        n = len(pairs)
        ts = draw(st.lists(st.integers(0, 12), min_size=n, max_size=n))
        ratings = draw(st.lists(st.sampled_from(RATING_VALUES), min_size=n, max_size=n))
        # spread the ids so encoding has real work to do (ids != indices)
        return [
            (3 * u + 1, 7 * i + 2, r, 1_000_000 + t)
            for (u, i), r, t in zip(pairs, ratings, ts, strict=True)
        ]

    return rows()
