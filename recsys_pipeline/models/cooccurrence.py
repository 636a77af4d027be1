"""Last-item co-occurrence baseline for next-item prediction (a first-order Markov chain)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from recsys_pipeline.models.ranking_base import SequenceModel
from recsys_pipeline.training.ranking_data import CSRTensors

_CSR = ("follow_indptr", "follow_indices", "follow_counts")


@dataclass(frozen=True)
class CooccurrenceConfig:
    """Hyperparameters of :class:`CooccurrenceModel`.

    Attributes:
        window: Count ``j`` when it comes 1..``window`` positions after ``i`` (1: immediate
            successors only).
        popularity_backoff: Break ties (and score items never seen after ``i``) by training
            popularity, scaled into [0, 1) so it never outranks one co-occurrence.
    """

    window: int = 1
    popularity_backoff: bool = True

    def __post_init__(self) -> None:
        if self.window < 1:
            raise ValueError(f"window={self.window} must be >= 1")


class CooccurrenceModel(SequenceModel):
    """``score(j | sequence) = C[last, j] (+ pop_j / (max pop + 1))``.

    ``C[i, j]`` counts how often token ``j`` follows token ``i`` (within ``window`` steps) in
    the training sequences; ``last`` is the sequence's most recent token. ``C`` is kept sparse
    (CSR buffers). Not gradient-trained: use :meth:`fit`.
    """

    family: ClassVar[str] = "cooccurrence"
    config_cls: ClassVar[type] = CooccurrenceConfig

    def __init__(self, n_vocab: int, config: CooccurrenceConfig | None = None,
                 nnz: int = 0) -> None:
        super().__init__(n_vocab, config or CooccurrenceConfig())
        self.register_buffer("follow_indptr", torch.zeros(self.n_tokens + 1, dtype=torch.long))
        self.register_buffer("follow_indices", torch.zeros(nnz, dtype=torch.long))
        self.register_buffer("follow_counts", torch.zeros(nnz))
        self.register_buffer("popularity", torch.zeros(self.n_tokens))  # [n_tokens]

    @classmethod
    def fit(cls, tokens: np.ndarray | torch.Tensor, n_vocab: int,
            config: CooccurrenceConfig | None = None) -> CooccurrenceModel:
        """Count successions in left-padded training rows.

        Args:
            tokens: Training token rows, 0 = padding.  # [n, L]
            n_vocab: Vocabulary size (tokens 1..n_vocab).
            config: Window and backoff.

        Returns:
            The fitted model (CPU, eval mode).
        """
        tokens = torch.as_tensor(np.asarray(tokens)).long()
        if tokens.numel() and int(tokens.max()) > n_vocab:
            raise ValueError(f"token {int(tokens.max())} > n_vocab={n_vocab}")
        model = cls(n_vocab, config)
        n = model.n_tokens
        keys = []
        for offset in range(1, min(model.config.window, tokens.shape[1] - 1) + 1):
            prev, nxt = tokens[:, :-offset], tokens[:, offset:]
            keep = (prev != 0) & (nxt != 0)
            keys.append(prev[keep] * n + nxt[keep])
        key, counts = torch.unique(torch.cat(keys) if keys else torch.zeros(0, dtype=torch.long),
                                   return_counts=True)  # sorted: row-major CSR order
        rows = key // n
        model.follow_indptr[1:] = torch.cumsum(torch.bincount(rows, minlength=n), 0)
        model.follow_indices = key % n
        model.follow_counts = counts.float()
        model.popularity.copy_(torch.bincount(tokens.flatten(), minlength=n).float())
        model.popularity[0] = 0.0
        return model.eval()

    def init_args(self) -> dict[str, Any]:
        return {"nnz": int(self.follow_indices.numel())}

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str,
                              *args: Any, **kwargs: Any) -> None:
        for name in _CSR:  # the matrix's nnz varies: resize before copying
            saved, current = state_dict.get(prefix + name), getattr(self, name)
            if saved is not None and saved.shape != current.shape:
                setattr(self, name, torch.empty(saved.shape, dtype=current.dtype,
                                                device=current.device))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def _next_logits(self, tokens: torch.Tensor) -> torch.Tensor:
        follow = CSRTensors(self.follow_indptr, self.follow_indices, self.follow_counts,
                            self.n_tokens)
        scores = follow.dense_rows(tokens[:, -1])  # [B, n_tokens]
        if self.config.popularity_backoff:
            scores += self.popularity / (self.popularity.max() + 1.0)
        return scores


class PopularityNext(nn.Module):
    """The popularity baseline of the next-item protocol: every row scores each token by how
    often it occurs in the training sequences (a fitted co-occurrence model's
    ``popularity``), whatever came before; padding scores -inf.

    Not a model family of its own (nothing to register or serve): the co-occurrence asset
    scores it beside itself so that the ranking leaderboard's next-item block has the
    popularity row the protocol is read against.
    """

    def __init__(self, popularity: torch.Tensor) -> None:
        super().__init__()
        scores = popularity.detach().float().clone()
        scores[0] = float("-inf")
        self.n_vocab = int(scores.numel()) - 1
        self.register_buffer("scores", scores)  # [n_tokens]

    @classmethod
    def of(cls, model: CooccurrenceModel) -> PopularityNext:
        """The baseline counted from the same training sequences as ``model``."""
        return cls(model.popularity)

    def score_next(self, tokens: torch.Tensor | np.ndarray) -> torch.Tensor:
        """The popularity row for each input row.  # [B, n_tokens]"""
        return self.scores.repeat(int(np.shape(tokens)[0]), 1)
