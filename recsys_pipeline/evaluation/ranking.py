"""Top-K ranking metrics from a hit matrix, per user, on the device.

Every function takes ``hits``, a bool ``[B, K]`` tensor where ``hits[b, k]`` says whether the
item ranked ``k + 1`` for user ``b`` is relevant (binary relevance), and where needed
``n_relevant``, the number of relevant items of each user (``>= 1``). They return one value per
user (``[B]``, float64) so callers can sum across user batches and average once. Build ``hits``
with :func:`hit_matrix`.
"""

from __future__ import annotations

import torch


def _check(hits: torch.Tensor, n_relevant: torch.Tensor | None = None) -> None:
    if hits.ndim != 2 or hits.dtype != torch.bool or hits.shape[1] < 1:
        raise ValueError(f"hits must be a bool [B, K>=1] tensor, got {hits.dtype} "
                         f"{tuple(hits.shape)}")
    if n_relevant is not None:
        if n_relevant.shape != hits.shape[:1]:
            raise ValueError(f"n_relevant {tuple(n_relevant.shape)} must be [B]="
                             f"{hits.shape[0]}")
        if n_relevant.numel() and int(n_relevant.min()) < 1:
            raise ValueError("every user needs >= 1 relevant item (filter users first)")


def _discounts(k: int, device: torch.device) -> torch.Tensor:
    """``1 / log2(rank + 1)`` for ranks 1..k.  # [k]"""
    return 1.0 / torch.log2(torch.arange(2, k + 2, device=device, dtype=torch.float64))


def hit_matrix(top_items: torch.Tensor, relevant: torch.Tensor) -> torch.Tensor:
    """Which recommended items are relevant.

    Args:
        top_items: Recommended item indices, best first.  # [B, K]
        relevant: Relevance mask over the catalogue.  # [B, n_items] bool

    Returns:
        ``hits[b, k] = relevant[b, top_items[b, k]]``.  # [B, K] bool
    """
    return relevant.gather(1, top_items)


def precision_at_k(hits: torch.Tensor) -> torch.Tensor:
    """Precision@K: ``|top-K ∩ relevant| / K``.  # [B]"""
    _check(hits)
    return hits.double().sum(1) / hits.shape[1]


def recall_at_k(hits: torch.Tensor, n_relevant: torch.Tensor) -> torch.Tensor:
    """Recall@K: ``|top-K ∩ relevant| / |relevant|`` (denominator not capped at K).  # [B]"""
    _check(hits, n_relevant)
    return hits.double().sum(1) / n_relevant.double()


def ndcg_at_k(hits: torch.Tensor, n_relevant: torch.Tensor) -> torch.Tensor:
    """NDCG@K with binary gains.

    ``DCG = Σ_{k=1..K} hit_k / log2(k + 1)``; the ideal DCG puts all relevant items first:
    ``IDCG = Σ_{k=1..min(K, |relevant|)} 1 / log2(k + 1)``; ``NDCG = DCG / IDCG``.

    Returns:
        Per-user NDCG in [0, 1].  # [B]
    """
    _check(hits, n_relevant)
    disc = _discounts(hits.shape[1], hits.device)
    dcg = (hits.double() * disc).sum(1)
    ideal = torch.cumsum(disc, 0)[n_relevant.clamp(max=hits.shape[1]) - 1]
    return dcg / ideal


def average_precision_at_k(hits: torch.Tensor, n_relevant: torch.Tensor) -> torch.Tensor:
    """AP@K (MAP@K is its mean over users).

    ``AP@K = (1 / min(K, |relevant|)) Σ_{k=1..K} P@k · hit_k`` with ``P@k`` the precision of
    the first k items. The ``min(K, |relevant|)`` denominator makes a perfect list score 1.

    Returns:
        Per-user AP@K.  # [B]
    """
    _check(hits, n_relevant)
    h = hits.double()
    ranks = torch.arange(1, hits.shape[1] + 1, device=hits.device, dtype=torch.float64)
    precision_at = torch.cumsum(h, 1) / ranks  # [B, K]
    return (precision_at * h).sum(1) / n_relevant.clamp(max=hits.shape[1]).double()


def hit_rate_at_k(hits: torch.Tensor) -> torch.Tensor:
    """HitRate@K: 1 when at least one of the top K is relevant, else 0.  # [B]"""
    _check(hits)
    return hits.any(1).double()


def reciprocal_rank_at_k(hits: torch.Tensor) -> torch.Tensor:
    """RR@K (MRR@K is its mean): ``1 / rank`` of the first relevant item, 0 if none in top K.

    Returns:
        Per-user reciprocal rank.  # [B]
    """
    _check(hits)
    ranks = torch.arange(1, hits.shape[1] + 1, device=hits.device, dtype=torch.float64)
    return (hits.double() / ranks).max(1).values


def catalog_coverage(top_items: torch.Tensor, n_items: int) -> float:
    """Catalogue coverage@K: ``|∪_u top-K(u)| / n_items``, the share of items recommended.

    Args:
        top_items: Recommended items of all evaluated users (or use :func:`item_seen_mask`
            across batches and divide its sum by ``n_items``).  # [U, K]
        n_items: Catalogue size.

    Returns:
        The covered fraction in [0, 1].
    """
    return float(item_seen_mask(top_items, n_items).sum()) / n_items


def item_seen_mask(top_items: torch.Tensor, n_items: int) -> torch.Tensor:
    """Bool mask of the items appearing anywhere in ``top_items``.  # [n_items]"""
    seen = torch.zeros(n_items, dtype=torch.bool, device=top_items.device)
    seen[top_items.flatten()] = True
    return seen
