"""SASRec-style next-item model: causal self-attention over the sequence (Kang & McAuley 2018)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from recsys_pipeline.models.layers import init_normal
from recsys_pipeline.models.next_item_loss import (
    check_loss_fields,
    next_item_loss,
    sampling_probs,
)
from recsys_pipeline.models.ranking_base import SequenceModel
from recsys_pipeline.training.seed import torch_generator


@dataclass(frozen=True)
class SASRecConfig:
    """Hyperparameters of :class:`SASRecModel`.

    Attributes:
        max_len: Positions with a learned embedding; longer inputs keep their last ``max_len``.
        dim: Model width ``d`` (item and position embeddings).
        n_blocks: Transformer blocks.
        n_heads: Attention heads (must divide ``dim``).
        ff_mult: Feed-forward width as a multiple of ``dim``.
        dropout: Dropout on embeddings, attention and feed-forward outputs.
        loss: ``"ce"`` (full softmax, default) or ``"sampled"`` (popularity negatives).
        n_negatives: Negatives per batch for ``"sampled"``.
        sample_alpha: Popularity exponent α of the negative sampler.
        seed: Seeds the weight init.
    """

    max_len: int = 200
    dim: int = 64
    n_blocks: int = 2
    n_heads: int = 1
    ff_mult: int = 1
    dropout: float = 0.2
    loss: str = "ce"
    n_negatives: int = 256
    sample_alpha: float = 0.75
    seed: int = 0

    def __post_init__(self) -> None:
        for key in ("max_len", "dim", "n_blocks", "n_heads", "ff_mult"):
            if getattr(self, key) < 1:
                raise ValueError(f"{key}={getattr(self, key)} must be >= 1")
        if self.dim % self.n_heads:
            raise ValueError(f"n_heads={self.n_heads} must divide dim={self.dim}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout={self.dropout} must be in [0, 1)")
        check_loss_fields(self.loss, self.n_negatives, self.sample_alpha)


def attention_mask(tokens: torch.Tensor, n_heads: int) -> torch.Tensor:
    """Boolean mask (True = blocked) letting position ``i`` see real positions ``j <= i``.

    Each position always sees itself, so a padding query never has an all-blocked row (which
    would give NaN); padding outputs are never used.

    Returns:
        Mask per batch row and head.  # [B * n_heads, L, L]
    """
    length = tokens.shape[1]
    causal = torch.ones(length, length, dtype=torch.bool, device=tokens.device).tril()
    allowed = causal & (tokens != 0)[:, None, :]
    allowed |= torch.eye(length, dtype=torch.bool, device=tokens.device)
    return (~allowed).repeat_interleave(n_heads, dim=0)


class SASRecModel(SequenceModel):
    """``h = Transformer(E[tokens]·√d + P[positions])`` with a causal mask; logits ``h · E_j``.

    Pre-norm blocks (``nn.TransformerEncoderLayer(norm_first=True)``) and a final LayerNorm;
    the output layer shares the item embedding ``E``. Positions are right-aligned: the most
    recent item always has position ``max_len − 1``, whatever the input width. Training
    predicts the next token at every real position.
    """

    family: ClassVar[str] = "sasrec"
    config_cls: ClassVar[type] = SASRecConfig

    def __init__(self, n_vocab: int, config: SASRecConfig | None = None) -> None:
        super().__init__(n_vocab, config or SASRecConfig())
        cfg = self.config
        self.item_embedding = nn.Embedding(self.n_tokens, cfg.dim, padding_idx=0)
        self.position_embedding = nn.Embedding(cfg.max_len, cfg.dim)
        self.dropout = nn.Dropout(cfg.dropout)
        gen = torch_generator(cfg.seed)
        layer = nn.TransformerEncoderLayer(cfg.dim, cfg.n_heads, cfg.dim * cfg.ff_mult,
                                           cfg.dropout, activation="gelu", batch_first=True,
                                           norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, cfg.n_blocks, norm=nn.LayerNorm(cfg.dim),
                                             enable_nested_tensor=False)
        self.register_buffer("token_counts", torch.zeros(self.n_tokens))  # [n_tokens]
        with torch.no_grad():
            # torch draws some of these from the global RNG: re-draw all from the seed
            for name, p in self.encoder.named_parameters():
                if "norm" in name:
                    continue  # LayerNorm: ones and zeros
                if p.ndim == 2:  # attention and feed-forward matrices: Xavier
                    bound = math.sqrt(6.0 / (p.shape[0] + p.shape[1]))
                    p.uniform_(-bound, bound, generator=gen)
                else:
                    p.zero_()
        init_normal(self.item_embedding.weight, cfg.dim ** -0.5, gen)
        init_normal(self.position_embedding.weight, 0.02, gen)
        with torch.no_grad():
            self.item_embedding.weight[0].zero_()

    def prepare_training(self, data: object) -> None:
        """Ranking-loop hook: count token occurrences for the negative sampler."""
        tokens = data.tensors[0]  # type: ignore[attr-defined]
        self.token_counts.copy_(torch.bincount(tokens.flatten(), minlength=self.n_tokens)
                                .float().to(self.token_counts.device))

    def _states(self, tokens: torch.Tensor) -> torch.Tensor:
        """Hidden state at every position of left-padded rows.  # [B, L, d]"""
        cfg = self.config
        tokens = tokens[:, -cfg.max_len :]
        length = tokens.shape[1]
        positions = torch.arange(cfg.max_len - length, cfg.max_len, device=tokens.device)
        x = self.item_embedding(tokens) * math.sqrt(cfg.dim) + self.position_embedding(positions)
        x = self.dropout(x) * (tokens != 0).unsqueeze(-1)
        return self.encoder(x, mask=attention_mask(tokens, cfg.n_heads))

    def training_loss(self, batch: tuple[torch.Tensor, ...], step: int) -> torch.Tensor:
        """Next-token loss at every real position of left-padded rows.

        Args:
            batch: ``(tokens,)``, left-padded rows with >= 2 items.  # [B, L]
            step: Unused (the loop's step counter).
        """
        (tokens,) = batch
        tokens = tokens[:, -(self.config.max_len + 1) :]
        # inputs drop the last item, so the newest input sits at position max_len - 1, as the
        # newest item does when scoring (SASRec's alignment)
        inputs, targets = tokens[:, :-1], tokens[:, 1:]
        valid = (targets != 0) & (inputs != 0)
        probs = sampling_probs(self.token_counts, self.config.sample_alpha)
        return next_item_loss(self._states(inputs)[valid], targets[valid],
                              self.item_embedding.weight, None, self.config.loss, probs,
                              self.config.n_negatives)

    def _next_logits(self, tokens: torch.Tensor) -> torch.Tensor:
        return self._states(tokens)[:, -1] @ self.item_embedding.weight.T  # [B, n_tokens]
