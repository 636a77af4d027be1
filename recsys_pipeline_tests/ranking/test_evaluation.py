"""Strong-generalization and next-item evaluation on hand-worked scores; the next-item losses."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.sparse as sp
import torch
import torch.nn.functional as F

from recsys_pipeline.evaluation.nextitem import evaluate_next_item
from recsys_pipeline.evaluation.strong import evaluate_fold_in, recall_at_k_capped
from recsys_pipeline.evaluation.topk import ItemSets
from recsys_pipeline.models.next_item_loss import next_item_loss, sampling_probs


class FixedFoldIn(torch.nn.Module):
    """Scores every row with the same fixed item scores (item 0 best, then 1, 2, ...)."""

    def __init__(self, n_items: int) -> None:
        super().__init__()
        self.register_buffer("scores", -torch.arange(n_items, dtype=torch.float32))

    def score_all_from(self, x: torch.Tensor) -> torch.Tensor:
        return self.scores.repeat(x.shape[0], 1)


class FixedNext:
    """Next-token scores: token t scores -t (token 1 best), the same for every row."""

    n_vocab = 6

    def score_next(self, tokens: torch.Tensor) -> torch.Tensor:
        scores = -torch.arange(7, dtype=torch.float32).repeat(tokens.shape[0], 1)
        scores[:, 0] = float("-inf")
        return scores


def test_recall_is_capped_by_k() -> None:
    hits = torch.tensor([[True, True], [True, False]])
    # user 0 has 5 relevant items: 2 / min(2, 5) = 1; user 1 has 1: 1 / 1
    assert recall_at_k_capped(hits, torch.tensor([5, 1])).tolist() == [1.0, 1.0]


def test_fold_in_metrics_by_hand() -> None:
    # 3 users x 5 items; the scorer ranks items 0, 1, 2, 3, 4; fold-in items are skipped
    fold_in = sp.csr_matrix(np.array([[1, 0, 0, 0, 0], [0, 1, 0, 0, 0], [0, 0, 0, 0, 1]]))
    heldout = sp.csr_matrix(np.array([[0, 1, 0, 1, 0], [0, 0, 0, 0, 1], [0, 0, 0, 0, 0]]))
    result = evaluate_fold_in(FixedFoldIn(5), fold_in, heldout, ks=(1, 2))
    # user 0: list 1, 2, 3, 4 -> hits at ranks 1 and 3; user 1: list 0, 2, 3, 4 -> rank 4
    # user 2 has no held-out item: skipped
    assert result["n_users"] == 2
    assert result["recall@1"] == pytest.approx((1 / 1 + 0) / 2)
    assert result["recall@2"] == pytest.approx((1 / 2 + 0) / 2)
    idcg2 = 1 + 1 / math.log2(3)
    assert result["ndcg@2"] == pytest.approx((1 / idcg2 + 0) / 2)


def test_fold_in_extra_exclusions_are_masked_not_folded_in() -> None:
    fold_in = sp.csr_matrix(np.array([[1, 0, 0, 0, 0], [0, 1, 0, 0, 0]]))
    heldout = sp.csr_matrix(np.array([[0, 0, 1, 0, 0], [0, 0, 0, 1, 0]]))
    known = sp.csr_matrix(np.array([[0, 1, 0, 0, 0], [1, 0, 1, 0, 0]]))  # e.g. valid items
    plain = evaluate_fold_in(FixedFoldIn(5), fold_in, heldout, ks=(1,))
    masked = evaluate_fold_in(FixedFoldIn(5), fold_in, heldout, ks=(1,), exclude=known)
    # user 0: list 1, 2, ... -> 2, 3, ...; user 1: list 0, 2, 3 -> 3, 4
    assert plain["recall@1"] == 0.0 and masked["recall@1"] == 1.0
    with pytest.raises(ValueError, match="exclude"):
        evaluate_fold_in(FixedFoldIn(5), fold_in, heldout, ks=(1,), exclude=sp.csr_matrix((2, 4)))


def test_fold_in_shape_errors() -> None:
    with pytest.raises(ValueError, match="differ"):
        evaluate_fold_in(FixedFoldIn(3), sp.csr_matrix((2, 3)), sp.csr_matrix((2, 4)))
    with pytest.raises(ValueError, match="no user"):
        evaluate_fold_in(FixedFoldIn(3), sp.csr_matrix((2, 3)), sp.csr_matrix((2, 3)), ks=(1,))
    with pytest.raises(ValueError, match="ks="):
        evaluate_fold_in(FixedFoldIn(3), sp.csr_matrix((2, 3)), sp.csr_matrix((2, 3)), ks=(4,))


def test_next_item_metrics_by_hand() -> None:
    tokens = np.array([[0, 1], [2, 3], [0, 6]])
    targets = np.array([2, 5, 4])
    # row 0: list 2, 3, ... -> target rank 1; row 1: 1, 4, 5 -> rank 3; row 2: 1, 2, 3, 4 -> 4
    result = evaluate_next_item(FixedNext(), tokens, targets, ks=(1, 3))
    assert result["hr@1"] == pytest.approx(1 / 3)
    assert result["hr@3"] == pytest.approx(2 / 3)
    assert result["ndcg@3"] == pytest.approx((1 + 1 / math.log2(4)) / 3)
    assert result["mrr@3"] == pytest.approx((1 + 1 / 3) / 3) == result["map@3"]
    assert result["precision@3"] == pytest.approx(result["hr@3"] / 3)
    kept = evaluate_next_item(FixedNext(), tokens, targets, ks=(1,), exclude_inputs=False)
    assert kept["hr@1"] == 0.0  # token 1 (seen in row 0) now takes rank 1 everywhere


def test_next_item_extra_exclusions_and_errors() -> None:
    tokens, targets = np.array([[0, 5]]), np.array([3])
    extra = ItemSets(torch.tensor([0, 2]), torch.tensor([1, 2]))  # row 0 also saw 1 and 2
    assert evaluate_next_item(FixedNext(), tokens, targets, ks=(1,), exclude=extra)["hr@1"] == 1
    with pytest.raises(ValueError, match="excluded"):
        evaluate_next_item(FixedNext(), tokens, np.array([5]), ks=(1,))
    with pytest.raises(ValueError, match="1..6"):
        evaluate_next_item(FixedNext(), tokens, np.array([0]), ks=(1,))


def test_full_softmax_loss_skips_padding() -> None:
    gen = torch.Generator().manual_seed(0)
    hidden, weight = torch.randn(4, 3, generator=gen), torch.randn(6, 3, generator=gen)
    targets = torch.tensor([1, 5, 2, 2])
    logits = hidden @ weight[1:].T  # padding column dropped
    expected = F.cross_entropy(logits, targets - 1)
    torch.testing.assert_close(next_item_loss(hidden, targets, weight, None, "ce"), expected)


def test_sampled_softmax_masks_accidental_hits_and_corrects_by_log_q() -> None:
    torch.manual_seed(0)
    hidden, weight = torch.randn(3, 2), torch.randn(4, 2)
    bias = torch.tensor([0.0, 0.3, -0.2, 0.1])
    # (almost) every negative is token 1: for a row whose target is 1 all are masked -> loss 0
    only_one = sampling_probs(torch.tensor([0.0, 1e9, 1.0, 1.0]), alpha=1.0)
    masked = next_item_loss(hidden[:1], torch.tensor([1]), weight, bias, "sampled", only_one, 4)
    assert float(masked) == pytest.approx(0.0, abs=1e-6)
    targets = torch.tensor([1, 2, 3])
    probs = sampling_probs(torch.tensor([9.0, 4.0, 1.0, 1.0]), alpha=1.0)
    assert probs.tolist() == pytest.approx([0.0, 4 / 6, 1 / 6, 1 / 6])
    torch.manual_seed(1)
    negatives = torch.multinomial(probs, 5, replacement=True)
    torch.manual_seed(1)
    loss = next_item_loss(hidden, targets, weight, bias, "sampled", probs, n_negatives=5)
    log_kq = torch.log(probs * 5)
    pos = (hidden * weight[targets]).sum(1) + bias[targets] - log_kq[targets]
    neg = hidden @ weight[negatives].T + bias[negatives] - log_kq[negatives]
    neg = neg.masked_fill(negatives[None, :] == targets[:, None], float("-inf"))
    expected = (torch.logsumexp(torch.cat([pos[:, None], neg], 1), 1) - pos).mean()
    torch.testing.assert_close(loss, expected)
