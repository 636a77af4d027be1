"""User-based deep autoencoder in the style of NVIDIA's DeepRecommender (Kuchaiev & Ginsburg 2017).

A user's rating row ``x`` (0 = not rated) is encoded by SELU layers to a code, the code gets a
large dropout, and a mirrored decoder reconstructs every item's rating. The loss is the masked
MSE over the *observed* entries only (optionally plus a small weight on unobserved entries as
zeros, for implicit top-N training); dense re-feeding adds a second pass on the model's own
dense output ``f(x)`` as both input and target.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from recsys_pipeline.models.layers import check_common, init_linear
from recsys_pipeline.models.ranking_base import FoldInModel
from recsys_pipeline.training.seed import torch_generator

ACTIVATIONS = {"selu": F.selu, "elu": F.elu, "relu": F.relu, "tanh": torch.tanh}


@dataclass(frozen=True)
class AutoEncoderConfig:
    """Hyperparameters of :class:`AutoEncoderModel`.

    Attributes:
        hidden: Encoder widths; the last one is the code (the decoder mirrors them).
        activation: ``"selu"`` (the paper's choice), ``"elu"``, ``"relu"`` or ``"tanh"``.
        dropout: Dropout on the code layer (the paper uses 0.8).
        constrained: Tie the decoder to the encoder (``W_dec,l = W_enc,lᵀ``; own biases).
        refeed: Dense re-feeding: also fit ``f(f(x)) ≈ f(x)`` on every item.
        unobserved_weight: Weight of unobserved entries as zero targets (0: the paper's masked
            MSE; > 0 turns the model into an implicit-feedback ranker).
        rating_min: Lowest rating (clamp bound).
        rating_max: Highest rating (clamp bound).
        clamp: Clamp eval scores to ``[rating_min, rating_max]`` (turn off for ranking on
            implicit data, where clamping creates ties).
        seed: Seeds the weight init.
    """

    hidden: tuple[int, ...] = (512, 512, 1024)
    activation: str = "selu"
    dropout: float = 0.8
    constrained: bool = False
    refeed: bool = False
    unobserved_weight: float = 0.0
    rating_min: float = 0.5
    rating_max: float = 5.0
    clamp: bool = True
    seed: int = 0

    def __post_init__(self) -> None:
        check_common(self.rating_min, self.rating_max, self.hidden, self.dropout)
        if not self.hidden:
            raise ValueError("hidden must name at least the code layer's width")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"activation={self.activation!r} must be one of {list(ACTIVATIONS)}")
        if self.unobserved_weight < 0:
            raise ValueError(f"unobserved_weight={self.unobserved_weight} must be >= 0")


def masked_mse(pred: torch.Tensor, target: torch.Tensor,
               unobserved_weight: float = 0.0) -> torch.Tensor:
    """Masked MSE: ``Σ m_ui (ŷ_ui − x_ui)² / Σ m_ui`` with ``m = 1`` where ``x ≠ 0``.

    With ``unobserved_weight = w > 0`` the unobserved entries count as zero targets with
    weight ``w``: ``m = 1[x ≠ 0] + w · 1[x = 0]``. With ``w = 0`` unobserved entries affect
    neither the value nor the gradient.

    Args:
        pred: Reconstruction.  # [B, n_items]
        target: Observed ratings, 0 where unobserved.  # [B, n_items]
        unobserved_weight: ``w``.

    Returns:
        The scalar loss.
    """
    observed = (target != 0).to(pred.dtype)
    weight = observed + unobserved_weight * (1.0 - observed) if unobserved_weight else observed
    sq = (pred - target).pow(2) * weight
    return sq.sum() / weight.sum().clamp(min=1.0)


class AutoEncoderModel(FoldInModel):
    """``f(x) = dec(dropout(enc(x)))``, ``enc``/``dec`` SELU stacks, linear output layer.

    Predicts ratings: ``score(u, i) = f(x_u)_i`` (clamped in eval mode when ``clamp``), so
    RMSE/MAE apply as for the rating models; ranking uses the same scores.
    """

    family: ClassVar[str] = "autoencoder"
    config_cls: ClassVar[type] = AutoEncoderConfig
    predicts_ratings: ClassVar[bool] = True

    def __init__(self, n_users: int, n_items: int, config: AutoEncoderConfig | None = None,
                 history_nnz: int = 0) -> None:
        super().__init__(n_users, n_items, config or AutoEncoderConfig(), history_nnz)
        cfg = self.config
        widths = [n_items, *cfg.hidden]
        gen = torch_generator(cfg.seed)
        self.encoder = nn.ModuleList(nn.Linear(a, b) for a, b in zip(widths[:-1], widths[1:],
                                                                     strict=True))
        back = widths[::-1]
        if cfg.constrained:  # only biases: weights are the encoder's, transposed
            self.decoder_bias = nn.ParameterList(nn.Parameter(torch.zeros(b)) for b in back[1:])
            self.decoder = nn.ModuleList()
        else:
            self.decoder = nn.ModuleList(nn.Linear(a, b) for a, b in zip(back[:-1], back[1:],
                                                                         strict=True))
        for layer in (*self.encoder, *self.decoder):
            init_linear(layer, gen)
        self.code_dropout = nn.Dropout(cfg.dropout)
        self._act = ACTIVATIONS[cfg.activation]

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """``f(x)``: every item's predicted rating (dropout on the code in training).

        Args:
            x: Rating rows, 0 where unrated.  # [B, n_items]

        Returns:
            Reconstruction, unclamped.  # [B, n_items]
        """
        h = x
        for layer in self.encoder:
            h = self._act(layer(h))
        h = self.code_dropout(h)
        n = len(self.encoder)
        for j in range(n):
            if self.config.constrained:
                h = F.linear(h, self.encoder[n - 1 - j].weight.T, self.decoder_bias[j])
            else:
                h = self.decoder[j](h)
            if j < n - 1:
                h = self._act(h)
        return h

    def training_loss(self, batch: tuple[torch.Tensor, ...], step: int) -> torch.Tensor:
        """Masked MSE of ``f(x)`` against ``x``; with ``refeed`` plus the dense MSE of
        ``f(f(x)*)`` against ``f(x)*`` (``*``: detached, a fixed target), in the same step."""
        (x,) = batch
        y = self.reconstruct(x)
        loss = masked_mse(y, x, self.config.unobserved_weight)
        if self.config.refeed:
            dense = y.detach()
            loss = loss + F.mse_loss(self.reconstruct(dense), dense)
        return loss

    def _score_dense(self, x: torch.Tensor) -> torch.Tensor:
        y = self.reconstruct(x)
        if self.config.clamp:
            y = y.clamp(self.config.rating_min, self.config.rating_max)
        return y
