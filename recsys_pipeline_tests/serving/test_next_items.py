"""Next-item lists for sessions in original ids (``serving.next_items``)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from recsys_pipeline.models.cooccurrence import CooccurrenceModel
from recsys_pipeline.models.gru4rec import GRU4RecConfig, GRU4RecModel
from recsys_pipeline.serving.next_items import next_items

IDS = np.array([10, 20, 30, 40, 50, 60])  # token t is IDS[t - 1]


@pytest.fixture(scope="module")
def cycle() -> CooccurrenceModel:
    """Co-occurrence counts of the cycle 10 → 20 → … → 60 → 10 (tokens 1..6)."""
    rows = np.array([[(s + j) % 6 + 1 for j in range(8)] for s in range(6)])
    return CooccurrenceModel.fit(rows, 6)


def _lists(model, sessions, items, k, times=None, width=4, n_sessions=None, **kw):
    n = int(max(sessions)) + 1 if n_sessions is None else n_sessions
    return next_items(model, IDS, width, np.asarray(sessions), n, np.asarray(items), k,
                      None if times is None else np.asarray(times), **kw)


def test_the_planted_cycle_ranks_the_successor_first(cycle) -> None:
    out = _lists(cycle, [0, 0, 1], [10, 20, 50], k=2)
    assert out.session.tolist() == [0, 0, 1, 1] and out.rank.tolist() == [1, 2, 1, 2]
    assert out.item_id[out.rank == 1].tolist() == [30, 60]
    assert not set(out.item_id[out.session == 0]) & {10, 20}  # the session's own items
    assert out.score.dtype == np.float32 and (np.diff(out.score[:2]) <= 0).all()


def test_times_order_a_session_and_rows_keep_their_order_without_them(cycle) -> None:
    # rows 30 then 10: in row order the last item is 10 (next 20); by time it is 30 (next 40)
    by_rows = _lists(cycle, [0, 0], [30, 10], k=1)
    by_time = _lists(cycle, [0, 0], [30, 10], k=1, times=[5, 1])
    assert by_rows.item_id.tolist() == [20] and by_time.item_id.tolist() == [40]
    # equal times keep row order
    assert _lists(cycle, [0, 0], [30, 10], k=1, times=[3, 3]).item_id.tolist() == [20]


def test_unknown_items_are_dropped_and_counted(cycle) -> None:
    out = _lists(cycle, [0, 0, 1, 2], [10, 999, 777, 40], k=1)
    assert out.n_unknown_rows == 2
    assert out.empty_sessions.tolist() == [1]  # only an unknown item: nothing to go on
    assert out.session.tolist() == [0, 2] and out.item_id.tolist() == [20, 50]


def test_every_session_item_is_masked_not_only_the_input_window(cycle) -> None:
    # width 1: the model sees 10 only, yet none of the six items comes back
    out = _lists(cycle, [0] * 6, [20, 30, 40, 50, 60, 10], k=6, width=1)
    assert len(out.session) == 0 and len(out.empty_sessions) == 0
    short = _lists(cycle, [0] * 4, [20, 30, 40, 10], k=6, width=1)
    assert sorted(short.item_id.tolist()) == [50, 60]  # fewer than k left to rank


def test_lists_equal_the_models_own_scores_over_the_last_width_items() -> None:
    torch.manual_seed(0)
    model = GRU4RecModel(6, GRU4RecConfig(embedding_dim=8, hidden=8)).eval()
    rng = np.random.default_rng(3)
    lengths = rng.integers(1, 7, size=9)
    sessions = np.repeat(np.arange(9), lengths)
    items = IDS[rng.integers(0, 6, size=len(sessions))]
    width = 3
    out = _lists(model, sessions, items, k=6, width=width, batch_size=4)
    for s in range(9):
        seq = items[sessions == s]
        tokens = np.searchsorted(IDS, seq[-width:]) + 1
        row = np.zeros((1, width), np.int64)
        row[0, width - len(tokens):] = tokens
        scores = model.score_next(torch.from_numpy(row))[0, 1:].numpy()
        scores[np.searchsorted(IDS, seq)] = -np.inf
        keep = np.isfinite(scores)
        order = np.argsort(-scores[keep], kind="stable")
        mine = out.session == s
        np.testing.assert_allclose(out.score[mine], scores[keep][order], rtol=1e-6)
        assert set(out.item_id[mine]) == set(IDS[keep])
        assert out.rank[mine].tolist() == list(range(1, keep.sum() + 1))


def test_bad_arguments_are_named(cycle) -> None:
    with pytest.raises(ValueError, match="token item ids"):
        next_items(cycle, IDS[:5], 4, np.zeros(1, np.int64), 1, np.array([10]), 1)
    with pytest.raises(ValueError, match="session codes"):
        next_items(cycle, IDS, 4, np.array([2]), 1, np.array([10]), 1)
    with pytest.raises(ValueError, match="k=0"):
        next_items(cycle, IDS, 4, np.zeros(1, np.int64), 1, np.array([10]), 0)
