"""Fold a new user into a trained ranking model without retraining (``serving.fold_in``).

The new user's ratings ``r_j`` of items ``j`` (already in the served model's item space,
see ``serving.ranking_serving``) give the model's input; item parameters stay fixed:

* **fold-in models** (autoencoder, Mult-VAE, EASE; :class:`FoldInServing`): an encoder pass.
  The input row is binarized over the model's item columns, ``x_j = 1`` iff ``r_j >= t`` (the
  model's positive threshold), and scored by the model's row scorer (``score_all_from``).
  A training user's ratings reproduce that user's stored row, hence the same scores.
* **sequence models** (GRU4Rec, SASRec, co-occurrence; :class:`SequenceServing`): the rated
  items in the order given (file order, or by ``timestamp`` when the ratings carry one, ties
  in file order), the last ``max_len`` as tokens; next-item scores.
* **two-tower**: a fresh user embedding ``e`` (the mean trained user plus seeded noise) takes
  ``steps`` full-batch Adam steps on the model's own softmax objective over the whole
  catalogue, ``−mean_{j: r_j >= 4} log softmax(f(e) · G / τ)_j + prior · ‖e − ē‖²``, with the
  item tower ``G`` and the user tower's top layer fixed.

Rated items never come back (``FoldedUser.recommend`` masks them; the fold-in and sequence
scores are also ``-inf`` there).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import torch
import torch.nn.functional as F

from recsys_pipeline import schema as S
from recsys_pipeline.models.two_tower import TwoTowerModel
from recsys_pipeline.serving.ranking_serving import (
    TOPK_THRESHOLD,
    FoldInServing,
    SequenceServing,
)
from recsys_pipeline.training.seed import torch_generator

Fit = tuple[torch.Tensor, str, dict[str, torch.Tensor]]


def is_ranking(model: Any) -> bool:
    """Whether :func:`fold_in_ranking` handles ``model``."""
    return isinstance(model, FoldInServing | SequenceServing | TwoTowerModel)


def in_given_order(ratings: dict[int, float] | pa.Table) -> dict[int, float] | pa.Table:
    """The ratings in sequence order: a table with a ``timestamp`` column sorted by it
    (stable: ties keep file order); anything else as given."""
    if not isinstance(ratings, pa.Table) or S.TIMESTAMP not in ratings.column_names:
        return ratings
    when = ratings.column(S.TIMESTAMP).cast(pa.int64()).to_numpy()
    return ratings.take(pa.array(np.argsort(when, kind="stable")))


def _positives(items: torch.Tensor, r: torch.Tensor, threshold: float, what: str
               ) -> torch.Tensor:
    pos = items[r >= threshold]
    if pos.numel() == 0:
        raise ValueError(f"{what} takes ratings >= {threshold} as positives; the new user "
                         f"has none among {items.numel()} known ratings")
    return pos


def _fold_in_rows(model: FoldInServing, items: torch.Tensor, r: torch.Tensor) -> Fit:
    pos = _positives(items, r, model.threshold, f"{type(model.model).__name__}")
    row = torch.zeros(1, model.n_items, device=items.device)
    row[0, pos] = 1.0
    return model.score_rows(row)[0], "encoder", {"row": row}


def _fold_in_sequence(model: SequenceServing, items: torch.Tensor) -> Fit:
    width = model.tokens.shape[1]
    tokens = torch.zeros(1, width, dtype=torch.long, device=items.device)
    last = items[-width:] + 1  # token = item idx + 1
    tokens[0, width - last.numel():] = last
    return model.score_tokens(tokens)[0], "sequence", {"tokens": tokens}


def _user_vector(model: TwoTowerModel, e: torch.Tensor, recent: torch.Tensor | None
                 ) -> torch.Tensor:
    """The user tower on a free embedding ``e`` (``TwoTowerModel.user_vectors``).  # [1, d]"""
    h = e if recent is None else e + model.recent_embedding(recent)
    h = model.user_top(h)
    return F.normalize(h, dim=-1) if model.config.normalize else h


def _fold_in_two_tower(model: TwoTowerModel, items: torch.Tensor, r: torch.Tensor,
                       cfg: Any) -> Fit:
    pos = _positives(items, r, TOPK_THRESHOLD, "TwoTowerModel")
    recent = None
    if model.config.n_recent:  # the user's last rated items, padded with n_items
        recent = torch.full((1, model.config.n_recent), model.n_items, device=items.device)
        last = items[-model.config.n_recent:]
        recent[0, recent.shape[1] - last.numel():] = last
    g = model.item_embeddings().detach()  # [n_items, d]
    mean = model.user_embedding.weight.detach().mean(0, keepdim=True)  # [1, d]
    noise = torch.randn(mean.shape, generator=torch_generator(cfg.seed)).to(mean.device)
    e = (mean + cfg.init_noise * noise).requires_grad_(True)
    opt = torch.optim.Adam([e], lr=cfg.lr)
    tau = model.config.temperature
    for _ in range(cfg.steps):
        logits = (_user_vector(model, e, recent) @ g.T / tau)[0]  # [n_items]
        loss = -logits.log_softmax(0)[pos].mean() + cfg.prior * (e - mean).pow(2).sum()
        # the grad of the fresh row only: the model's own .grad fields stay untouched
        (e.grad,) = torch.autograd.grad(loss, [e])
        opt.step()
    with torch.no_grad():
        scores = (_user_vector(model, e, recent) @ g.T / tau)[0]
    return scores, "gradient", {"user_embedding.weight": e.detach()}


def fold_in_ranking(model: Any, items: torch.Tensor, r: torch.Tensor, cfg: Any) -> Fit:
    """Scores of every item for a new user of a ranking model (see the module doc).

    Args:
        model: A :class:`FoldInServing`, :class:`SequenceServing` or ``TwoTowerModel``.
        items: The rated items in the model's item space, in sequence order.  # [n]
        r: Their ratings.  # [n]
        cfg: ``serving.fold_in.FoldInConfig`` (two-tower: steps, lr, prior, noise, seed).

    Returns:
        ``(scores [n_items], method, fitted parameters)``; method ``encoder``, ``sequence``
        or ``gradient``.

    Raises:
        ValueError: No positive rating where the model needs positives, or another model.
    """
    if isinstance(model, FoldInServing):
        return _fold_in_rows(model, items, r)
    if isinstance(model, SequenceServing):
        return _fold_in_sequence(model, items)
    if isinstance(model, TwoTowerModel):
        return _fold_in_two_tower(model, items, r, cfg)
    raise ValueError(f"no ranking fold-in rule for {type(model).__name__}")
