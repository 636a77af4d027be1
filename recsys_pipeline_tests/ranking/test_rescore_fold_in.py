"""Re-scoring a fold-in champion on a challenger's validation users (``rescore_fold_in``):
users the champion trained on are left out, only items both models know are ranked, and each
model folds in the items it knows."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from recsys_pipeline.evaluation.rescore import OnlyColumns, rescore_fold_in
from recsys_pipeline.evaluation.strong import evaluate_fold_in
from recsys_pipeline.models.ease import EASEConfig, EASEModel
from recsys_pipeline_tests.ranking.planted import N_ITEMS, N_USERS, make_blocks

USER_IDS = np.arange(N_USERS) + 1000  # the champion's training users
ITEM_IDS = np.arange(N_ITEMS) * 3 + 7
NEW_IDS = np.arange(6) + 5000  # held-out users make_blocks(2) builds: 2 per group


@pytest.fixture(scope="module")
def champion() -> EASEModel:
    return EASEModel.fit(make_blocks().train, EASEConfig(l2=1.0), device="cpu")


def _validation(with_trained: tuple[int, ...]) -> tuple[sp.csr_matrix, sp.csr_matrix, np.ndarray]:
    """The new users' rows, plus rows of champion training users (their train row folded in,
    their missing item held out)."""
    blocks = make_blocks()
    rows = list(with_trained)
    held = sp.csr_matrix((np.ones(len(rows), np.float32),
                          (np.arange(len(rows)), blocks.missing[rows])), shape=(len(rows), N_ITEMS))
    fold_in = sp.vstack([blocks.fold_in, blocks.train[rows]]).tocsr()
    heldout = sp.vstack([blocks.heldout, held]).tocsr()
    return fold_in, heldout, np.concatenate([NEW_IDS, USER_IDS[rows]])


def test_users_the_champion_trained_on_are_left_out(champion: EASEModel) -> None:
    fold_in, heldout, user_ids = _validation((0, 10, 30))
    challenger = EASEModel.fit(make_blocks().train, EASEConfig(l2=50.0), device="cpu")
    champ, chal, rows, total = rescore_fold_in(champion, USER_IDS, ITEM_IDS, challenger,
                                               user_ids, ITEM_IDS, fold_in, heldout, "ndcg@10")
    assert (rows, total) == (6, 9)
    blocks = make_blocks()
    for model, value in ((champion, champ), (challenger, chal)):
        direct = evaluate_fold_in(model, blocks.fold_in, blocks.heldout, ks=(10,))["ndcg@10"]
        assert value == pytest.approx(direct)
    assert champ == pytest.approx(1.0)  # planted: the missing block item ranks first


def test_only_shared_items_ranked_in_either_order(champion: EASEModel) -> None:
    """A challenger over the same items in reverse column order plus an item the champion
    never saw scores (EASE is permutation-equivariant) exactly like the champion; the
    extra item must not enter the champion's ranking."""
    blocks = make_blocks()
    order = np.arange(N_ITEMS)[::-1]
    extra = sp.csr_matrix((N_USERS, 1), dtype=np.float32)
    train = sp.hstack([blocks.train[:, order], extra]).tocsr()
    challenger = EASEModel.fit(train, EASEConfig(l2=1.0), device="cpu")
    # the new users also liked the extra item: the challenger folds it in (no one in its
    # training data liked it, so it moves no score), the champion cannot; a seventh user who
    # liked only the extra item has nothing the champion could fold in and is not compared
    new_col = sp.csr_matrix(np.ones((7, 1), np.float32))
    only_extra = sp.csr_matrix((1, N_ITEMS), dtype=np.float32)
    fold_in = sp.hstack([sp.vstack([blocks.fold_in, only_extra])[:, order], new_col]).tocsr()
    heldout = sp.hstack([sp.vstack([blocks.heldout, blocks.heldout[:1]])[:, order],
                         sp.csr_matrix((7, 1))]).tocsr()
    item_ids = np.concatenate([ITEM_IDS[order], [99_999]])
    champ, chal, rows, total = rescore_fold_in(champion, USER_IDS, ITEM_IDS, challenger,
                                               np.r_[NEW_IDS, 6000], item_ids, fold_in,
                                               heldout, "recall@5")
    assert (rows, total) == (6, 7)
    assert champ == pytest.approx(chal)
    direct = evaluate_fold_in(champion, blocks.fold_in, blocks.heldout, ks=(5,))["recall@5"]
    assert champ == pytest.approx(direct)


def test_the_challenger_folds_in_items_the_champion_lacks() -> None:
    """``OnlyColumns`` scores from whole rows and ranks only the given columns."""
    class _Sum(torch.nn.Module):  # item j scores the row's total times (j + 1)
        def __init__(self) -> None:
            super().__init__()
            self.register_buffer("w", torch.arange(1.0, 5.0))

        def score_all_from(self, x: torch.Tensor) -> torch.Tensor:
            return x.sum(1, keepdim=True) * self.w

    view = OnlyColumns(_Sum(), np.array([0, 2]), 4)
    scores = view.score_all_from(torch.tensor([[0.0, 0.0, 0.0, 1.0]]))  # only column 3 set
    assert scores[0, [0, 2]].tolist() == pytest.approx([1.0, 3.0])  # read from column 3
    assert torch.isinf(scores[0, [1, 3]]).all()


def test_nothing_to_compare_raises(champion: EASEModel) -> None:
    fold_in, heldout, user_ids = _validation((0, 10))
    only_trained = sp.diags(np.r_[np.zeros(6), np.ones(2)].astype(np.float32))
    with pytest.raises(ValueError, match="no validation user of the challenger is new"):
        rescore_fold_in(champion, USER_IDS, ITEM_IDS, champion, user_ids, ITEM_IDS,
                        (only_trained @ fold_in).tocsr(), (only_trained @ heldout).tocsr(),
                        "ndcg@10")
    with pytest.raises(ValueError, match="only ndcg@K and recall@K"):
        rescore_fold_in(champion, USER_IDS, ITEM_IDS, champion, user_ids, ITEM_IDS,
                        fold_in, heldout, "rmse")
    with pytest.raises(ValueError, match="share 0 items"):
        rescore_fold_in(champion, USER_IDS, ITEM_IDS, champion, user_ids, ITEM_IDS + 1,
                        fold_in, heldout, "ndcg@10")
