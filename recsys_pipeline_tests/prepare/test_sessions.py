"""build_sessions: hand-worked sequences, padding, vocabulary, next-item targets, round trips."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from recsys_pipeline import schema
from recsys_pipeline.data.sessions import (
    SessionConfig,
    build_sessions,
    sequences_to_pairs,
    tokens_to_items,
)
from recsys_pipeline.data.split import SplitConfig, Splits, split_ratings
from recsys_pipeline_tests.prepare.frames import (
    column,
    encoded_table,
    rating_rows_strategy,
    take_rows,
)

# leave-last-1 per user (chronological, ties by row order):
#   u0: train 0,1,2  valid 3  test 4
#   u1: i1 and i0 tie at t=10 (i1 first) -> train 1,0  valid 2  test 4
#   u2: train 0  test 3 (two rows: no valid)
#   u3: train 3,4  valid 0  test 1
ROWS = [
    (0, 0, 4.0, 1), (0, 1, 4.0, 2), (0, 2, 4.0, 3), (0, 3, 4.0, 4), (0, 4, 4.0, 5),
    (1, 1, 3.0, 10), (1, 0, 3.0, 10), (1, 2, 3.0, 11), (1, 4, 3.0, 12),
    (2, 3, 2.0, 7), (2, 0, 2.0, 3),
    (3, 3, 5.0, 0), (3, 4, 5.0, 1), (3, 0, 5.0, 20), (3, 1, 5.0, 21),
]  # fmt: skip
SPLITS = split_ratings(encoded_table(ROWS), SplitConfig("user_temporal", leave_last_k=1))


def seqs(batch) -> list[list[int]]:
    return batch.table.column(schema.ITEM_IDX_SEQ).to_pylist()


def test_train_sequences_truncated_left_padded() -> None:
    s = build_sessions(SPLITS, 4, 5, SessionConfig(max_len=2))
    assert s.vocab.tolist() == [0, 1, 2, 3, 4]  # token = item_idx + 1 here
    assert column(s.train.table, "user_idx") == [0, 1, 2, 3]
    assert seqs(s.train) == [[1, 2], [1, 0], [0], [3, 4]]
    assert s.train.tokens.tolist() == [[2, 3], [2, 1], [0, 1], [4, 5]]
    assert s.train.lengths.tolist() == [2, 2, 1, 2] and s.train.targets is None
    assert s.train.tokens.dtype == np.int32 and s.train.table.schema == schema.SEQUENCES_SCHEMA


def test_next_item_inputs_and_targets() -> None:
    s = build_sessions(SPLITS, 4, 5, SessionConfig(max_len=2))
    # valid: input = train rows; u2 has no valid row
    assert column(s.valid.table, "user_idx") == [0, 1, 3]
    assert seqs(s.valid) == [[1, 2], [1, 0], [3, 4]]
    assert column(s.valid.table, "target_item_idx") == [3, 2, 0]
    assert s.valid.targets.tolist() == [4, 3, 1]
    # test: input = train + valid rows, last 2
    assert seqs(s.test) == [[2, 3], [0, 2], [0], [4, 0]]
    assert column(s.test.table, "target_item_idx") == [4, 4, 3, 1]
    assert s.test.tokens.tolist() == [[3, 4], [1, 3], [0, 1], [5, 1]]
    assert s.test.table.schema == schema.NEXT_ITEM_SCHEMA


def test_right_padding() -> None:
    s = build_sessions(SPLITS, 4, 5, SessionConfig(max_len=3, pad_side="right"))
    assert s.train.tokens.tolist() == [[1, 2, 3], [2, 1, 0], [1, 0, 0], [4, 5, 0]]


def test_vocabulary_threshold_drops_rare_items_before_truncation() -> None:
    # train counts: i0: 3, i1: 2, i2: 1, i3: 1, i4: 1 -> vocab [0, 1], tokens 1, 2
    s = build_sessions(SPLITS, 4, 5, SessionConfig(max_len=2, min_item_count=2))
    assert s.vocab.tolist() == [0, 1]
    assert seqs(s.train) == [[0, 1], [1, 0], [0]]  # u3 has only rare items: no row
    assert s.train.tokens.tolist() == [[1, 2], [2, 1], [0, 1]]
    # valid: u0, u1 targets (3, 2) are out of vocabulary; u3's target 0 has no input left
    assert s.valid.table.num_rows == 0 and s.valid.tokens.shape == (0, 2)
    # test: only u3's target (item 1) is in vocabulary; its input keeps item 0 only
    assert seqs(s.test) == [[0]] and s.test.targets.tolist() == [2]
    assert s.report == {
        "n_vocab": 2, "train_rows_out_of_vocab": 3, "train_sequences": 3,
        "valid_users": 3, "valid_users_without_target": 2, "valid_history_rows_after_target": 0,
        "valid_users_short_history": 1,
        "test_users": 4, "test_users_without_target": 3, "test_history_rows_after_target": 0,
        "test_users_short_history": 0,
    }  # fmt: skip


def _splits(train=(), valid_fold_in=(), valid=(), test=(), rows=()) -> Splits:
    table = encoded_table(list(rows))
    empty = table.slice(0, 0)

    def pick(r):
        return take_rows(table, list(r)) if r else empty

    return Splits(pick(train), pick(valid_fold_in), pick(valid), empty, pick(test), empty)


def test_inputs_never_include_rows_after_the_target() -> None:
    # random-split-like: the valid row (t=3) predates a train row (t=5), which must not leak
    rows = [(0, 0, 4.0, 1), (0, 1, 4.0, 5), (0, 2, 4.0, 3), (1, 2, 4.0, 1)]
    s = build_sessions(_splits(train=[0, 1, 3], valid=[2], rows=rows), 2, 3, SessionConfig())
    assert seqs(s.valid) == [[0]] and column(s.valid.table, "target_item_idx") == [2]
    assert s.report["valid_history_rows_after_target"] == 1


def test_strong_generalization_input_is_the_fold_in() -> None:
    rows = [(0, 0, 4.0, 1), (0, 1, 4.0, 2), (0, 2, 4.0, 3), (1, 2, 4.0, 1), (1, 0, 4.0, 2),
            (1, 1, 4.0, 3)]  # fmt: skip
    s = build_sessions(_splits(train=[0, 1, 2], valid_fold_in=[3, 4], valid=[5], rows=rows),
                       2, 3, SessionConfig())  # fmt: skip
    assert column(s.valid.table, "user_idx") == [1]
    assert seqs(s.valid) == [[2, 0]] and s.valid.targets.tolist() == [2]


def test_min_history_zero_keeps_cold_users() -> None:
    rows = [(0, 0, 4.0, 1), (1, 0, 4.0, 2)]
    s = build_sessions(_splits(train=[0], valid=[1], rows=rows), 2, 1, SessionConfig(min_history=0))
    assert column(s.valid.table, "user_idx") == [1] and s.valid.lengths.tolist() == [0]
    assert s.valid.tokens.tolist() == [[0] * 50]


def test_out_of_range_index_raises() -> None:
    with pytest.raises(ValueError, match="item_idx outside"):
        build_sessions(SPLITS, 4, 4, SessionConfig())


@pytest.mark.parametrize("kwargs", [{"max_len": 0}, {"min_item_count": 0}, {"pad_side": "up"}])
def test_bad_config(kwargs: dict) -> None:
    with pytest.raises(ValueError, match="SessionConfig"):
        SessionConfig(**kwargs)


def _expected_sequences(table, max_len: int) -> dict[int, list[int]]:
    """Each user's items by (timestamp, row position), last ``max_len``: the slow, obvious way."""
    rows = table.to_pylist()
    ordered = sorted(range(len(rows)), key=lambda r: (rows[r]["user_idx"], rows[r]["timestamp"], r))
    per_user: dict[int, list[int]] = {}
    for r in ordered:
        per_user.setdefault(rows[r]["user_idx"], []).append(rows[r]["item_idx"])
    return {u: items[-max_len:] for u, items in per_user.items()}


