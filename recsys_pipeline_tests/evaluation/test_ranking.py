"""Ranking metrics on a hand-computed 3-user, K=3 case."""

from __future__ import annotations

import math

import pytest
import torch

from recsys_pipeline.evaluation.ranking import (
    average_precision_at_k,
    catalog_coverage,
    hit_matrix,
    hit_rate_at_k,
    ndcg_at_k,
    precision_at_k,
    recall_at_k,
    reciprocal_rank_at_k,
)

# user 0: hits [0, 1, 0], 2 relevant;  user 1: hits [1, 0, 1], 4 relevant;
# user 2: hits [0, 0, 0], 1 relevant.
HITS = torch.tensor([[False, True, False], [True, False, True], [False, False, False]])
N_REL = torch.tensor([2, 4, 1])
L3 = 1 / math.log2(3)  # discount of rank 2; rank 1 → 1, rank 3 → 1/log2(4) = 0.5


def test_precision_recall_hit_rate_mrr() -> None:
    # precision: 1/3, 2/3, 0;  recall: 1/2, 2/4, 0/1
    assert precision_at_k(HITS).tolist() == pytest.approx([1 / 3, 2 / 3, 0.0])
    assert recall_at_k(HITS, N_REL).tolist() == pytest.approx([0.5, 0.5, 0.0])
    assert hit_rate_at_k(HITS).tolist() == [1.0, 1.0, 0.0]
    # first hit at rank 2, rank 1, none
    assert reciprocal_rank_at_k(HITS).tolist() == pytest.approx([0.5, 1.0, 0.0])


def test_ndcg() -> None:
    # u0: DCG = 1/log2(3); IDCG over min(3, 2) = 2 ranks = 1 + 1/log2(3) → 0.386853
    # u1: DCG = 1 + 1/log2(4) = 1.5; IDCG over 3 ranks = 1 + 1/log2(3) + 0.5 → 0.703918
    # u2: 0
    expected = [L3 / (1 + L3), 1.5 / (1.5 + L3), 0.0]
    assert ndcg_at_k(HITS, N_REL).tolist() == pytest.approx(expected)
    assert expected[:2] == pytest.approx([0.386853, 0.703918], abs=1e-6)


def test_average_precision() -> None:
    # u0: P@2 · 1 = 1/2, divided by min(3, 2) = 2 → 1/4
    # u1: (P@1 + P@3) = 1 + 2/3 = 5/3, divided by min(3, 4) = 3 → 5/9
    assert average_precision_at_k(HITS, N_REL).tolist() == pytest.approx([0.25, 5 / 9, 0.0])


def test_perfect_list_scores_one() -> None:
    hits = torch.tensor([[True, True, False]])  # both relevant items first
    n_rel = torch.tensor([2])
    assert float(ndcg_at_k(hits, n_rel)) == pytest.approx(1.0)
    assert float(average_precision_at_k(hits, n_rel)) == pytest.approx(1.0)


def test_hit_matrix_and_coverage() -> None:
    top = torch.tensor([[4, 0, 2], [2, 1, 4]])
    relevant = torch.zeros(2, 6, dtype=torch.bool)
    relevant[0, [0, 5]] = True
    relevant[1, [2]] = True
    assert hit_matrix(top, relevant).tolist() == [[False, True, False], [True, False, False]]
    assert catalog_coverage(top, 6) == pytest.approx(4 / 6)  # items {0, 1, 2, 4}


def test_users_without_relevant_items_are_rejected() -> None:
    with pytest.raises(ValueError, match=">= 1 relevant item"):
        recall_at_k(HITS, torch.tensor([2, 0, 1]))
    with pytest.raises(ValueError, match="bool"):
        precision_at_k(HITS.float())
