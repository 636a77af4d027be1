"""Re-scoring a per-user top-K champion (two-tower) on a challenger's validation ratings
(``evaluation.rescore.rescore_topk``): users and items in another order or missing."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from torch import nn

from recsys_pipeline.evaluation.rescore import PairSubset, rescore_topk
from recsys_pipeline.evaluation.topk import evaluate_topk
from recsys_pipeline.training.data import RatingData

N_USERS, N_ITEMS = 8, 12
USER_IDS = np.arange(N_USERS) * 7 + 3
ITEM_IDS = np.arange(N_ITEMS) * 5 + 100


class _Table(nn.Module):
    """Scores from a fixed user x item table."""

    def __init__(self, table: np.ndarray) -> None:
        super().__init__()
        self.n_users, self.n_items = table.shape
        self.register_buffer("table", torch.as_tensor(table, dtype=torch.float32))

    def score_all(self, users: torch.Tensor) -> torch.Tensor:
        return self.table[users].clone()


def _data() -> tuple[np.ndarray, sp.csr_matrix, sp.csr_matrix]:
    """Scores that rank each user's validation item first; train = two other items each."""
    rng = np.random.default_rng(0)
    table = rng.random((N_USERS, N_ITEMS))
    users = np.arange(N_USERS)
    target = (users * 5) % N_ITEMS
    table[users, target] = 2.0  # the best unseen item
    train_items = np.stack([(target + 1) % N_ITEMS, (target + 2) % N_ITEMS], 1)
    table[users[:, None], train_items] = 3.0  # rated in train: masked, else they would win
    train = sp.csr_matrix((np.full(2 * N_USERS, 4.0), (np.repeat(users, 2),
                                                      train_items.ravel())),
                          shape=(N_USERS, N_ITEMS))
    valid = sp.csr_matrix((np.full(N_USERS, 5.0), (users, target)), shape=(N_USERS, N_ITEMS))
    return table, train, valid


def _direct(model: nn.Module, train: sp.csr_matrix, valid: sp.csr_matrix,
            metric: str = "ndcg@3") -> float:
    return evaluate_topk(model, RatingData.from_csr(valid), RatingData.from_csr(train),
                         (int(metric[-1]),))[metric]


def test_same_scores_under_permuted_ids_rescore_identically() -> None:
    table, train, valid = _data()
    rng = np.random.default_rng(1)
    pu, pi = rng.permutation(N_USERS), rng.permutation(N_ITEMS)
    champion = _Table(table[pu][:, pi])  # row r = user USER_IDS[pu[r]], column c: ITEM_IDS[pi[c]]
    challenger = _Table(table)
    champ, chal, n, total = rescore_topk(champion, USER_IDS[pu], ITEM_IDS[pi], challenger,
                                         USER_IDS, ITEM_IDS, train, valid, "ndcg@3")
    assert (n, total) == (N_USERS, N_USERS)
    assert champ == pytest.approx(chal) == pytest.approx(_direct(challenger, train, valid))
    assert chal == pytest.approx(1.0)  # the train items are masked, not recommended


def test_unknown_users_and_items_are_left_out() -> None:
    table, train, valid = _data()
    known_users, known_items = np.arange(1, N_USERS), np.arange(N_ITEMS - 1)
    champion = _Table(table[known_users][:, known_items])
    # the challenger puts the item the champion lacks (the last) first for everybody
    favourite = table.copy()
    favourite[:, -1] = 10.0
    challenger = _Table(favourite)
    champ, chal, n, total = rescore_topk(champion, USER_IDS[known_users],
                                         ITEM_IDS[known_items], challenger, USER_IDS,
                                         ITEM_IDS, train, valid, "hit_rate@1")
    # user 0 is unknown to the champion, and user 7's validation item is the last one
    # (targets are 0, 5, 10, 3, 8, 1, 6, 11): neither is compared
    assert total == N_USERS and n == N_USERS - 2
    assert champ == pytest.approx(1.0) and chal == pytest.approx(1.0)
    # over its own catalogue item 11 comes first: hits only for user 7 (its target) and
    # user 2 (who rated 11 in train, so it is masked)
    assert _direct(challenger, train, valid, "hit_rate@1") == pytest.approx(2 / N_USERS)


def test_pair_subset_maps_users_and_items() -> None:
    table, _, _ = _data()
    view = PairSubset(_Table(table), np.array([3, 1]), np.array([5, 0, 2]))
    out = view.score_all(torch.tensor([1, 0]))
    assert (view.n_users, view.n_items) == (2, 3)
    assert out.numpy() == pytest.approx(table[[1, 3]][:, [5, 0, 2]])


def test_refuses_bad_metric_and_nothing_to_compare() -> None:
    table, train, valid = _data()
    model = _Table(table)
    with pytest.raises(ValueError, match="rmse"):
        rescore_topk(model, USER_IDS, ITEM_IDS, model, USER_IDS, ITEM_IDS, train, valid,
                     "rmse")
    with pytest.raises(ValueError, match="no validation user"):
        rescore_topk(model, USER_IDS + 1, ITEM_IDS, model, USER_IDS, ITEM_IDS, train, valid,
                     "ndcg@3")
    with pytest.raises(ValueError, match="share 0 items"):
        rescore_topk(model, USER_IDS, ITEM_IDS + 1, model, USER_IDS, ITEM_IDS, train, valid,
                     "ndcg@3")
