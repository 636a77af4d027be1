"""Split validators: silent on good splits, and firing on deliberately leaky or broken ones."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime

import pyarrow as pa
import pytest

from recsys_pipeline import schema
from recsys_pipeline.data.split import SplitConfig, Splits, split_ratings
from recsys_pipeline.data.validate_splits import (
    check_complete,
    check_disjoint,
    check_global_temporal,
    check_held_out_users,
    check_user_temporal,
    validate_splits,
)
from recsys_pipeline_tests.prepare.frames import encoded_table, take_rows

# users 0..2; user u rates item i at time 10 * i + u
ROWS = [(u, i, 1.0 + i % 5, 10 * i + u) for u in range(3) for i in range(6)]
ENCODED = encoded_table(ROWS)  # row 6 * u + i is (u, i)
EMPTY = schema.ENCODED_RATINGS_SCHEMA.empty_table()


def make(train=(), valid=(), test=(), valid_fold_in=(), test_fold_in=(), dropped=()) -> Splits:
    """Splits from row positions of ENCODED (any overlap or gap is deliberate)."""

    def rows(r):
        return take_rows(ENCODED, list(r)) if len(r) else EMPTY

    return Splits(
        rows(train), rows(valid_fold_in), rows(valid), rows(test_fold_in), rows(test), rows(dropped)
    )


def per_user(first: int, last: int) -> list[int]:
    """Rows with item first..last of every user."""
    return [6 * u + i for u in range(3) for i in range(first, last + 1)]


GOOD = make(train=per_user(0, 3), valid=per_user(4, 4), test=per_user(5, 5))


@pytest.mark.parametrize(
    "config",
    [SplitConfig(m) for m in ("random", "global_temporal", "user_temporal")]
    + [SplitConfig("strong_generalization", n_valid_users=1, n_test_users=1)],
)
def test_real_splits_pass(config: SplitConfig) -> None:
    assert validate_splits(ENCODED, split_ratings(ENCODED, config), config) == []


def test_hand_built_good_split_passes_every_check() -> None:
    assert check_disjoint(GOOD) == [] and check_complete(ENCODED, GOOD) == []
    assert check_user_temporal(GOOD) == [] and check_global_temporal(GOOD) == []


def test_overlap_is_caught() -> None:
    leaky = make(train=per_user(0, 3), valid=per_user(4, 4), test=per_user(5, 5) + [0])
    (problem,) = check_disjoint(leaky)
    assert (
        "1 (user_idx, item_idx) pair" in problem
        and "(user_idx=0, item_idx=0) in train+test" in problem
    )
    assert check_complete(ENCODED, leaky)  # 19 rows for an 18-row input


def test_missing_and_changed_rows_are_caught() -> None:
    missing = make(train=per_user(0, 3), valid=per_user(4, 4), test=per_user(5, 5)[1:])
    (problem,) = check_complete(ENCODED, missing)
    assert "splits hold 17" in problem and "(user_idx=0, item_idx=5)" in problem
    ratings = GOOD.test.column(schema.RATING).to_pylist()
    changed = dataclasses.replace(
        GOOD,
        test=GOOD.test.set_column(
            4, schema.RATING, pa.array([ratings[0] + 0.5, *ratings[1:]], pa.float32())
        ),
    )
    assert check_complete(ENCODED, changed) == [
        "complete: same pairs as the input but a rating or timestamp differs"
    ]
    moved = GOOD.test.column(schema.TIMESTAMP).cast(pa.int64()).to_pylist()
    shifted = dataclasses.replace(
        GOOD,
        test=GOOD.test.set_column(
            5, schema.TIMESTAMP, pa.array([moved[0] + 1, *moved[1:]]).cast(schema.TIMESTAMP_TYPE)
        ),
    )
    assert len(check_complete(ENCODED, shifted)) == 1


def test_dropped_rows_count_towards_completeness() -> None:
    splits = make(train=per_user(0, 3), valid=per_user(4, 4), test=per_user(5, 5)[1:], dropped=[5])
    assert check_complete(ENCODED, splits) == [] and check_disjoint(splits) == []


def test_user_temporal_leak_is_caught() -> None:
    # user 1's item 0 (t=1) is in valid although user 1 trained on items 1..3 (t up to 31)
    leaky = make(
        train=[r for r in per_user(0, 3) if r != 6], valid=per_user(4, 4) + [6], test=per_user(5, 5)
    )
    (problem,) = check_user_temporal(leaky)
    assert "1 user(s) have valid rows" in problem and "user_idx=1: 1 < 31" in problem
    assert check_complete(ENCODED, leaky) == []  # a leak, not a lost row


def test_test_before_valid_is_a_leak() -> None:
    leaky = make(train=per_user(0, 3), valid=per_user(5, 5), test=per_user(4, 4))
    (problem,) = check_user_temporal(leaky)
    assert "3 user(s) have test rows" in problem


def test_global_leak_and_cut_violations_are_caught() -> None:
    # per user in order, but user 2 trains on item 4 (t=42) while users 0 and 1 are
    # validated on item 4 at t=40 and t=41: only the global order is broken
    leaky = make(train=per_user(0, 3) + [6 * 2 + 4], valid=[4, 6 + 4], test=per_user(5, 5))
    assert check_user_temporal(leaky) == []
    problems = check_global_temporal(leaky)
    assert problems == [
        "global temporal leakage: 2 valid row(s) earlier than the latest train row (42 epoch s)"
    ]
    cut = check_global_temporal(
        GOOD, datetime.fromtimestamp(41, UTC), datetime.fromtimestamp(50, UTC)
    )
    assert cut == ["global temporal leakage: 1 valid row(s) outside [41, 50) epoch s, e.g. [40]"]


def test_held_out_user_in_train_is_caught() -> None:
    leaky = make(train=per_user(0, 5)[:12] + [12], valid_fold_in=[13, 14, 15, 16], valid=[17])
    (problem,) = check_held_out_users(leaky)
    assert problem == "held-out users: 1 valid users in train, e.g. user_idx [2]"
    config = SplitConfig("strong_generalization", n_valid_users=1, n_test_users=0)
    assert problem in validate_splits(ENCODED, leaky, config)


def test_user_in_both_valid_and_test_is_caught() -> None:
    # user 1 is split between valid (items 0..2) and test (items 3..5)
    leaky = make(train=range(6), valid=range(6, 9), test=range(9, 18))
    assert check_held_out_users(leaky) == [
        "held-out users: 1 users in both valid and test, e.g. user_idx [1]"
    ]


def test_strong_fold_in_after_evaluation_is_a_leak_only_when_by_time() -> None:
    # user 2 folds in item 5 (latest) and is evaluated on item 0 (earliest)
    splits = make(train=list(range(12)), valid_fold_in=[13, 14, 15, 16, 17], valid=[12])
    by_time = SplitConfig("strong_generalization", n_valid_users=1, n_test_users=0)
    assert any("valid rows earlier" in p for p in validate_splits(ENCODED, splits, by_time))
    by_random = dataclasses.replace(by_time, fold_in_by="random")
    assert validate_splits(ENCODED, splits, by_random) == []


def test_validate_dispatches_by_method() -> None:
    # a random-looking split with temporal leakage: random config accepts it, temporal ones do not
    leaky = make(train=per_user(2, 5), valid=per_user(0, 0), test=per_user(1, 1))
    assert validate_splits(ENCODED, leaky, SplitConfig("random")) == []
    assert validate_splits(ENCODED, leaky, SplitConfig("user_temporal"))
    assert any(
        "global" in p for p in validate_splits(ENCODED, leaky, SplitConfig("global_temporal"))
    )