@settings(max_examples=50, deadline=None)
@given(rows=rating_rows_strategy(max_rows=30), max_len=st.integers(1, 6),
       side=st.sampled_from(["left", "right"]),
       method=st.sampled_from(["user_temporal", "random", "strong_generalization"]))  # fmt: skip
def test_round_trip_to_ratings(rows, max_len: int, side: str, method: str) -> None:
    encoded = encoded_table(rows)
    splits = split_ratings(encoded, SplitConfig(method, leave_last_k=1, seed=len(rows)))
    n_users = int(encoded.column("user_idx").to_numpy().max()) + 1
    n_items = int(encoded.column("item_idx").to_numpy().max()) + 1
    s = build_sessions(splits, n_users, n_items, SessionConfig(max_len=max_len, pad_side=side))
    users, items = sequences_to_pairs(s.train.table)
    got: dict[int, list[int]] = {}
    for u, i in zip(users.tolist(), items.tolist(), strict=True):
        got.setdefault(u, []).append(i)
    assert got == _expected_sequences(splits.train, max_len)
    # the padded arrays hold the same sequences, as tokens, padded on the configured side
    for batch in (s.train, s.valid, s.test):
        assert batch.tokens.shape == (batch.table.num_rows, max_len)
        for row, seq in enumerate(seqs(batch)):
            n = len(seq)
            real = batch.tokens[row, max_len - n :] if side == "left" else batch.tokens[row, :n]
            pad = batch.tokens[row, : max_len - n] if side == "left" else batch.tokens[row, n:]
            assert tokens_to_items(real, s.vocab).tolist() == seq and not pad.any()
            assert batch.lengths[row] == n
    # targets: the user's earliest in-vocabulary row of the split; inputs never later
    ts = {(r["user_idx"], r["item_idx"]): r["timestamp"] for r in encoded.to_pylist()}
    vocab = set(s.vocab.tolist())
    for batch, table in ((s.valid, splits.valid), (s.test, splits.test)):
        for rec in batch.table.to_pylist():
            user, target = rec["user_idx"], rec["target_item_idx"]
            own = [r for r in table.to_pylist() if r["user_idx"] == user and r["item_idx"] in vocab]
            assert ts[(user, target)] == min(r["timestamp"] for r in own)
            assert all(ts[(user, i)] <= ts[(user, target)] for i in rec["item_idx_seq"])


