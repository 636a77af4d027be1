"""NeuMF (He et al. 2017): a GMF branch and an MLP branch fused by one output layer."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from recsys_pipeline.models.base import RatingModel
from recsys_pipeline.models.layers import (
    check_common,
    init_linear,
    init_module_linears,
    init_normal,
    mlp_tower,
    range_logit,
    to_rating_range,
)
from recsys_pipeline.training.data import RatingData
from recsys_pipeline.training.seed import torch_generator


@dataclass(frozen=True)
class NeuMFConfig:
    """Hyperparameters of :class:`NeuMFModel`.

    Attributes:
        gmf_dim: Width of the GMF user/item embeddings.
        mlp_dim: Width of the MLP-branch user/item embeddings (each; the MLP sees 2×).
        hidden: MLP-branch hidden widths.
        dropout: Dropout after each hidden activation.
        norm: ``"none"``, ``"batch"`` or ``"layer"``.
        init_std: Std of the N(0, σ²) embedding init.
        rating_min: Lowest rating (output range).
        rating_max: Highest rating.
        seed: Seeds the parameter init.
    """

    gmf_dim: int = 16
    mlp_dim: int = 32
    hidden: tuple[int, ...] = (64, 32, 16)
    dropout: float = 0.1
    norm: str = "none"
    init_std: float = 0.05
    rating_min: float = 0.5
    rating_max: float = 5.0
    seed: int = 0

    def __post_init__(self) -> None:
        check_common(self.rating_min, self.rating_max, self.hidden, self.dropout, self.norm)
        if self.gmf_dim <= 0 or self.mlp_dim <= 0:
            raise ValueError(f"gmf_dim={self.gmf_dim} and mlp_dim={self.mlp_dim} must be > 0")


class NeuMFModel(RatingModel):
    """NeuMF for explicit ratings.

    ``φ_GMF = p_u^G ⊙ q_i^G``, ``φ_MLP = MLP([p_u^M ; q_i^M])``,
    ``r̂(u, i) = min + (max − min) · σ(hᵀ [φ_GMF ; φ_MLP] + b)``. The paper's sigmoid
    predicts an implicit-feedback probability; here it is stretched onto the rating range and
    trained on MSE.
    """

    family: ClassVar[str] = "neumf"
    config_cls: ClassVar[type] = NeuMFConfig

    def __init__(self, n_users: int, n_items: int, config: NeuMFConfig | None = None) -> None:
        super().__init__(n_users, n_items, config or NeuMFConfig())
        cfg = self.config
        self.gmf_user = nn.Embedding(n_users, cfg.gmf_dim)
        self.gmf_item = nn.Embedding(n_items, cfg.gmf_dim)
        self.mlp_user = nn.Embedding(n_users, cfg.mlp_dim)
        self.mlp_item = nn.Embedding(n_items, cfg.mlp_dim)
        self.tower = mlp_tower(2 * cfg.mlp_dim, cfg.hidden, cfg.dropout, cfg.norm)
        mlp_out = cfg.hidden[-1] if cfg.hidden else 2 * cfg.mlp_dim
        self.output = nn.Linear(cfg.gmf_dim + mlp_out, 1)
        gen = torch_generator(cfg.seed)
        for emb in (self.gmf_user, self.gmf_item, self.mlp_user, self.mlp_item):
            init_normal(emb.weight, cfg.init_std, gen)
        init_module_linears(self.tower, gen)
        init_linear(self.output, gen)

    def prepare(self, train: RatingData) -> None:
        """Start the output at the training mean rating."""
        mean = float(train.ratings.double().mean())
        self.output.bias.data.fill_(range_logit(mean, self.config.rating_min,
                                                self.config.rating_max))

    def forward(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """Predicted rating per pair.  # [B]"""
        gmf = self.gmf_user(users) * self.gmf_item(items)  # [B, gmf_dim]
        mlp = self.tower(torch.cat([self.mlp_user(users), self.mlp_item(items)], dim=-1))
        logit = self.output(torch.cat([gmf, mlp], dim=-1)).squeeze(-1)
        return to_rating_range(logit, self.config.rating_min, self.config.rating_max)
