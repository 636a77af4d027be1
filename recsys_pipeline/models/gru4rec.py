"""GRU4Rec-style next-item model (Hidasi et al. 2016; Hidasi & Karatzoglou 2018)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from recsys_pipeline.models.layers import init_normal
from recsys_pipeline.models.next_item_loss import (
    check_loss_fields,
    next_item_loss,
    sampling_probs,
)
from recsys_pipeline.models.ranking_base import SequenceModel, left_to_right_padding
from recsys_pipeline.training.seed import torch_generator


@dataclass(frozen=True)
class GRU4RecConfig:
    """Hyperparameters of :class:`GRU4RecModel`.

    Attributes:
        embedding_dim: Input item embedding width.
        hidden: GRU state width (also the output embedding width).
        n_layers: Stacked GRU layers.
        dropout: Dropout on the input embeddings and on the GRU output.
        loss: ``"ce"`` (full softmax) or ``"sampled"`` (popularity-sampled negatives).
        n_negatives: Negatives per batch for ``"sampled"``.
        sample_alpha: Popularity exponent α of the negative sampler (0: uniform).
        seed: Seeds the weight init.
        tied: GRU4Rec's "constrained embedding" (Hidasi's reference implementation): the
            input embedding is the output embedding, so ``embedding_dim`` must equal
            ``hidden``; halves the item parameters.
    """

    embedding_dim: int = 64
    hidden: int = 100
    n_layers: int = 1
    dropout: float = 0.1
    loss: str = "ce"
    n_negatives: int = 256
    sample_alpha: float = 0.75
    seed: int = 0
    tied: bool = False

    def __post_init__(self) -> None:
        if min(self.embedding_dim, self.hidden, self.n_layers) < 1:
            raise ValueError(f"embedding_dim={self.embedding_dim}, hidden={self.hidden} and "
                             f"n_layers={self.n_layers} must be >= 1")
        if self.tied and self.embedding_dim != self.hidden:
            raise ValueError(f"tied embeddings need embedding_dim={self.embedding_dim} equal "
                             f"to hidden={self.hidden}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout={self.dropout} must be in [0, 1)")
        check_loss_fields(self.loss, self.n_negatives, self.sample_alpha)


class GRU4RecModel(SequenceModel):
    """Token embedding → GRU → ``h_t · W_out,j + b_j`` for every token ``j``.

    Sequences arrive left-padded; they are moved to right padding and packed
    (``pack_padded_sequence``) so the GRU never steps over padding. Training predicts the next
    token at every position of every sequence (all prefixes at once).
    """

    family: ClassVar[str] = "gru4rec"
    config_cls: ClassVar[type] = GRU4RecConfig

    def __init__(self, n_vocab: int, config: GRU4RecConfig | None = None) -> None:
        super().__init__(n_vocab, config or GRU4RecConfig())
        cfg = self.config
        self.out_embedding = nn.Embedding(self.n_tokens, cfg.hidden)
        self.embedding = (self.out_embedding if cfg.tied else
                          nn.Embedding(self.n_tokens, cfg.embedding_dim, padding_idx=0))
        self.gru = nn.GRU(cfg.embedding_dim, cfg.hidden, cfg.n_layers, batch_first=True,
                          dropout=cfg.dropout if cfg.n_layers > 1 else 0.0)
        self.dropout = nn.Dropout(cfg.dropout)
        self.out_bias = nn.Parameter(torch.zeros(self.n_tokens))
        self.register_buffer("token_counts", torch.zeros(self.n_tokens))  # [n_tokens]
        gen = torch_generator(cfg.seed)
        if not cfg.tied:
            init_normal(self.embedding.weight, 0.05, gen)
        init_normal(self.out_embedding.weight, 0.05, gen)
        with torch.no_grad():
            self.embedding.weight[0].zero_()
            bound = cfg.hidden ** -0.5
            for p in self.gru.parameters():
                p.uniform_(-bound, bound, generator=gen)

    def prepare_training(self, data: object) -> None:
        """Ranking-loop hook: count token occurrences for the negative sampler."""
        tokens = data.tensors[0]  # type: ignore[attr-defined]
        self.token_counts.copy_(torch.bincount(tokens.flatten(), minlength=self.n_tokens)
                                .float().to(self.token_counts.device))

    def _states(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """GRU states over right-padded rows.

        Returns:
            ``(states, right_padded_tokens, lengths)``.  # [B, L, H], [B, L], [B]
        """
        right, lengths = left_to_right_padding(tokens)
        emb = self.dropout(self.embedding(right))
        packed = pack_padded_sequence(emb, lengths.cpu(), batch_first=True, enforce_sorted=False)
        out, _ = self.gru(packed)
        states, _ = pad_packed_sequence(out, batch_first=True, total_length=tokens.shape[1])
        return self.dropout(states), right, lengths

    def training_loss(self, batch: tuple[torch.Tensor, ...], step: int) -> torch.Tensor:
        """Next-token loss at every position: state after ``t+1`` items predicts item ``t+2``.

        Args:
            batch: ``(tokens,)``, left-padded rows with >= 2 items.  # [B, L]
            step: Unused (the loop's step counter).
        """
        (tokens,) = batch
        states, right, _ = self._states(tokens)
        targets = right[:, 1:]
        valid = targets != 0
        probs = sampling_probs(self.token_counts, self.config.sample_alpha)
        return next_item_loss(states[:, :-1][valid], targets[valid], self.out_embedding.weight,
                              self.out_bias, self.config.loss, probs, self.config.n_negatives)

    def _next_logits(self, tokens: torch.Tensor) -> torch.Tensor:
        states, _, lengths = self._states(tokens)
        last = states[torch.arange(tokens.shape[0], device=tokens.device), lengths - 1]
        return last @ self.out_embedding.weight.T + self.out_bias  # [B, n_tokens]
