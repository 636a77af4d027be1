"""Bias baseline ``r̂(u, i) = μ + b_u + b_i``, fitted in closed form by alternating least squares."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import ClassVar

import torch

from recsys_pipeline.models.base import RatingModel
from recsys_pipeline.models.layers import check_common
from recsys_pipeline.training.data import RatingData

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class BiasConfig:
    """Hyperparameters of :class:`BiasModel`.

    Attributes:
        damping_user: λ_u, shrinks user biases of users with few ratings towards 0.
        damping_item: λ_i, shrinks item biases of items with few ratings towards 0.
        iterations: Alternating sweeps (items first, then users). 1 reproduces LensKit's
            ``Bias`` exactly; more sweeps converge to the damped least-squares optimum.
        tol: Stop early once no bias moves by more than ``tol`` in a sweep.
        rating_min: Lowest rating; predictions are clamped to the range in eval mode.
        rating_max: Highest rating.
        clamp: Clamp eval-mode predictions to ``[rating_min, rating_max]``.
    """

    damping_user: float = 5.0
    damping_item: float = 5.0
    iterations: int = 10
    tol: float = 1e-6
    rating_min: float = 0.5
    rating_max: float = 5.0
    clamp: bool = True

    def __post_init__(self) -> None:
        check_common(self.rating_min, self.rating_max)
        if self.damping_user < 0 or self.damping_item < 0:
            raise ValueError(f"damping_user={self.damping_user} and damping_item="
                             f"{self.damping_item} must be >= 0")
        if self.iterations < 1:
            raise ValueError(f"iterations={self.iterations} must be >= 1")


def _damped_mean(
    index: torch.Tensor, residual: torch.Tensor, n: int, damping: float
) -> torch.Tensor:
    """``b[k] = Σ_{rows of k} residual / (count_k + damping)``; 0 where a row count is 0."""
    total = torch.zeros(n, dtype=residual.dtype, device=residual.device)
    total.index_add_(0, index, residual)
    count = torch.bincount(index, minlength=n).to(residual.dtype)
    denom = count + damping
    return torch.where(denom > 0, total / denom.clamp_min(1e-12), torch.zeros_like(total))


class BiasModel(RatingModel):
    """The classic baseline predictor (Koren 2008 §2.1; LensKit ``Bias``).

    ``r̂(u, i) = μ + b_u + b_i`` with ``μ`` the training mean and the biases minimising
    ``Σ (r_ui − μ − b_u − b_i)² + λ_u Σ b_u² + λ_i Σ b_i²`` by alternating exact updates::

        b_i = Σ_{u ∈ R(i)} (r_ui − μ − b_u) / (|R(i)| + λ_i)
        b_u = Σ_{i ∈ R(u)} (r_ui − μ − b_i) / (|R(u)| + λ_u)

    Each sweep is two ``index_add`` scatters (no loop over users). Not gradient-trained: use
    :meth:`fit`.
    """

    family: ClassVar[str] = "bias"
    config_cls: ClassVar[type] = BiasConfig
    trainable: ClassVar[bool] = False

    def __init__(self, n_users: int, n_items: int, config: BiasConfig | None = None) -> None:
        super().__init__(n_users, n_items, config or BiasConfig())
        self.register_buffer("global_mean", torch.zeros(()))
        self.register_buffer("user_bias", torch.zeros(n_users))  # [n_users]
        self.register_buffer("item_bias", torch.zeros(n_items))  # [n_items]

    @classmethod
    def fit(
        cls, train: RatingData, n_users: int, n_items: int, config: BiasConfig | None = None
    ) -> BiasModel:
        """Fit μ, b_u, b_i on ``train`` (in float64 on ``train``'s device).

        Args:
            train: Training interactions.
            n_users: Number of users (ids ``0..n_users-1``).
            n_items: Number of items.
            config: Damping and sweeps.

        Returns:
            The fitted model on ``train.device``, in eval mode.
        """
        if len(train) == 0:
            raise ValueError("BiasModel.fit: train has no ratings")
        train.validate(n_users=n_users, n_items=n_items)
        model = cls(n_users, n_items, config).to(train.device)
        cfg = model.config
        r = train.ratings.double()
        mu = r.mean()
        b_u = torch.zeros(n_users, dtype=torch.float64, device=train.device)
        b_i = torch.zeros(n_items, dtype=torch.float64, device=train.device)
        for sweep in range(cfg.iterations):
            res_i = r - mu - b_u[train.users]
            new_i = _damped_mean(train.items, res_i, n_items, cfg.damping_item)
            res_u = r - mu - new_i[train.items]
            new_u = _damped_mean(train.users, res_u, n_users, cfg.damping_user)
            change = max(float((new_i - b_i).abs().max()), float((new_u - b_u).abs().max()))
            b_u, b_i = new_u, new_i
            if change <= cfg.tol:
                logger.debug("bias ALS converged after %d sweep(s)", sweep + 1)
                break
        model.global_mean.fill_(float(mu))
        model.user_bias.copy_(b_u.float())
        model.item_bias.copy_(b_i.float())
        return model.eval()

    def _clamp(self, pred: torch.Tensor) -> torch.Tensor:
        if self.config.clamp and not self.training:
            return pred.clamp(self.config.rating_min, self.config.rating_max)
        return pred

    def forward(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """``μ + b_u + b_i`` per pair.  # [B]"""
        return self._clamp(self.global_mean + self.user_bias[users] + self.item_bias[items])

    def _score_all(self, users: torch.Tensor) -> torch.Tensor:
        pred = self.global_mean + self.user_bias[users, None] + self.item_bias[None, :]
        return self._clamp(pred)  # [B, n_items]
