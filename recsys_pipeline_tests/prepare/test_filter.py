"""filter_ratings: step order, hand-worked counts, k-core, ties, course setup on real data."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from recsys_pipeline import schema
from recsys_pipeline.data.filter import FilterConfig, filter_ratings, top_n_item_ids
from recsys_pipeline_tests.prepare.frames import ratings_table

# item counts: 10 -> 3, 20 -> 3, 30 -> 2, 40 -> 1; user counts: 1 -> 3, 2 -> 2, 3 -> 3, 4 -> 1
ROWS = [
    (1, 10, 5.0, 100),
    (1, 20, 4.0, 101),
    (1, 30, 3.0, 102),
    (2, 10, 4.0, 103),
    (2, 20, 2.0, 104),
    (3, 10, 1.0, 105),
    (3, 30, 5.0, 106),
    (3, 40, 4.0, 107),
    (4, 20, 5.0, 108),
]


def pairs(table: pa.Table) -> list[tuple[int, int]]:
    return list(
        zip(table[schema.USER_ID].to_pylist(), table[schema.ITEM_ID].to_pylist(), strict=True)
    )


def test_default_config_keeps_everything_and_reports_nothing() -> None:
    table = ratings_table(ROWS)
    out, reports = filter_ratings(table, FilterConfig())
    assert out.equals(table)
    assert reports == []


def test_top_n_ties_break_by_item_id() -> None:
    items = pa.array([20, 10, 30, 10, 20, 40, 30]).to_numpy()  # 10, 20, 30 twice each
    assert top_n_item_ids(items, 1).tolist() == [10]
    assert top_n_item_ids(items, 3).tolist() == [10, 20, 30]
    assert top_n_item_ids(items, 10).tolist() == [10, 20, 30, 40]


def test_top_n_then_min_user_counts_among_kept_items() -> None:
    # top 2 items = 10, 20 (3 each); among them u1: 2, u2: 2, u3: 1, u4: 1 -> keep u1, u2
    out, reports = filter_ratings(
        ratings_table(ROWS), FilterConfig(top_n_items=2, min_user_ratings=2)
    )
    assert pairs(out) == [(1, 10), (1, 20), (2, 10), (2, 20)]
    assert [r.step for r in reports] == ["top_n_items", "min_user_ratings"]
    top, users = reports
    assert (top.rows_before, top.rows_after, top.items_before, top.items_after) == (9, 6, 4, 2)
    assert (top.users_before, top.users_after) == (4, 4)
    assert (users.rows_before, users.rows_after, users.users_after, users.items_after) == (
        6,
        4,
        2,
        2,
    )
    assert users.rows_dropped == 2


def test_rating_threshold_keeps_ratings_at_or_above() -> None:
    out, reports = filter_ratings(ratings_table(ROWS), FilterConfig(rating_threshold=4.0))
    assert pairs(out) == [(1, 10), (1, 20), (2, 10), (3, 30), (3, 40), (4, 20)]
    assert reports[0].step == "rating_threshold" and reports[0].reason == "rating < 4.0"


def test_threshold_runs_before_top_n() -> None:
    # after threshold 4: counts 10 -> 2, 20 -> 2, 30 -> 1, 40 -> 1; top-1 is item 10
    out, _ = filter_ratings(ratings_table(ROWS), FilterConfig(rating_threshold=4.0, top_n_items=1))
    assert pairs(out) == [(1, 10), (2, 10)]


KCORE_ROWS = [
    (1, 1, 4.0, 0),
    (1, 2, 4.0, 1),
    (2, 1, 4.0, 2),
    (2, 2, 4.0, 3),
    (3, 1, 4.0, 4),
    (3, 3, 4.0, 5),
    (4, 3, 4.0, 6),
]


def test_single_pass_leaves_items_under_minimum() -> None:
    # item pass keeps all (1: 3, 2: 2, 3: 2); user pass drops u4, leaving item 3 with one row
    config = FilterConfig(min_user_ratings=2, min_item_ratings=2)
    out, reports = filter_ratings(ratings_table(KCORE_ROWS), config)
    assert pairs(out) == [(1, 1), (1, 2), (2, 1), (2, 2), (3, 1), (3, 3)]
    assert len(reports) == 2


def test_k_core_iterates_until_stable() -> None:
    # round 2 drops item 3 then user 3; round 3 drops nothing
    config = FilterConfig(min_user_ratings=2, min_item_ratings=2, k_core=True)
    out, reports = filter_ratings(ratings_table(KCORE_ROWS), config)
    assert pairs(out) == [(1, 1), (1, 2), (2, 1), (2, 2)]
    assert [r.rows_dropped for r in reports] == [0, 1, 1, 1, 0, 0]
    assert reports[-1].step == "min_user_ratings [round 3]"


def test_row_order_is_preserved() -> None:
    rows = list(reversed(ROWS))
    out, _ = filter_ratings(ratings_table(rows), FilterConfig(min_item_ratings=2))
    assert pairs(out) == [(u, i) for u, i, _, _ in rows if i != 40]


@pytest.mark.parametrize(
    "kwargs", [{"min_user_ratings": -1}, {"min_item_ratings": -2}, {"top_n_items": 0}]
)
def test_bad_config_raises(kwargs: dict) -> None:
    with pytest.raises(ValueError, match="FilterConfig"):
        FilterConfig(**kwargs)


def test_missing_column_is_named() -> None:
    with pytest.raises(ValueError, match="rating"):
        filter_ratings(ratings_table(ROWS).drop_columns([schema.RATING]), FilterConfig())


def test_course_setup_on_ml_latest_small(ml_small_ratings: pa.Table) -> None:
    """The 200 most-rated movies, then users with >= 100 ratings among them: 200 / 63 / 8,329."""
    out, reports = filter_ratings(
        ml_small_ratings, FilterConfig(top_n_items=200, min_user_ratings=100)
    )
    assert out.num_rows == 8_329
    assert len(set(out[schema.USER_ID].to_pylist())) == 63
    assert len(set(out[schema.ITEM_ID].to_pylist())) == 200
    assert out.schema == schema.RATINGS_SCHEMA
    last = reports[-1]
    assert (last.rows_after, last.users_after, last.items_after) == (8_329, 63, 200)
    assert reports[0].rows_before == 100_836 and reports[0].items_after == 200


def test_negative_and_huge_ids_take_the_sort_based_path() -> None:
    # ids too sparse for a dense bincount; same answer as the dense path on the same shape
    big = 2_000_000_000
    # order-preserving maps: users to negative and positive ids, items up to 2e9
    rows = [(u * 600_000_000 - 1_500_000_000, i * 50_000_000, r, t) for u, i, r, t in ROWS]
    config = FilterConfig(top_n_items=2, min_user_ratings=2)
    out, reports = filter_ratings(ratings_table(rows), config)
    expected, dense_reports = filter_ratings(ratings_table(ROWS), config)
    assert out.num_rows == expected.num_rows == 4
    assert out[schema.ITEM_ID].to_pylist() == [
        i * 50_000_000 for i in expected[schema.ITEM_ID].to_pylist()
    ]
    assert [r.rows_after for r in reports] == [r.rows_after for r in dense_reports]
    assert top_n_item_ids(np.array([-3, big, big, -3, 5, big]), 2).tolist() == [big, -3]
