"""Property-based tests: every split method's invariants on generated ratings."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from recsys_pipeline import schema
from recsys_pipeline.data.order import round_half_up, timestamps
from recsys_pipeline.data.split import SplitConfig, split_ratings
from recsys_pipeline.data.validate_splits import validate_splits
from recsys_pipeline_tests.prepare.frames import encoded_table, rating_rows_strategy

SETTINGS = settings(max_examples=50, deadline=None)
ROWS = rating_rows_strategy()
SEEDS = st.integers(0, 2**31 - 1)


def users_of(*tables) -> set[int]:
    return {u for t in tables for u in t.column(schema.USER_IDX).to_pylist()}


def items_of(*tables) -> set[int]:
    return {i for t in tables for i in t.column(schema.ITEM_IDX).to_pylist()}


def check_common(encoded, config: SplitConfig):
    splits = split_ratings(encoded, config)
    assert validate_splits(encoded, splits, config) == []
    assert split_ratings(encoded, config) == splits  # deterministic given the seed
    if config.drop_cold_start:
        evaluated = [t for name, t in splits.tables().items() if name != schema.TRAIN]
        assert items_of(*evaluated) <= items_of(splits.train)
        if config.method != "strong_generalization":
            assert users_of(*evaluated) <= users_of(splits.train)
    else:
        assert splits.dropped.num_rows == 0
    return splits


@SETTINGS
@given(rows=ROWS, seed=SEEDS, drop=st.booleans())
def test_random(rows, seed: int, drop: bool) -> None:
    encoded = encoded_table(rows)
    splits = check_common(encoded, SplitConfig("random", seed=seed, drop_cold_start=drop))
    end_train, end_valid = round_half_up(len(rows) * 0.8), round_half_up(len(rows) * 0.9)
    assert splits.train.num_rows == end_train
    assert splits.report.rows["valid"] + splits.report.rows["test"] + splits.dropped.num_rows == (
        len(rows) - end_train
    )
    if not drop:
        assert splits.valid.num_rows == end_valid - end_train


@SETTINGS
@given(
    rows=ROWS,
    drop=st.booleans(),
    ratios=st.sampled_from([(0.8, 0.1, 0.1), (0.5, 0.25, 0.25), (0.6, 0.0, 0.4)]),
)
def test_global_temporal(rows, drop: bool, ratios) -> None:
    encoded = encoded_table(rows)
    splits = check_common(
        encoded, SplitConfig("global_temporal", ratios=ratios, drop_cold_start=drop)
    )
    later = [t for t in (splits.valid, splits.test, splits.dropped) if t.num_rows]
    if splits.train.num_rows and later:
        assert timestamps(splits.train).max() < min(timestamps(t).min() for t in later)


@SETTINGS
@given(rows=ROWS, k=st.one_of(st.none(), st.integers(1, 3)), drop=st.booleans())
def test_user_temporal(rows, k: int | None, drop: bool) -> None:
    encoded = encoded_table(rows)
    splits = check_common(
        encoded, SplitConfig("user_temporal", leave_last_k=k, drop_cold_start=drop)
    )
    assert users_of(splits.train) == users_of(encoded)  # every user keeps a train row
    if k is not None and not drop:
        per_user = np.bincount(encoded.column(schema.USER_IDX).to_numpy())
        expected_test = np.minimum(k, per_user - 1).sum()
        assert splits.test.num_rows == expected_test


@SETTINGS
@given(
    rows=ROWS,
    data=st.data(),
    seed=SEEDS,
    drop=st.booleans(),
    by=st.sampled_from(["time", "random"]),
    fraction=st.sampled_from([0.2, 0.5, 0.8]),
)
def test_strong_generalization(rows, data, seed: int, drop: bool, by: str, fraction: float) -> None:
    encoded = encoded_table(rows)
    n_users = len(users_of(encoded))
    n_valid = data.draw(st.integers(0, n_users - 1))
    n_test = data.draw(st.integers(0, n_users - 1 - n_valid))
    config = SplitConfig(
        "strong_generalization",
        seed=seed,
        n_valid_users=n_valid,
        n_test_users=n_test,
        drop_cold_start=drop,
        fold_in_by=by,
        fold_in_fraction=fraction,
    )
    splits = check_common(encoded, config)
    valid_users = users_of(splits.valid_fold_in, splits.valid)
    test_users = users_of(splits.test_fold_in, splits.test)
    assert not (valid_users | test_users) & users_of(splits.train)
    if not drop:
        assert (len(valid_users), len(test_users)) == (n_valid, n_test)
        # every held-out user folds in >= 1 row and, with >= 2 rows, is evaluated on >= 1
        per_user = np.bincount(encoded.column(schema.USER_IDX).to_numpy())
        for fold, evaluated, held in (
            (splits.valid_fold_in, splits.valid, valid_users),
            (splits.test_fold_in, splits.test, test_users),
        ):
            assert users_of(fold) == held
            assert users_of(evaluated) == {u for u in held if per_user[u] >= 2}
