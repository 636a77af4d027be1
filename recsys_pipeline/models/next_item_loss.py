"""Next-item training losses shared by the sequence models: full softmax or sampled softmax.

Both score a hidden state ``h`` against output token embeddings ``W`` (and optional bias
``b``): ``logit(t) = h · W_t + b_t``.

* ``"ce"``: cross-entropy over every real token (the padding column is excluded).
* ``"sampled"``: sampled softmax (Jean et al. 2015) with ``K`` negatives shared by the batch,
  drawn with replacement from ``q_t ∝ count_t^α`` (popularity sampling, as GRU4Rec). Every
  candidate's logit is corrected by ``− log(K q_t)`` so the sampled loss estimates the full
  one; a negative equal to the row's target is masked out (accidental hit).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

LOSSES: tuple[str, ...] = ("ce", "sampled")


def check_loss_fields(loss: str, n_negatives: int, sample_alpha: float) -> None:
    """Validate the loss fields of a sequence model config (``ValueError`` naming the field)."""
    if loss not in LOSSES:
        raise ValueError(f"loss={loss!r} must be one of {LOSSES}")
    if n_negatives < 1 or sample_alpha < 0:
        raise ValueError(f"n_negatives={n_negatives} must be >= 1 and sample_alpha="
                         f"{sample_alpha} >= 0")


def sampling_probs(token_counts: torch.Tensor, alpha: float) -> torch.Tensor:
    """``q_t ∝ count_t^α`` over real tokens (``q_0 = 0``; unseen tokens get count 1).  # [T]"""
    weights = token_counts.double().clamp(min=1.0).pow(alpha)
    weights[0] = 0.0
    return (weights / weights.sum()).float()


def next_item_loss(
    hidden: torch.Tensor,
    targets: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    loss: str,
    probs: torch.Tensor | None = None,
    n_negatives: int = 0,
) -> torch.Tensor:
    """Mean next-token loss over the rows of ``hidden``.

    Args:
        hidden: One state per prediction.  # [N, d]
        targets: The true next token of each state, ``>= 1``.  # [N]
        weight: Output token embeddings (row 0 = padding).  # [T, d]
        bias: Output token biases or None.  # [T]
        loss: ``"ce"`` or ``"sampled"``.
        probs: Sampling distribution for ``"sampled"`` (:func:`sampling_probs`).  # [T]
        n_negatives: ``K`` for ``"sampled"``.

    Returns:
        The scalar loss.
    """
    if loss == "ce":
        logits = hidden @ weight.T  # [N, T]
        if bias is not None:
            logits = logits + bias
        logits[:, 0] = float("-inf")  # padding is never a next item
        return F.cross_entropy(logits.float(), targets)
    if probs is None:
        raise ValueError("sampled softmax needs the token sampling probabilities")
    negatives = torch.multinomial(probs, n_negatives, replacement=True)  # [K]
    pos = (hidden * weight[targets]).sum(-1, keepdim=True)  # [N, 1]
    neg = hidden @ weight[negatives].T  # [N, K]
    if bias is not None:
        pos, neg = pos + bias[targets, None], neg + bias[negatives]
    log_kq = torch.log(probs * n_negatives)
    logits = torch.cat([pos - log_kq[targets, None], neg - log_kq[negatives]], 1).float()
    accidental = torch.cat([torch.zeros_like(pos, dtype=torch.bool),
                            negatives[None, :] == targets[:, None]], 1)
    logits = logits.masked_fill(accidental, float("-inf"))
    return F.cross_entropy(logits, torch.zeros_like(targets))
