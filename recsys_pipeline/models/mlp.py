"""MLP rating model over concatenated user and item embeddings."""

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
class MLPConfig:
    """Hyperparameters of :class:`MLPModel`.

    ``hidden=(64,)`` is the "embeddings + two linear layers" design; deeper tuples give the
    "two-tower concat" design (a user tower and an item tower embedding, concatenated, then an
    MLP).

    Attributes:
        user_dim: User embedding width.
        item_dim: Item embedding width.
        hidden: Hidden layer widths (each Linear → norm → ReLU → Dropout).
        dropout: Dropout after each hidden activation.
        norm: ``"none"``, ``"batch"`` or ``"layer"`` normalisation after each hidden Linear.
        init_std: Std of the N(0, σ²) embedding init.
        rating_min: Lowest rating (output range).
        rating_max: Highest rating.
        seed: Seeds the parameter init.
    """

    user_dim: int = 32
    item_dim: int = 32
    hidden: tuple[int, ...] = (64, 32)
    dropout: float = 0.1
    norm: str = "none"
    init_std: float = 0.1  # larger than MF's: a concat MLP escapes its mean plateau sooner
    rating_min: float = 0.5
    rating_max: float = 5.0
    seed: int = 0

    def __post_init__(self) -> None:
        check_common(self.rating_min, self.rating_max, self.hidden, self.dropout, self.norm)
        if self.user_dim <= 0 or self.item_dim <= 0:
            raise ValueError(f"user_dim={self.user_dim} and item_dim={self.item_dim} must be > 0")


class MLPModel(RatingModel):
    """``r̂(u, i) = min + (max − min) · σ(w · MLP([e_u ; e_i]) + b)``.

    The output bias starts at the logit of the training mean (:meth:`prepare`), so training
    starts from the global-mean predictor.
    """

    family: ClassVar[str] = "mlp"
    config_cls: ClassVar[type] = MLPConfig

    def __init__(self, n_users: int, n_items: int, config: MLPConfig | None = None) -> None:
        super().__init__(n_users, n_items, config or MLPConfig())
        cfg = self.config
        self.user_embedding = nn.Embedding(n_users, cfg.user_dim)
        self.item_embedding = nn.Embedding(n_items, cfg.item_dim)
        in_dim = cfg.user_dim + cfg.item_dim
        self.tower = mlp_tower(in_dim, cfg.hidden, cfg.dropout, cfg.norm)
        self.output = nn.Linear(cfg.hidden[-1] if cfg.hidden else in_dim, 1)
        gen = torch_generator(cfg.seed)
        init_normal(self.user_embedding.weight, cfg.init_std, gen)
        init_normal(self.item_embedding.weight, cfg.init_std, gen)
        init_module_linears(self.tower, gen)
        init_linear(self.output, gen)

    def prepare(self, train: RatingData) -> None:
        """Start the output at the training mean rating."""
        mean = float(train.ratings.double().mean())
        self.output.bias.data.fill_(range_logit(mean, self.config.rating_min,
                                                self.config.rating_max))

    def forward(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """Predicted rating per pair.  # [B]"""
        x = torch.cat([self.user_embedding(users), self.item_embedding(items)], dim=-1)
        logit = self.output(self.tower(x)).squeeze(-1)
        return to_rating_range(logit, self.config.rating_min, self.config.rating_max)
