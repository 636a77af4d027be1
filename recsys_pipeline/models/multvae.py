"""Mult-VAE and Mult-DAE (Liang, Krishnan, Hoffman & Jebara 2018): multinomial likelihood."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from recsys_pipeline.models.layers import init_linear
from recsys_pipeline.models.ranking_base import FoldInModel
from recsys_pipeline.training.seed import torch_generator


@dataclass(frozen=True)
class MultVAEConfig:
    """Hyperparameters of :class:`MultVAEModel` (defaults: the paper's [I-600-200-600-I]).

    Attributes:
        hidden: Encoder hidden widths (the decoder mirrors them).
        latent: Dimension of the code ``z``.
        dropout: Dropout on the L2-normalised input (training only).
        anneal_cap: Largest KL weight β.
        total_anneal_steps: Optimizer steps over which β rises linearly from 0 to 1
            (then capped at ``anneal_cap``).
        seed: Seeds the weight init.
        variational: False gives the paper's Mult-DAE: the encoder outputs the code itself
            (no sampling, no KL term; ``anneal_*`` unused), a denoising autoencoder with the
            same multinomial likelihood.
    """

    hidden: tuple[int, ...] = (600,)
    latent: int = 200
    dropout: float = 0.5
    anneal_cap: float = 0.2
    total_anneal_steps: int = 200_000
    seed: int = 0
    variational: bool = True

    def __post_init__(self) -> None:
        if self.latent <= 0 or any(h <= 0 for h in self.hidden):
            raise ValueError(f"latent={self.latent} and hidden={self.hidden} must be positive")
        if not 0 <= self.dropout < 1 or self.anneal_cap < 0 or self.total_anneal_steps < 1:
            raise ValueError(f"dropout={self.dropout} must be in [0, 1), anneal_cap="
                             f"{self.anneal_cap} >= 0, total_anneal_steps >= 1")


def _stack(widths: list[int]) -> nn.ModuleList:
    return nn.ModuleList(nn.Linear(a, b) for a, b in zip(widths[:-1], widths[1:], strict=True))


class MultVAEModel(FoldInModel):
    """Encoder ``q(z|x) = N(μ(x̃), diag σ²(x̃))`` on ``x̃ = dropout(x / ‖x‖₂)``, decoder
    ``π(z) = softmax(f(z))``; tanh between layers.

    Loss (negative ELBO per user, averaged over the batch):
    ``−Σ_i x_i log π_i(z) + β · KL(q(z|x) ‖ N(0, I))``, ``z = μ + σ ⊙ ε``, with
    ``β = min(anneal_cap, step / total_anneal_steps)`` and
    ``KL = ½ Σ_d (σ_d² + μ_d² − 1 − log σ_d²)``. Scores of a (folded-in) user are the decoder
    logits ``f(μ(x / ‖x‖₂))``: the mean code, no dropout. With ``variational=False``
    (Mult-DAE) the encoder gives ``μ`` only and the loss is the multinomial term alone.
    """

    family: ClassVar[str] = "multvae"
    config_cls: ClassVar[type] = MultVAEConfig

    def __init__(self, n_users: int, n_items: int, config: MultVAEConfig | None = None,
                 history_nnz: int = 0) -> None:
        super().__init__(n_users, n_items, config or MultVAEConfig(), history_nnz)
        cfg = self.config
        enc = [n_items, *cfg.hidden, (2 if cfg.variational else 1) * cfg.latent]
        dec = [cfg.latent, *reversed(cfg.hidden), n_items]
        self.encoder = _stack(enc)
        self.decoder = _stack(dec)
        self.input_dropout = nn.Dropout(cfg.dropout)
        gen = torch_generator(cfg.seed)
        for layer in (*self.encoder, *self.decoder):
            init_linear(layer, gen)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(μ, log σ²)`` of ``q(z|x)`` (DAE: ``(code, None)``); dropout in training.  # [B, d]"""
        h = self.input_dropout(F.normalize(x, dim=1))
        for i, layer in enumerate(self.encoder):
            h = layer(h)
            if i < len(self.encoder) - 1:
                h = torch.tanh(h)
        if not self.config.variational:
            return h, None
        mu, logvar = h.chunk(2, dim=1)
        return mu, logvar

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Unnormalised log-probabilities over items.  # [B, n_items]"""
        h = z
        for i, layer in enumerate(self.decoder):
            h = layer(h)
            if i < len(self.decoder) - 1:
                h = torch.tanh(h)
        return h

    def beta(self, step: int) -> float:
        """KL weight at optimizer step ``step``: ``min(anneal_cap, step / total_anneal_steps)``."""
        return min(self.config.anneal_cap, step / self.config.total_anneal_steps)

    def training_loss(self, batch: tuple[torch.Tensor, ...], step: int) -> torch.Tensor:
        """Negative ELBO with the annealed KL weight, averaged over the users of ``batch``.

        Args:
            batch: ``(x,)``, dense interaction rows (binary or counts).  # [B, n_items]
            step: Optimizer steps taken so far (for β).

        Returns:
            The scalar loss.
        """
        (x,) = batch
        mu, logvar = self.encode(x)
        if logvar is None:  # Mult-DAE
            return -(F.log_softmax(self.decode(mu), dim=1) * x).sum(1).mean()
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)  # ε from the seeded stream
        log_pi = F.log_softmax(self.decode(z), dim=1)
        nll = -(log_pi * x).sum(1).mean()
        kl = 0.5 * (logvar.exp() + mu.pow(2) - 1.0 - logvar).sum(1).mean()
        return nll + self.beta(step) * kl

    def _score_dense(self, x: torch.Tensor) -> torch.Tensor:
        mu, _ = self.encode(x)
        return self.decode(mu)
