"""Biased matrix factorisation (SVD-style): ``r̂(u, i) = μ + b_u + b_i + p_u · q_i``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from recsys_pipeline.models.base import RatingModel
from recsys_pipeline.models.layers import check_common, init_normal
from recsys_pipeline.training.data import RatingData
from recsys_pipeline.training.seed import torch_generator


@dataclass(frozen=True)
class MFConfig:
    """Hyperparameters of :class:`MFModel`.

    Attributes:
        n_factors: Latent dimension ``k`` of ``p_u`` and ``q_i``.
        init_std: Std of the N(0, σ²) factor init (biases start at 0).
        l2: Per-sample L2 weight λ: the batch loss adds
            ``λ · mean_batch(‖p_u‖² + ‖q_i‖² + b_u² + b_i²)`` (Funk-SVD style).
        rating_min: Lowest rating.
        rating_max: Highest rating.
        clamp: Clamp eval-mode predictions to ``[rating_min, rating_max]``.
        seed: Seeds the parameter init (through an explicit generator).
    """

    n_factors: int = 32
    init_std: float = 0.05
    l2: float = 0.0
    rating_min: float = 0.5
    rating_max: float = 5.0
    clamp: bool = True
    seed: int = 0

    def __post_init__(self) -> None:
        check_common(self.rating_min, self.rating_max)
        if self.n_factors <= 0 or self.init_std < 0 or self.l2 < 0:
            raise ValueError(f"n_factors={self.n_factors} must be > 0, init_std={self.init_std}"
                             f" and l2={self.l2} >= 0")


class MFModel(RatingModel):
    """Biased MF (Koren, Bell & Volinsky 2009), trained on MSE by ``training.loop.fit``.

    ``r̂(u, i) = μ + b_u + b_i + Σ_f p_uf q_if``; ``μ`` is the training mean, set by
    :meth:`prepare`. ``score_all`` is one matmul: ``μ + b_u 1ᵀ + 1 b_iᵀ + P_B Qᵀ``.
    """

    family: ClassVar[str] = "mf"
    config_cls: ClassVar[type] = MFConfig

    def __init__(self, n_users: int, n_items: int, config: MFConfig | None = None) -> None:
        super().__init__(n_users, n_items, config or MFConfig())
        cfg = self.config
        self.user_factors = nn.Embedding(n_users, cfg.n_factors)
        self.item_factors = nn.Embedding(n_items, cfg.n_factors)
        self.user_bias = nn.Embedding(n_users, 1)
        self.item_bias = nn.Embedding(n_items, 1)
        self.register_buffer("global_mean", torch.tensor((cfg.rating_min + cfg.rating_max) / 2))
        gen = torch_generator(cfg.seed)
        init_normal(self.user_factors.weight, cfg.init_std, gen)
        init_normal(self.item_factors.weight, cfg.init_std, gen)
        nn.init.zeros_(self.user_bias.weight)
        nn.init.zeros_(self.item_bias.weight)

    def prepare(self, train: RatingData) -> None:
        """Set ``μ`` to the training mean rating."""
        self.global_mean.fill_(float(train.ratings.double().mean()))

    def _clamp(self, pred: torch.Tensor) -> torch.Tensor:
        if self.config.clamp and not self.training:
            return pred.clamp(self.config.rating_min, self.config.rating_max)
        return pred

    def forward(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """``μ + b_u + b_i + p_u · q_i`` per pair.  # [B]"""
        dot = (self.user_factors(users) * self.item_factors(items)).sum(-1)
        bias = self.user_bias(users).squeeze(-1) + self.item_bias(items).squeeze(-1)
        return self._clamp(self.global_mean + bias + dot)

    def _score_all(self, users: torch.Tensor) -> torch.Tensor:
        dots = self.user_factors(users) @ self.item_factors.weight.T  # [B, n_items]
        bias = self.user_bias(users) + self.item_bias.weight.T  # [B, 1] + [1, n_items]
        return self._clamp(self.global_mean + bias + dots)

    def penalty(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor | None:
        """``λ · mean_batch(‖p_u‖² + ‖q_i‖² + b_u² + b_i²)``, or None when λ = 0."""
        if self.config.l2 == 0:
            return None
        sq = (
            self.user_factors(users).pow(2).sum(-1)
            + self.item_factors(items).pow(2).sum(-1)
            + self.user_bias(users).squeeze(-1).pow(2)
            + self.item_bias(items).squeeze(-1).pow(2)
        )
        return self.config.l2 * sq.mean()
