"""Full-catalogue top-K: masking of training items, relevance threshold, metric averages."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from recsys_pipeline.evaluation.topk import ItemSets, evaluate_topk, top_k_items
from recsys_pipeline.models.popularity import PopularityModel
from recsys_pipeline.training.data import RatingData
from recsys_pipeline_tests.models.planted import make_planted


class FixedScores(nn.Module):
    """A scorer returning a fixed [n_users, n_items] matrix."""

    def __init__(self, scores: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("scores", scores)
        self.n_users, self.n_items = scores.shape

    def score_all(self, users: torch.Tensor) -> torch.Tensor:
        return self.scores[users].clone()


SCORES = torch.tensor([
    [0.9, 0.8, 0.7, 0.6, 0.5, 0.4],
    [0.1, 0.2, 0.3, 0.4, 0.5, 0.6],
    [0.5, 0.9, 0.1, 0.8, 0.2, 0.3],
])
TRAIN = RatingData.from_arrays([0, 1, 1], [0, 5, 4], [3.0, 3.0, 3.0])  # masked items
# test: u0 rates i1 5, i4 4, i5 2 → relevant (>= 4) {1, 4}; u1 rates i2 4.5, i0 3 → {2};
# u2 rates i2 1 → nothing relevant, not evaluated (at threshold 4)
TEST = RatingData.from_arrays([0, 0, 0, 1, 1, 2], [1, 4, 5, 2, 0, 2],
                              [5.0, 4.0, 2.0, 4.5, 3.0, 1.0])


def test_metrics_by_hand_at_k2() -> None:
    # u0: i0 masked → top2 = [i1 .8, i2 .7] → hits [1, 0], 2 relevant
    # u1: i5, i4 masked → top2 = [i3 .4, i2 .3] → hits [0, 1], 1 relevant
    # precision (1/2 + 1/2)/2 = .5;  recall (1/2 + 1/1)/2 = .75
    # ndcg: u0 1 / (1 + 1/log2 3) = .61315; u1 (1/log2 3) / 1 = .63093
    # map: u0 (P@1 = 1)/min(2,2) = .5; u1 (P@2 = 1/2)/min(2,1) = .5
    # mrr (1 + 1/2)/2 = .75; hit rate 1; coverage: items {1, 2, 3} of 6 = .5
    result = evaluate_topk(FixedScores(SCORES), TEST, exclude=TRAIN, ks=(2,))
    l3 = 1 / math.log2(3)
    assert result == pytest.approx({
        "precision@2": 0.5, "recall@2": 0.75, "ndcg@2": (1 / (1 + l3) + l3) / 2,
        "map@2": 0.5, "hit_rate@2": 1.0, "mrr@2": 0.75, "coverage@2": 0.5, "n_users": 2.0,
    })


def test_threshold_none_counts_every_test_item() -> None:
    # relevant: u0 {1, 4, 5}, u1 {0, 2}, u2 {2}; top2: u0 [1, 2], u1 [3, 2], u2 [1, 3]
    # precision (1/2 + 1/2 + 0)/3 = 1/3
    result = evaluate_topk(FixedScores(SCORES), TEST, exclude=TRAIN, ks=(1, 2),
                           relevance_threshold=None)
    assert result["n_users"] == 3.0
    assert result["precision@2"] == pytest.approx(1 / 3)
    assert result["precision@1"] == pytest.approx(1 / 3)  # only u0's first item (i1) hits


def test_top_k_items_masks_and_pads_with_minus_inf() -> None:
    exclude = ItemSets.from_data(TRAIN, 3)
    scores, items = top_k_items(FixedScores(SCORES), torch.tensor([1, 0]), k=6, exclude=exclude,
                                batch_size=1)
    assert items[0, :4].tolist() == [3, 2, 1, 0] and set(items[0, 4:].tolist()) == {4, 5}
    assert torch.isinf(scores[0, 4:]).all() and items[1, 0] == 1


def test_item_sets_csr_by_hand() -> None:
    sets = ItemSets.from_pairs(torch.tensor([2, 0, 2, 0]), torch.tensor([5, 1, 3, 4]), 4)
    assert sets.indptr.tolist() == [0, 2, 2, 4, 4]
    assert sets.indices.tolist() == [1, 4, 5, 3]  # stable within each user
    row, item = sets.entries(torch.tensor([2, 1, 0]))
    assert row.tolist() == [0, 0, 2, 2] and item.tolist() == [5, 3, 1, 4]
    dense = torch.zeros(4, 6)
    dense[[2, 0, 2, 0], [5, 1, 3, 4]] = 1.0
    from_sparse = ItemSets.from_sparse(dense.to_sparse())
    assert from_sparse.indptr.tolist() == [0, 2, 2, 4, 4]
    assert from_sparse.mask(torch.tensor([0]), 6).tolist() == [[0, 1, 0, 0, 1, 0]]


def test_oracle_on_planted_data_is_perfect() -> None:
    planted = make_planted()
    relevant = ItemSets.from_data(planted.valid, 48, min_rating=4.0).mask(torch.arange(48), 30)
    result = evaluate_topk(FixedScores(relevant.float()), planted.valid, exclude=planted.train,
                           ks=(3,))
    assert result["ndcg@3"] == pytest.approx(1.0) and result["map@3"] == pytest.approx(1.0)
    assert result["hit_rate@3"] == 1.0
    popularity = PopularityModel.fit(planted.train, 48, 30)
    assert evaluate_topk(popularity, planted.valid, exclude=planted.train, ks=(3,))[
        "ndcg@3"] < result["ndcg@3"]


def test_max_users_ranks_a_fixed_sample_exactly_as_its_own_test_rows() -> None:
    # 200 users with random scores and test rows: max_users=50 ranks 50 of them (the same 50
    # every call), and its metrics equal a full evaluation of just those users' test rows
    g = torch.Generator().manual_seed(1)
    n_users, n_items = 200, 40
    scores = torch.rand(n_users, n_items, generator=g)
    users = torch.arange(n_users).repeat_interleave(3)
    items = torch.randint(0, n_items, (users.numel(),), generator=g)
    ratings = torch.where(torch.rand(users.numel(), generator=g) < 0.7, 5.0, 2.0)
    keep = torch.ones(users.numel(), dtype=torch.bool)
    pairs = users * n_items + items
    keep[1:] = pairs[1:] != pairs[:-1]  # one rating per pair
    test = RatingData.from_arrays(users[keep], items[keep], ratings[keep], n_users=n_users,
                                  n_items=n_items)
    model = FixedScores(scores)
    full = evaluate_topk(model, test, ks=(5,))
    sampled = evaluate_topk(model, test, ks=(5,), max_users=50)
    assert sampled == evaluate_topk(model, test, ks=(5,), max_users=50)
    assert sampled["n_users"] == 50 and full["n_users"] > 50
    # the sample as documented: a seeded permutation of the users with a relevant item
    from recsys_pipeline.evaluation.topk import SAMPLE_SEED
    from recsys_pipeline.training.seed import torch_generator

    relevant_users = torch.unique(test.users[test.ratings >= 4.0])
    pick = torch.randperm(relevant_users.numel(), generator=torch_generator(SAMPLE_SEED))[:50]
    chosen = set(relevant_users[pick].tolist())
    mine = torch.tensor([int(u) in chosen for u in test.users])
    subset = RatingData.from_arrays(test.users[mine], test.items[mine], test.ratings[mine],
                                    n_users=n_users, n_items=n_items)
    assert sampled == pytest.approx(evaluate_topk(model, subset, ks=(5,)))
    assert evaluate_topk(model, test, ks=(5,), max_users=10_000) == full  # fewer users: all
    with pytest.raises(ValueError, match="max_users=0"):
        evaluate_topk(model, test, ks=(5,), max_users=0)


def test_errors() -> None:
    model = FixedScores(SCORES)
    with pytest.raises(ValueError, match=r"ks=\(7,\)"):
        evaluate_topk(model, TEST, ks=(7,))
    with pytest.raises(ValueError, match="no test user has an item with rating >= 5.5"):
        evaluate_topk(model, TEST, ks=(2,), relevance_threshold=5.5)
    nan = SCORES.clone()
    nan[0, 0] = math.nan
    with pytest.raises(ValueError, match="NaN scores"):
        evaluate_topk(FixedScores(nan), TEST, ks=(2,))
