"""Strong-generalization evaluation: fold held-out users in, rank their held-out items.

Protocol of Liang et al. 2018 (Mult-VAE): a held-out user's fold-in row is given to the model
(``score_all_from``), its fold-in items are excluded from the ranking, and the top-K list is
compared with the user's evaluation items (``data.sparse.SplitMatrices.fold_in_pair``). Users
with no fold-in or no evaluation item are skipped.

* ``Recall@K = |top-K ∩ heldout| / min(K, |heldout|)`` (normalised so a perfect list scores 1,
  unlike ``evaluation.ranking.recall_at_k``);
* ``NDCG@K = DCG@K / IDCG@K`` with binary gains, ``IDCG`` over ``min(K, |heldout|)`` items.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np
import scipy.sparse as sp
import torch
from torch import nn

from recsys_pipeline.evaluation.ranking import ndcg_at_k
from recsys_pipeline.training.ranking_data import CSRTensors


class FoldInScorer(Protocol):
    """Anything scoring dense interaction rows (``models.ranking_base.FoldInModel``)."""

    def score_all_from(self, inputs: torch.Tensor) -> torch.Tensor: ...


class UserIndependentScorer(nn.Module):
    """Fold-in adapter for a model whose scores ignore the user (the popularity baseline)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def score_all_from(self, inputs: torch.Tensor) -> torch.Tensor:
        """The model's scores for user 0, repeated for every input row.  # [B, n_items]"""
        users = torch.zeros(inputs.shape[0], dtype=torch.long, device=inputs.device)
        with torch.no_grad():
            return self.model.score_all(users).float()


def _device(model: object) -> torch.device:
    if isinstance(model, nn.Module):
        for t in (*model.parameters(), *model.buffers()):
            return t.device
    return torch.device("cpu")


def recall_at_k_capped(hits: torch.Tensor, n_relevant: torch.Tensor) -> torch.Tensor:
    """Recall@K normalised by ``min(K, |relevant|)`` (Liang et al. 2018).  # [B]

    Args:
        hits: Whether the item at each rank is relevant.  # [B, K] bool
        n_relevant: Relevant items per user, >= 1.  # [B]

    Returns:
        ``Σ_k hits[b, k] / min(K, n_relevant[b])`` in [0, 1].
    """
    if hits.ndim != 2 or n_relevant.shape != hits.shape[:1]:
        raise ValueError(f"hits {tuple(hits.shape)} must be [B, K] and n_relevant [B]")
    if n_relevant.numel() and int(n_relevant.min()) < 1:
        raise ValueError("every user needs >= 1 relevant item")
    return hits.double().sum(1) / n_relevant.clamp(max=hits.shape[1]).double()


def evaluate_fold_in(
    model: FoldInScorer,
    fold_in: sp.spmatrix,
    heldout: sp.spmatrix,
    ks: Sequence[int] = (20, 50, 100),
    batch_size: int = 1024,
    exclude: sp.spmatrix | None = None,
) -> dict[str, float]:
    """Recall@K (capped) and NDCG@K of held-out users folded in from their fold-in rows.

    Args:
        model: Has ``score_all_from(dense rows [B, n_items]) -> [B, n_items]``.
        fold_in: Fold-in interactions (what the model sees).  # [n_users, n_items] CSR
        heldout: Evaluation interactions (what it should rank high).  # [n_users, n_items]
        ks: Cut-offs.
        batch_size: Users per scoring call.
        exclude: Further items each user is known to have (e.g. rated below the positive
            threshold, or in an earlier split): never recommended, not given to the model.
            # [n_users, n_items] CSR

    Returns:
        ``recall@k`` and ``ndcg@k`` per k (means over evaluated users) and ``n_users``.

    Raises:
        ValueError: Shapes differ, a k is out of range, or no user has both kinds of rows.
    """
    fold_in, heldout = sp.csr_matrix(fold_in), sp.csr_matrix(heldout)
    if fold_in.shape != heldout.shape:
        raise ValueError(f"fold_in {fold_in.shape} and heldout {heldout.shape} differ")
    if exclude is not None and exclude.shape != fold_in.shape:
        raise ValueError(f"exclude {exclude.shape} and fold_in {fold_in.shape} differ")
    n_items = fold_in.shape[1]
    if not ks or any(not 1 <= k <= n_items for k in ks):
        raise ValueError(f"ks={tuple(ks)} must be non-empty with each k in [1, {n_items}]")
    users = np.flatnonzero((np.diff(fold_in.indptr) > 0) & (np.diff(heldout.indptr) > 0))
    if users.size == 0:
        raise ValueError("no user has both fold-in and held-out interactions")
    device = _device(model)
    x_all = CSRTensors.from_scipy(fold_in[users], device)
    y_all = CSRTensors.from_scipy(heldout[users], device)
    e_all = None if exclude is None else CSRTensors.from_scipy(
        sp.csr_matrix(exclude)[users], device)
    n_rel_all = y_all.row_nnz()
    sums = {f"{m}@{k}": 0.0 for k in ks for m in ("recall", "ndcg")}
    for rows in torch.arange(users.size, device=device).split(batch_size):
        x = x_all.dense_rows(rows)
        scores = model.score_all_from(x).float().clone()  # [B, n_items]
        scores[x > 0] = float("-inf")  # fold-in items are known, never recommended
        if e_all is not None:
            scores[e_all.dense_rows(rows) != 0] = float("-inf")
        top = torch.topk(scores, max(ks), dim=1).indices
        hits = (y_all.dense_rows(rows) > 0).gather(1, top)  # [B, K]
        n_rel = n_rel_all[rows]
        for k in ks:
            sums[f"recall@{k}"] += float(recall_at_k_capped(hits[:, :k], n_rel).sum())
            sums[f"ndcg@{k}"] += float(ndcg_at_k(hits[:, :k], n_rel).sum())
    result = {name: total / users.size for name, total in sums.items()}
    result["n_users"] = float(users.size)
    return result
