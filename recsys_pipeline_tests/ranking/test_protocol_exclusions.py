"""What each ranking protocol treats as known at test time: train items always; for the
per-user split's test ratings the valid items as well (as ``training.experiment`` does for the
rating models), since the user has rated them by then and they cannot be test hits."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch

from recsys_pipeline.data.sparse import SplitMatrices
from recsys_pipeline.training.ranking_experiment import per_user_pair, run_topk

N_USERS, N_ITEMS = 3, 6


class FixedRanker(torch.nn.Module):
    """Every user gets the same item scores: item 0 best, then 1, 2, ..."""

    n_users, n_items = N_USERS, N_ITEMS

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("item_scores", -torch.arange(N_ITEMS, dtype=torch.float32))

    def score_all(self, users: torch.Tensor) -> torch.Tensor:
        return self.item_scores.repeat(users.numel(), 1)

    def score_all_from(self, x: torch.Tensor) -> torch.Tensor:
        return self.item_scores.repeat(x.shape[0], 1)


def _split() -> SplitMatrices:
    """Each user: train item 5 (rating 5), valid item 0 (rated 4.5), test item 1 (rated 5)."""
    def ratings(item: int, value: float) -> sp.csr_matrix:
        return sp.csr_matrix((np.full(N_USERS, value, np.float32),
                              (np.arange(N_USERS), np.full(N_USERS, item))),
                             shape=(N_USERS, N_ITEMS))

    explicit = {"train": ratings(5, 5.0), "valid": ratings(0, 4.5), "test": ratings(1, 5.0)}
    return SplitMatrices(explicit, {k: (v > 0).astype(np.float32) for k, v in explicit.items()})


def test_topk_test_ranking_leaves_the_valid_items_out() -> None:
    outcome = run_topk(FixedRanker(), _split(), None, ks=(1, 2))
    assert outcome.valid["hit_rate@1"] == 1.0  # the valid item 0 is the best-scored item
    # for test, item 0 is known (rated in valid): the test item 1 comes first
    assert outcome.test["hit_rate@1"] == 1.0 and outcome.test["ndcg@1"] == 1.0


def test_per_user_pair_marks_train_and_valid_items_known() -> None:
    split = _split()
    split.explicit["train"] = split.explicit["train"] + sp.csr_matrix(
        ([2.0], ([0], [3])), shape=(N_USERS, N_ITEMS))  # a disliked train item
    fold_in, heldout, known = per_user_pair(np.arange(N_ITEMS), split, np.array([0, 2]), 4.0)
    assert fold_in.toarray()[0].tolist() == [0, 0, 0, 0, 0, 1]  # the positives only
    assert heldout.toarray()[:, 1].tolist() == [1, 0, 1]  # user 1 not asked for
    assert sorted(known[0].indices.tolist()) == [0, 3, 5]  # valid, disliked and liked train
    assert known[1].nnz == 0
