"""Fold a new user into a trained rating model without retraining, then recommend for them.

Item parameters stay fixed; only the new user's parameters are estimated from their ratings
``r_j`` of items ``j ∈ R`` (``n = |R|``):

* **MF** (``r̂ = μ + b_u + b_i + p_u · q_i``): training minimises per-rating squared error plus
  ``λ (‖p_u‖² + b_u²)`` per rating, so with items fixed the user's optimum is the ridge solve
  ``w = (XᵀX + λ n I)⁻¹ Xᵀ y`` with ``X = [Q_R, 1]``, ``y = r − μ − b_R``, ``w = [p_u; b_u]``.
* **Bias** (``r̂ = μ + b_u + b_i``): the model's own user update,
  ``b_u = Σ_j (r_j − μ − b_j) / (n + λ_u)`` with the training damping ``λ_u``.
* **MLP / NeuMF / DeepFM**: a fresh user embedding (every user-indexed table of the model)
  starts at the mean trained user plus seeded noise and takes ``steps`` full-batch Adam steps
  on ``mean_j (r̂_j − r_j)² + prior · ‖e − ē‖²`` with the model in eval mode.
* **Popularity**: nothing to fit; every user gets the same counts.
* **Rating autoencoder** (``autoencoder_rating``): nothing to fit; the user's ratings, as one
  input row (0 where unrated), go through the network like a training user's stored row.
* **Ranking models** (``serving.ranking_fold_in``): an encoder pass over the binarized row
  (autoencoder, Mult-VAE, EASE), the rated items as a sequence (GRU4Rec, SASRec,
  co-occurrence), a gradient fit of a fresh user embedding (two-tower).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import torch
from torch.func import functional_call

from recsys_pipeline import schema as S
from recsys_pipeline.data.encode import IdMaps
from recsys_pipeline.models.base import RatingModel
from recsys_pipeline.models.ranking_base import FoldInModel
from recsys_pipeline.serving.ranking_fold_in import fold_in_ranking, in_given_order, is_ranking
from recsys_pipeline.serving.tables import (
    RECOMMENDATIONS_SCHEMA,
    SCORE,
    check_model_maps,
    ranked_table,
)
from recsys_pipeline.training.device import model_device
from recsys_pipeline.training.seed import torch_generator

# family -> the parameters indexed by user_idx, which a folded-in user gets fresh copies of
USER_PARAMETERS: dict[str, tuple[str, ...]] = {
    "mf": ("user_factors.weight", "user_bias.weight"),
    "mlp": ("user_embedding.weight",),
    "neumf": ("gmf_user.weight", "mlp_user.weight"),
    "deepfm": ("user_embedding.weight", "user_linear.weight"),
}
UNKNOWN_POLICIES = ("raise", "skip")


@dataclass(frozen=True)
class FoldInConfig:
    """Options of :func:`fold_in`.

    Attributes:
        ridge: MF's per-rating ridge λ; None uses the model's training ``l2``.
        min_ridge: Floor on λ, so a model trained with ``l2 = 0`` still gets a solvable,
            mildly shrunk system when a user has fewer ratings than factors.
        steps: Adam steps for neural models.
        lr: Adam learning rate for neural models.
        prior: Weight of ``‖e − ē‖²`` (pull towards the mean trained user) for neural models.
        init_noise: Std of the seeded noise added to the mean user at the start.
        seed: Seeds that noise.
        unknown: ``"raise"`` on item ids the model does not know, or ``"skip"`` them (they
            are listed in :attr:`FoldedUser.skipped_item_ids`).
    """

    ridge: float | None = None
    min_ridge: float = 1e-3
    steps: int = 150
    lr: float = 0.05
    prior: float = 1e-3
    init_noise: float = 0.01
    seed: int = 0
    unknown: str = "raise"

    def __post_init__(self) -> None:
        if self.unknown not in UNKNOWN_POLICIES:
            raise ValueError(f"unknown={self.unknown!r} must be one of {UNKNOWN_POLICIES}")
        if self.steps < 1 or self.lr <= 0 or self.prior < 0 or self.init_noise < 0:
            raise ValueError(f"steps={self.steps} must be >= 1, lr={self.lr} > 0, prior="
                             f"{self.prior} and init_noise={self.init_noise} >= 0")
        if (self.ridge is not None and self.ridge < 0) or self.min_ridge < 0:
            raise ValueError(f"ridge={self.ridge} and min_ridge={self.min_ridge} must be >= 0")


@dataclass(frozen=True)
class FoldedUser:
    """A new user's fitted parameters and scores over the whole catalogue.

    Attributes:
        item_idx: Items the user rated.  # [n] int64
        ratings: Their ratings.  # [n] float32
        scores: The model's score of every item for this user, on the CPU.  # [n_items]
        method: ``"closed_form"``, ``"gradient"``, ``"popularity"``, ``"encoder"`` or
            ``"sequence"``.
        user_params: The fitted user rows by parameter name (e.g. ``user_factors.weight``).
        fit_rmse: RMSE of the scores on the user's own ratings.
        skipped_item_ids: Rated ids the model does not know (with ``unknown="skip"``).
    """

    item_idx: np.ndarray
    ratings: np.ndarray
    scores: torch.Tensor
    method: str
    user_params: dict[str, torch.Tensor] = field(default_factory=dict)
    fit_rmse: float = math.nan
    skipped_item_ids: tuple[int, ...] = ()

    def recommend(self, maps: IdMaps, movies: pa.Table, k: int) -> pa.Table:
        """The ``k`` best-scored movies the user has not rated (``RECOMMENDATIONS_SCHEMA``)."""
        n_items = self.scores.shape[0]
        if not 1 <= k <= n_items:
            raise ValueError(f"k={k} must be in [1, n_items={n_items}]")
        scores = self.scores.clone()
        scores[torch.from_numpy(self.item_idx)] = float("-inf")
        top_scores, top = torch.topk(scores, min(k, n_items - len(self.item_idx)))
        return ranked_table(maps.to_item_ids(top.numpy()), movies, maps,
                            {SCORE: top_scores.numpy()}, RECOMMENDATIONS_SCHEMA)


def _as_arrays(ratings: dict[int, float] | pa.Table) -> tuple[np.ndarray, np.ndarray]:
    if isinstance(ratings, pa.Table):
        missing = [c for c in (S.ITEM_ID, S.RATING) if c not in ratings.column_names]
        if missing:
            raise ValueError(f"ratings table lacks column(s) {missing}; "
                             f"has {ratings.column_names}")
        ids = ratings.column(S.ITEM_ID).to_numpy().astype(np.int64)
        values = ratings.column(S.RATING).to_numpy().astype(np.float32)
    else:
        ids = np.fromiter((int(k) for k in ratings), dtype=np.int64, count=len(ratings))
        values = np.fromiter((float(v) for v in ratings.values()), np.float32, len(ratings))
    return ids, values


def encode_new_user(
    ratings: dict[int, float] | pa.Table, maps: IdMaps, unknown: str = "raise"
) -> tuple[np.ndarray, np.ndarray, tuple[int, ...]]:
    """``(item_idx, ratings, skipped_item_ids)`` of a new user's ratings in original ids.

    Raises:
        ValueError: No ratings, non-finite ratings, a repeated item id, or (with
            ``unknown="raise"``) item ids the maps do not know, naming the ids.
    """
    ids, values = _as_arrays(ratings)
    if len(ids) == 0:
        raise ValueError("the new user has no ratings")
    if not np.isfinite(values).all():
        raise ValueError(f"non-finite rating(s) for item_id(s) {ids[~np.isfinite(values)]}")
    uniq, counts = np.unique(ids, return_counts=True)
    if (counts > 1).any():
        raise ValueError(f"item_id(s) rated more than once: {uniq[counts > 1].tolist()}")
    known_ids = maps.items.column(S.ITEM_ID).to_numpy()
    known = np.isin(ids, known_ids)
    skipped = tuple(int(i) for i in ids[~known])
    if skipped and unknown == "raise":
        raise ValueError(f"item_id(s) unknown to the model: {list(skipped)[:10]} "
                         f"({len(skipped)} in all); pass unknown='skip' to ignore them")
    if not known.any():
        raise ValueError(f"none of the new user's {len(ids)} item ids is known to the model")
    return maps.to_item_idx(ids[known]).astype(np.int64), values[known], skipped


def _fold_in_mf(model: RatingModel, items: torch.Tensor, r: torch.Tensor,
                cfg: FoldInConfig) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    q = model.item_factors.weight.detach().double()  # [n_items, d]
    b_i = model.item_bias.weight.detach().double().squeeze(1)  # [n_items]
    mu = float(model.global_mean)
    x = torch.cat([q[items], torch.ones(len(items), 1, dtype=q.dtype, device=q.device)], 1)
    y = r.double() - mu - b_i[items]
    lam = max(model.config.l2 if cfg.ridge is None else cfg.ridge, cfg.min_ridge)
    a = x.T @ x + lam * len(items) * torch.eye(x.shape[1], dtype=q.dtype, device=q.device)
    w = torch.linalg.solve(a, x.T @ y)  # [d + 1]
    p_u, b_u = w[:-1], w[-1]
    scores = (mu + b_u + b_i + q @ p_u).float()
    if model.config.clamp:
        scores = scores.clamp(model.config.rating_min, model.config.rating_max)
    params = {"user_factors.weight": p_u.float()[None], "user_bias.weight": b_u.float()[None, None]}
    return scores, params


def _fold_in_bias(model: RatingModel, items: torch.Tensor, r: torch.Tensor
                  ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    mu, b_i = model.global_mean.double(), model.item_bias.double()
    b_u = (r.double() - mu - b_i[items]).sum() / (len(items) + model.config.damping_user)
    scores = (mu + b_u + b_i).float()
    if model.config.clamp:
        scores = scores.clamp(model.config.rating_min, model.config.rating_max)
    return scores, {"user_bias": b_u.float()[None]}


def _fold_in_neural(model: RatingModel, items: torch.Tensor, r: torch.Tensor,
                    cfg: FoldInConfig) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    names = USER_PARAMETERS[model.family]
    table = dict(model.named_parameters())
    gen = torch_generator(cfg.seed)
    means = {n: table[n].detach().mean(0, keepdim=True) for n in names}  # [1, d] each
    fresh = {n: (m + cfg.init_noise * torch.randn(m.shape, generator=gen).to(m.device))
             .requires_grad_(True) for n, m in means.items()}
    opt = torch.optim.Adam(list(fresh.values()), lr=cfg.lr)
    zeros = torch.zeros_like(items)  # the fresh row is row 0 of each 1-row user table
    for _ in range(cfg.steps):
        pred = functional_call(model, fresh, (zeros, items))
        loss = (pred - r).pow(2).mean()
        loss = loss + cfg.prior * sum((fresh[n] - means[n]).pow(2).sum() for n in names)
        # grads of the fresh rows only: the model's own .grad fields stay untouched
        grads = torch.autograd.grad(loss, list(fresh.values()))
        for t, g in zip(fresh.values(), grads, strict=True):
            t.grad = g
        opt.step()
    params = {n: t.detach() for n, t in fresh.items()}
    all_items = torch.arange(model.n_items, device=items.device)
    with torch.no_grad():
        scores = functional_call(model, params, (torch.zeros_like(all_items), all_items))
    return scores.float(), params


def _fold_in_row(model: FoldInModel, items: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    """A row-scored rating model's scores for a new user: their ratings as one input row
    (0 elsewhere) through the network, as a training user's stored row is.  # [n_items]"""
    row = torch.zeros(1, model.n_items, device=items.device)
    row[0, items] = r.float()
    return model.score_all_from(row)[0]