def test_sequence_models_refuse_sessions_they_cannot_read() -> None:
    """Right padding and empty evaluation rows are valid prepared data, but the sequence
    models read the latest item from the last column: the run stops before training and
    says which setting to change."""
    from recsys_pipeline.models.cooccurrence import CooccurrenceModel
    from recsys_pipeline.training.ranking_experiment import run_next_item

    right = build_sessions(SPLITS, 4, 5, SessionConfig(pad_side="right"))
    rows = [(0, 0, 4.0, 1), (0, 1, 4.0, 2), (1, 0, 4.0, 2)]  # u1: a valid target, no history
    cold = build_sessions(_splits(train=[0, 1], valid=[2], rows=rows), 2, 2,
                          SessionConfig(min_history=0))
    for sessions, message in ((right, "right-padded.*pad_side: left"),
                              (cold, "valid: 1 rows have no input item.*min_history >= 1")):
        model = CooccurrenceModel.fit(sessions.train.tokens, int(sessions.vocab.size))
        with pytest.raises(ValueError, match=message):
            run_next_item(model, sessions, None)
    ok = build_sessions(SPLITS, 4, 5, SessionConfig())
    assert run_next_item(CooccurrenceModel.fit(ok.train.tokens, int(ok.vocab.size)), ok,
                         None).test["n_rows"] == 4  # the same data, left-padded, runs
