"""split_ratings on hand-built frames: each method's rule, tie-breaks, cold start, config errors."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pytest

from recsys_pipeline import schema
from recsys_pipeline.data.order import chronological_order, segment_codes
from recsys_pipeline.data.split import SplitConfig, split_ratings
from recsys_pipeline_tests.prepare.frames import column, encoded_table


def items(table, user: int | None = None) -> list[int]:
    """item_idx of a table's rows (optionally one user's), in table order."""
    return [
        i
        for u, i in zip(column(table, "user_idx"), column(table, "item_idx"), strict=True)
        if user is None or u == user
    ]


def test_leave_last_k_breaks_timestamp_ties_by_row_order() -> None:
    rows = [
        (0, 0, 4.0, 10),
        (0, 1, 4.0, 30),
        (0, 2, 4.0, 30),
        (0, 3, 4.0, 20),  # 0,3,1,2 in time
        (1, 0, 3.0, 50),  # a single row stays in train
        (2, 1, 2.0, 5),
        (2, 0, 2.0, 1),  # two rows: the later one is test, no valid
    ]
    splits = split_ratings(encoded_table(rows), SplitConfig("user_temporal", leave_last_k=1))
    assert items(splits.train, 0) == [0, 3] and items(splits.valid, 0) == [1]
    assert items(splits.test, 0) == [2]
    assert (
        items(splits.train, 1) == [0]
        and items(splits.valid, 1) == []
        and items(splits.test, 1) == []
    )
    assert items(splits.train, 2) == [0] and items(splits.test, 2) == [1]
    assert splits.valid_fold_in.num_rows == splits.test_fold_in.num_rows == 0


def test_user_fractions_round_half_up_and_keep_a_train_row() -> None:
    # user 0: 10 rows -> 8/1/1; user 1: 5 -> round(4.0)=4, round(4.5)=5 -> 4/1/0;
    # user 2: 3 -> round(2.4)=2, round(2.7)=3 -> 2/1/0; user 3: 1 -> 1/0/0
    rows = [(0, i, 3.0, 100 - i) for i in range(10)]  # later items are older
    rows += (
        [(1, i, 3.0, i) for i in range(5)] + [(2, i, 3.0, i) for i in range(3)] + [(3, 0, 3.0, 0)]
    )
    splits = split_ratings(
        encoded_table(rows), SplitConfig("user_temporal", ratios=(0.8, 0.1, 0.1))
    )
    assert items(splits.test, 0) == [0] and items(splits.valid, 0) == [1]
    assert items(splits.train, 0) == [2, 3, 4, 5, 6, 7, 8, 9]  # input row order kept
    assert (
        len(items(splits.train, 1)),
        len(items(splits.valid, 1)),
        len(items(splits.test, 1)),
    ) == (4, 1, 0)
    assert items(splits.valid, 2) == [2] and items(splits.train, 3) == [0]
    assert splits.report.rows == {
        "train": 15,
        "valid_fold_in": 0,
        "valid": 3,
        "test_fold_in": 0,
        "test": 1,
        "dropped": 0,
    }


def test_global_quantile_cuts_never_split_equal_timestamps() -> None:
    ts = [1, 2, 3, 4, 5, 6, 7, 9, 9, 10]  # the 80% quantile lands on a tie: both 9s go to valid
    rows = [(i % 3, i, 3.0, t) for i, t in enumerate(ts)]
    splits = split_ratings(encoded_table(rows), SplitConfig("global_temporal"))
    assert items(splits.train) == [0, 1, 2, 3, 4, 5, 6]
    assert items(splits.valid) == [7, 8] and items(splits.test) == [9]
    assert splits.report.valid_start == datetime.fromtimestamp(9, UTC)
    assert splits.report.test_start == datetime.fromtimestamp(10, UTC)


def test_global_explicit_cut_times() -> None:
    rows = [(0, i, 3.0, t) for i, t in enumerate([100, 200, 300, 400, 500])]
    cuts = (datetime.fromtimestamp(200, UTC), datetime.fromtimestamp(450, UTC))
    splits = split_ratings(encoded_table(rows), SplitConfig("global_temporal", cut_times=cuts))
    assert (items(splits.train), items(splits.valid), items(splits.test)) == ([0], [1, 2, 3], [4])


def test_random_sizes_seed_and_order() -> None:
    rows = [(i % 4, i, 3.0, i) for i in range(20)]
    encoded = encoded_table(rows)
    a = split_ratings(encoded, SplitConfig("random", seed=1))
    assert (a.train.num_rows, a.valid.num_rows, a.test.num_rows) == (16, 2, 2)
    assert items(a.train) == sorted(items(a.train))  # relative input order kept
    assert split_ratings(encoded, SplitConfig("random", seed=1)) == a
    others = [split_ratings(encoded, SplitConfig("random", seed=s)).test for s in range(2, 6)]
    assert any(not t.equals(a.test) for t in others)


def test_strong_generalization_holds_out_whole_users() -> None:
    # 6 users x 5 rows; user u rates item i at time 10*i + u (item order == time order)
    rows = [(u, i, 3.0, 10 * i + u) for u in range(6) for i in range(5)]
    config = SplitConfig("strong_generalization", n_valid_users=1, n_test_users=2, seed=3)
    splits = split_ratings(encoded_table(rows), config)
    valid_users = set(column(splits.valid, "user_idx"))
    test_users = set(column(splits.test, "user_idx"))
    train_users = set(column(splits.train, "user_idx"))
    assert len(valid_users) == 1 and len(test_users) == 2 and len(train_users) == 3
    assert not (train_users & (valid_users | test_users)) and not valid_users & test_users
    for u in valid_users:  # round(5 * 0.8) = 4 earliest rows fold in, the last is evaluated
        assert items(splits.valid_fold_in, u) == [0, 1, 2, 3] and items(splits.valid, u) == [4]
    for u in test_users:
        assert items(splits.test_fold_in, u) == [0, 1, 2, 3] and items(splits.test, u) == [4]
    assert split_ratings(encoded_table(rows), config) == splits


SIZES_ROWS = [(0, 0, 3.0, 1), (1, 0, 3.0, 2), (1, 1, 3.0, 3)] + [
    (u, i, 3.0, 100 * u + i) for u in (2, 3) for i in range(10)
]


def _fold_eval(splits, user: int) -> tuple[list[int], list[int]]:
    fold = items(splits.valid_fold_in, user) + items(splits.test_fold_in, user)
    return fold, items(splits.valid, user) + items(splits.test, user)


def test_strong_generalization_fold_in_sizes_per_user() -> None:
    # 1 row -> fold-in only; 2 rows -> round(1.6) = 2 clipped to 1 + 1; 10 rows -> 8 + 2
    config = SplitConfig("strong_generalization", n_valid_users=2, n_test_users=1, seed=0)
    splits = split_ratings(encoded_table(SIZES_ROWS), config)
    (train_user,) = set(column(splits.train, "user_idx"))
    expected = {
        0: ([0], []),
        1: ([0], [1]),
        2: (list(range(8)), [8, 9]),
        3: (list(range(8)), [8, 9]),
    }
    for user, answer in expected.items():
        if user != train_user:
            assert _fold_eval(splits, user) == answer


def test_strong_generalization_random_fold_in() -> None:
    first_halves = set()
    for seed in range(4):
        config = SplitConfig(
            "strong_generalization",
            n_valid_users=3,
            n_test_users=0,
            seed=seed,
            fold_in_by="random",
            fold_in_fraction=0.5,
        )
        splits = split_ratings(encoded_table(SIZES_ROWS), config)
        assert split_ratings(encoded_table(SIZES_ROWS), config) == splits
        for user in {2, 3} - set(column(splits.train, "user_idx")):
            fold, evaluated = _fold_eval(splits, user)
            assert len(fold) == len(evaluated) == 5 and set(fold + evaluated) == set(range(10))
            first_halves.add(tuple(sorted(fold)))
    assert len(first_halves) > 1  # not always the same (earliest) five


def test_cold_start_counted_and_dropped() -> None:
    # train (t < 10): u0-i0, u0-i1, u1-i0; valid: u0-i2 (cold item), u2-i0 (cold user);
    # test (t >= 20): u1-i1, u2-i2 (cold user and item)
    rows = [
        (0, 0, 3.0, 1),
        (0, 1, 3.0, 2),
        (1, 0, 3.0, 3),
        (0, 2, 3.0, 11),
        (2, 0, 3.0, 12),
        (1, 1, 3.0, 21),
        (2, 2, 3.0, 22),
    ]
    cuts = (datetime.fromtimestamp(10, UTC), datetime.fromtimestamp(20, UTC))
    kept = split_ratings(encoded_table(rows), SplitConfig("global_temporal", cut_times=cuts))
    report = kept.report
    assert report.cold_start_users == {"valid_fold_in": 0, "valid": 1, "test_fold_in": 0, "test": 1}
    assert report.cold_start_items == {"valid_fold_in": 0, "valid": 1, "test_fold_in": 0, "test": 1}
    assert report.cold_start_rows == {"valid_fold_in": 0, "valid": 2, "test_fold_in": 0, "test": 1}
    assert kept.dropped.num_rows == 0 and kept.valid.num_rows == 2
    dropped = split_ratings(
        encoded_table(rows), SplitConfig("global_temporal", cut_times=cuts, drop_cold_start=True)
    )
    assert dropped.valid.num_rows == 0 and items(dropped.test) == [1]
    assert sorted(
        zip(column(dropped.dropped, "user_idx"), items(dropped.dropped), strict=True)
    ) == [(0, 2), (2, 0), (2, 2)]
    assert dropped.report.rows["dropped"] == 3


def test_strong_generalization_drops_only_cold_items() -> None:
    rows = [(0, 0, 3.0, 1), (0, 1, 3.0, 2), (1, 0, 3.0, 3), (1, 2, 3.0, 4)]
    config = SplitConfig(
        "strong_generalization", n_valid_users=1, n_test_users=0, drop_cold_start=True, seed=0
    )
    splits = split_ratings(encoded_table(rows), config)
    held = column(splits.valid_fold_in, "user_idx")[0]
    train_items = set(items(splits.train))
    # the held-out user's first row is item 0 (also in train), its second is cold (1 or 2)
    assert items(splits.valid_fold_in) == [0] and items(splits.valid) == []
    assert items(splits.dropped) == [1 if held == 0 else 2] and train_items == {0, 2 - held}


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"method": "kfold"}, "method"),
        ({"ratios": (0.8, 0.1)}, "ratios"),
        ({"ratios": (0.8, 0.3, 0.1)}, "ratios"),
        ({"leave_last_k": 0}, "leave_last_k"),
        ({"fold_in_fraction": 1.0}, "fold_in_fraction"),
        ({"fold_in_by": "size"}, "fold_in_by"),
        (
            {"cut_times": (datetime(2020, 1, 2, tzinfo=UTC), datetime(2020, 1, 1, tzinfo=UTC))},
            "cut_times",
        ),
    ],
)
def test_bad_config_raises(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        SplitConfig(**kwargs)


def test_too_many_held_out_users_raises() -> None:
    rows = [(u, 0, 3.0, u) for u in range(3)]
    config = SplitConfig("strong_generalization", n_valid_users=2, n_test_users=1)
    with pytest.raises(ValueError, match="2 valid \\+ 1 test users of 3"):
        split_ratings(encoded_table(rows), config)


def test_tables_schema() -> None:
    splits = split_ratings(encoded_table([(0, 0, 3.0, 1), (0, 1, 3.0, 2)]), SplitConfig())
    for table in (*splits.tables().values(), splits.dropped):
        assert table.schema == schema.ENCODED_RATINGS_SCHEMA


def test_segment_codes_labels_consecutive_parts() -> None:
    parts = np.array([[2, 1, 0], [0, 0, 0], [1, 0, 2]])  # group 1 is empty
    labels = segment_codes(parts, np.array([7, 8, 9], np.int8))
    assert labels.tolist() == [7, 7, 8, 7, 9, 9]


def test_chronological_order_is_stable_on_both_paths() -> None:
    user = np.array([1, 0, 1, 0, 1, 0], np.int32)
    ts = np.array([5, 9, 5, 1, 2, 9], np.int64)
    expected = [3, 1, 5, 4, 0, 2]  # user 0: t=1, 9, 9 (rows 1 before 5); user 1: t=2, 5, 5
    assert chronological_order(user, ts).tolist() == expected
    # a timestamp span too wide to pack with the user index takes the np.lexsort path
    wide = ts * 2**59
    assert chronological_order(user, wide).tolist() == expected