def fold_in(
    model: RatingModel,
    ratings: dict[int, float] | pa.Table,
    maps: IdMaps,
    config: FoldInConfig | None = None,
) -> FoldedUser:
    """Estimate a new user's parameters from their ratings, items fixed (see module doc).

    Args:
        model: A trained model (bias, popularity, mf, mlp, neumf, deepfm, or a ranking model
            as ``serving.lake_models`` serves it); not modified.
        ratings: ``{item_id: rating}`` in original ids, or a table with ``item_id`` and
            ``rating`` columns (e.g. from ``serving.new_user.parse_new_user_ratings``; an
            optional ``timestamp`` column orders a sequence model's input).
        maps: The model's id maps.
        config: Ridge, steps, seed and the unknown-id policy.

    Returns:
        The :class:`FoldedUser`; ``.recommend(maps, movies, k)`` gives their list.

    Raises:
        ValueError: Bad ratings (see :func:`encode_new_user`) or a model family without a
            fold-in rule.
    """
    cfg = config or FoldInConfig()
    check_model_maps(model, maps)
    item_idx, values, skipped = encode_new_user(in_given_order(ratings), maps, cfg.unknown)
    device = model_device(model)
    items = torch.from_numpy(item_idx).to(device)
    r = torch.from_numpy(values).to(device)
    was_training = model.training
    model.eval()
    try:
        if is_ranking(model):
            scores, method, params = fold_in_ranking(model, items, r, cfg)
        elif model.family == "mf":
            method, (scores, params) = "closed_form", _fold_in_mf(model, items, r, cfg)
        elif model.family == "bias":
            method, (scores, params) = "closed_form", _fold_in_bias(model, items, r)
        elif model.family == "popularity":
            method, scores, params = "popularity", model.counts.float().clone(), {}
        elif isinstance(model, FoldInModel):  # the rating autoencoder: encode the row
            method, scores, params = "encoder", _fold_in_row(model, items, r), {}
        elif model.family in USER_PARAMETERS:
            method, (scores, params) = "gradient", _fold_in_neural(model, items, r, cfg)
        else:
            raise ValueError(f"no fold-in rule for model family {model.family!r}")
    finally:
        model.train(was_training)
    fit_rmse = (float((scores[items] - r).double().pow(2).mean().sqrt())
                if model.predicts_ratings else math.nan)
    return FoldedUser(item_idx, values, scores.detach().cpu(), method,
                      {n: t.cpu() for n, t in params.items()}, fit_rmse, skipped)
