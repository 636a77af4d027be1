"""Next-item evaluation: rank the full token vocabulary after each input sequence.

For each evaluated row (``data.sessions`` valid/test: left-padded input tokens and one target
token) the model scores every token (``score_next``); the padding token and the items the user
has already seen are set to ``-inf``; the target's place in the top-K list gives, with one
relevant item per row (see ``evaluation.ranking``):

* ``HR@K`` = 1 if the target is in the top K; ``Precision@K = HR@K / K``;
* ``NDCG@K = 1 / log2(rank + 1)`` if ``rank <= K`` else 0 (IDCG = 1);
* ``MRR@K = 1 / rank`` if ``rank <= K`` else 0, and ``MAP@K`` equals it with one relevant item.

"Seen" means the input tokens themselves, or a wider per-row token set given as ``exclude``
(e.g. the whole history when inputs are truncated to ``max_len``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np
import torch

from recsys_pipeline.evaluation.ranking import (
    average_precision_at_k,
    hit_rate_at_k,
    ndcg_at_k,
    precision_at_k,
    reciprocal_rank_at_k,
)
from recsys_pipeline.evaluation.topk import ItemSets

KS: tuple[int, ...] = (1, 5, 10, 20)


class NextItemScorer(Protocol):
    """Anything with ``score_next(tokens [B, L]) -> [B, n_tokens]`` (``SequenceModel``)."""

    n_vocab: int

    def score_next(self, tokens: torch.Tensor) -> torch.Tensor: ...


def next_item_metrics(top: torch.Tensor, targets: torch.Tensor, ks: Sequence[int]) -> dict:
    """Per-row metric sums for ranked lists with a single relevant token.

    Args:
        top: Ranked tokens, best first.  # [B, max(ks)]
        targets: The relevant token of each row.  # [B]
        ks: Cut-offs.

    Returns:
        ``{"hr@k", "ndcg@k", "map@k", "precision@k", "mrr@k"}`` summed over rows (floats).
    """
    hits = top == targets[:, None]  # [B, K]
    ones = torch.ones(top.shape[0], dtype=torch.long, device=top.device)
    out = {}
    for k in ks:
        h = hits[:, :k]
        out[f"hr@{k}"] = float(hit_rate_at_k(h).sum())
        out[f"ndcg@{k}"] = float(ndcg_at_k(h, ones).sum())
        out[f"map@{k}"] = float(average_precision_at_k(h, ones).sum())
        out[f"precision@{k}"] = float(precision_at_k(h).sum())
        out[f"mrr@{k}"] = float(reciprocal_rank_at_k(h).sum())
    return out


def evaluate_next_item(
    model: NextItemScorer,
    tokens: np.ndarray | torch.Tensor,
    targets: np.ndarray | torch.Tensor,
    ks: Sequence[int] = KS,
    exclude: ItemSets | None = None,
    exclude_inputs: bool = True,
    batch_size: int = 1024,
) -> dict[str, float]:
    """Full-vocabulary next-item ranking metrics, averaged over rows.

    Args:
        model: A next-item scorer over ``n_vocab + 1`` tokens.
        tokens: Left-padded input rows (``SequenceBatch.tokens``).  # [N, L]
        targets: Target token per row, in ``1..n_vocab``.  # [N]
        ks: Cut-offs.
        exclude: Optional token sets per row (row ``r`` = ``exclude`` user ``r``) to mask too.
        exclude_inputs: Mask the input tokens (items already seen) from the ranking.
        batch_size: Rows per scoring call.

    Returns:
        ``hr@k``, ``ndcg@k``, ``map@k``, ``precision@k``, ``mrr@k`` per k and ``n_rows``.

    Raises:
        ValueError: Mismatched shapes, targets outside the vocabulary, an excluded target, or
            ks out of range.
    """
    tokens = torch.as_tensor(np.asarray(tokens) if not torch.is_tensor(tokens) else tokens).long()
    targets = torch.as_tensor(np.asarray(targets) if not torch.is_tensor(targets)
                              else targets).long()
    n_tokens = model.n_vocab + 1
    if tokens.ndim != 2 or targets.shape != tokens.shape[:1] or tokens.shape[0] == 0:
        raise ValueError(f"tokens {tuple(tokens.shape)} must be [N>0, L] and targets "
                         f"{tuple(targets.shape)} [N]")
    if int(targets.min()) < 1 or int(targets.max()) > model.n_vocab:
        raise ValueError(f"targets must be tokens in 1..{model.n_vocab} (0 is padding)")
    if not ks or any(not 1 <= k < n_tokens for k in ks):
        raise ValueError(f"ks={tuple(ks)} must be non-empty with each k in [1, {model.n_vocab}]")
    if exclude is not None and exclude.n_users != tokens.shape[0]:
        raise ValueError(f"exclude has {exclude.n_users} rows, tokens have {tokens.shape[0]}")
    sums: dict[str, float] = {}
    for rows in torch.arange(tokens.shape[0]).split(batch_size):
        scores = model.score_next(tokens[rows]).float().clone()  # [B, n_tokens]
        device = scores.device
        tgt = targets[rows].to(device)
        if exclude_inputs:
            scores.scatter_(1, tokens[rows].to(device), float("-inf"))
        if exclude is not None:
            if exclude.indptr.device != device:
                exclude = exclude.to(device)  # once: every later batch finds it there
            r, t = exclude.entries(rows.to(device))
            scores[r, t] = float("-inf")
        if bool(torch.isinf(scores.gather(1, tgt[:, None])).any()):
            raise ValueError("a target token is excluded (seen in the input or exclude set)")
        top = torch.topk(scores, max(ks), dim=1).indices
        for name, value in next_item_metrics(top, tgt, ks).items():
            sums[name] = sums.get(name, 0.0) + value
    n = tokens.shape[0]
    result = {name: total / n for name, total in sums.items()}
    result["n_rows"] = float(n)
    return result
