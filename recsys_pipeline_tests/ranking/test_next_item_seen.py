"""Next-item protocol: every item the user saw before the target is excluded from the ranking,
not only the last ``max_len`` input tokens (the issue: "already-seen items excluded")."""

from __future__ import annotations

import numpy as np
import torch

from recsys_pipeline.data.sessions import SessionConfig, build_sessions, seen_tokens
from recsys_pipeline.data.split import Splits
from recsys_pipeline.training.ranking_experiment import run_next_item
from recsys_pipeline_tests.prepare.frames import encoded_table, take_rows

# user 0: train items 0 (t=1), 1 (t=2), 5 (t=50, after the valid target), valid 2 (t=10),
# test 3 (t=60); user 1: train 2, 3, 4 (t=1..3), valid 1 (t=5), test 0 (t=6)
ROWS = [
    (0, 0, 4.0, 1), (0, 1, 4.0, 2), (0, 5, 4.0, 50), (0, 2, 4.0, 10), (0, 3, 4.0, 60),
    (1, 2, 4.0, 1), (1, 3, 4.0, 2), (1, 4, 4.0, 3), (1, 1, 4.0, 5), (1, 0, 4.0, 6),
]  # fmt: skip
TABLE = encoded_table(ROWS)
EMPTY = take_rows(TABLE, [])
SPLITS = Splits(
    train=take_rows(TABLE, [0, 1, 2, 5, 6, 7]),
    valid_fold_in=EMPTY,
    valid=take_rows(TABLE, [3, 8]),
    test_fold_in=EMPTY,
    test=take_rows(TABLE, [4, 9]),
    dropped=EMPTY,
)


def _sets(indptr: np.ndarray, tokens: np.ndarray) -> list[set[int]]:
    return [set(tokens[a:b].tolist()) for a, b in zip(indptr[:-1], indptr[1:], strict=True)]


def test_seen_tokens_hold_the_whole_history_before_the_target() -> None:
    s = build_sessions(SPLITS, 2, 6, SessionConfig(max_len=1))  # inputs: the last item only
    assert s.vocab.tolist() == [0, 1, 2, 3, 4, 5]  # token = item_idx + 1
    assert s.valid.tokens.tolist() == [[2], [5]] and s.test.tokens.tolist() == [[6], [2]]
    valid = _sets(*seen_tokens(SPLITS, s.valid, s.vocab, "valid"))
    test = _sets(*seen_tokens(SPLITS, s.test, s.vocab, "test"))
    # valid, user 0: items 0 and 1; item 5 comes after the target, so it is not "seen" then
    assert valid == [{1, 2}, {3, 4, 5}]
    # test: every train and valid item before the target, beyond the one-item input
    assert test == [{1, 2, 6, 3}, {3, 4, 5, 2}]


class TokenRanker(torch.nn.Module):
    """Scores token 1 (item 0) highest, then 2, 3, ... (a seen item on top)."""

    def __init__(self, n_vocab: int) -> None:
        super().__init__()
        self.n_vocab = n_vocab
        self.register_buffer("w", torch.zeros(1))

    def score_next(self, tokens: torch.Tensor) -> torch.Tensor:
        scores = -torch.arange(self.n_vocab + 1, dtype=torch.float32)
        scores[0] = -1e9
        return scores.repeat(tokens.shape[0], 1)


def test_items_seen_before_the_input_window_are_not_recommended() -> None:
    rows = [
        (0, 0, 4.0, 1),
        (0, 1, 4.0, 2),
        (0, 2, 4.0, 3),
        (0, 3, 4.0, 4),
        (0, 4, 4.0, 5),
        (1, 4, 4.0, 1),
        (1, 3, 4.0, 2),
        (1, 0, 4.0, 3),
        (1, 2, 4.0, 4),
    ]
    table = encoded_table(rows)
    empty = take_rows(table, [])
    # user 0: train 0, 1, 2; valid 3; test 4. user 1: train 4, 3; valid 0; test 2
    splits = Splits(
        train=take_rows(table, [0, 1, 2, 5, 6]),
        valid_fold_in=empty,
        valid=take_rows(table, [3, 7]),
        test_fold_in=empty,
        test=take_rows(table, [4, 8]),
        dropped=empty,
    )
    s = build_sessions(splits, 2, 5, SessionConfig(max_len=2))
    model = TokenRanker(int(s.vocab.size))
    seen = {n: seen_tokens(splits, getattr(s, n), s.vocab, n) for n in ("valid", "test")}
    window_only = run_next_item(model, s, None, ks=(1, 2))
    whole = run_next_item(model, s, None, ks=(1, 2), seen=seen)
    # test, user 0: seen 0, 1, 2, 3 (input: 2, 3) -> the ranking is [4] with the history
    # excluded; with the window only, item 0 (seen long ago) takes the first place
    # test, user 1: seen 4, 3, 0 (input: 3, 0) -> [1, 2, ...] vs [1, 2, ...] with item 3 out
    assert whole.test["hr@1"] == 0.5 and window_only.test["hr@1"] == 0.0
    assert whole.test["hr@2"] == 1.0 and window_only.test["hr@2"] == 0.5
