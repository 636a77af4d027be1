"""Bases of the ranking models: fold-in (user-row) models, next-item models, and loading.

* :class:`FoldInModel` (autoencoder, Mult-VAE, EASE): scores come from a user's interaction
  row, so :meth:`FoldInModel.score_all_from` scores users never seen in training (strong
  generalization: fold the user in from a few interactions). The model keeps its training
  rows as CSR buffers, so the shared ``score`` / ``score_all(users)`` of
  :class:`~recsys_pipeline.models.base.RatingModel` work for training users (like RecBole's
  ``full_sort_predict``).
* :class:`SequenceModel` (GRU4Rec, SASRec, co-occurrence): scores the next token of left-padded
  token sequences (``data.sessions``: token ``t`` is item ``vocab[t-1]``, 0 is padding).

Both save with ``models.base.save_model`` (``config.json`` + ``state_dict.pt``, no pickle) and
load with :func:`load_ranking_model`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import scipy.sparse as sp
import torch
from torch import nn

from recsys_pipeline.models.base import (
    SCORE_ALL_PAIRS,
    RatingModel,
    load_saved,
    save_model,
)
from recsys_pipeline.training.ranking_data import CSRTensors

RANKING_FAMILIES: tuple[str, ...] = (
    "autoencoder", "multvae", "ease", "gru4rec", "sasrec", "two_tower", "cooccurrence",
)


class FoldInModel(RatingModel):
    """A model scoring users from their interaction rows ``x`` (``[B, n_items]``).

    Subclasses implement :meth:`_score_dense` (deterministic inference from dense rows).
    Training rows live in the buffers ``history_indptr`` / ``history_indices`` /
    ``history_values`` (CSR, ``n_users`` rows), set by :meth:`set_history`.
    """

    trainable: ClassVar[bool] = False  # not trained by the MSE rating loop
    predicts_ratings: ClassVar[bool] = False

    def __init__(self, n_users: int, n_items: int, config: Any, history_nnz: int = 0) -> None:
        super().__init__(n_users, n_items, config)
        self.register_buffer("history_indptr", torch.zeros(n_users + 1, dtype=torch.long))
        self.register_buffer("history_indices", torch.zeros(history_nnz, dtype=torch.long))
        self.register_buffer("history_values", torch.zeros(history_nnz))

    def set_history(self, train: sp.spmatrix | CSRTensors) -> None:
        """Keep the training rows (``[n_users, n_items]``) for ``score_all(users)``."""
        csr = train if isinstance(train, CSRTensors) else CSRTensors.from_scipy(train)
        if (csr.n_rows, csr.n_cols) != (self.n_users, self.n_items):
            raise ValueError(f"history is {csr.n_rows} x {csr.n_cols}, the model is "
                             f"{self.n_users} x {self.n_items} (users x items)")
        device = self.history_indptr.device
        self.history_indptr = csr.indptr.to(device)
        self.history_indices = csr.indices.to(device)
        self.history_values = csr.values.to(device)

    def prepare_training(self, data: object) -> None:
        """Ranking-loop hook: keep the epoch data's rows as the history when they are CSR."""
        if isinstance(data, CSRTensors):
            self.set_history(data)

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str,
                              *args: Any, **kwargs: Any) -> None:
        # the history's length varies with the data: resize before copying (e.g. on resume)
        for name in ("history_indptr", "history_indices", "history_values"):
            saved = state_dict.get(prefix + name)
            current = getattr(self, name)
            if saved is not None and saved.shape != current.shape:
                setattr(self, name, torch.empty(saved.shape, dtype=current.dtype,
                                                device=current.device))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def history(self) -> CSRTensors:
        """The stored training rows."""
        return CSRTensors(self.history_indptr, self.history_indices, self.history_values,
                          self.n_items)

    def init_args(self) -> dict[str, Any]:
        return {"history_nnz": int(self.history_indices.numel())}

    @classmethod
    def from_init_args(cls, n_users: int, n_items: int, config: Any,
                       init_args: dict[str, Any]) -> FoldInModel:
        return cls(n_users, n_items, config, history_nnz=int(init_args["history_nnz"]))

    def _device(self) -> torch.device:
        return self.history_indptr.device

    @classmethod
    def load(cls, directory: str | os.PathLike[str],
             map_location: str | torch.device = "cpu") -> FoldInModel:
        """Load a model saved by :meth:`save`, checking it is a ``cls``."""
        return check_loaded(load_ranking_model(directory, map_location), cls, directory)

    def score_all_from(self, inputs: sp.spmatrix | np.ndarray | torch.Tensor) -> torch.Tensor:
        """Fold users in from their interaction rows; no weight or stored row is touched.

        Runs the inference path (no dropout, the VAE's mean code) whatever the module mode.

        Args:
            inputs: scipy CSR rows, or dense rows (numpy or torch).  # [B, n_items]

        Returns:
            Scores of every item for each input row.  # [B, n_items] float32
        """
        if sp.issparse(inputs):
            x = CSRTensors.from_scipy(inputs, self._device())
            if x.n_cols != self.n_items:
                raise ValueError(f"inputs have {x.n_cols} item columns, model has {self.n_items}")
            dense = x.dense_rows(torch.arange(x.n_rows, device=self._device()))
        else:
            dense = torch.as_tensor(inputs, dtype=torch.float32, device=self._device())
        if dense.ndim != 2 or dense.shape[1] != self.n_items:
            raise ValueError(f"inputs must be [B, n_items={self.n_items}], got "
                             f"{tuple(dense.shape)}")
        was_training = self.training
        self.eval()
        try:
            with torch.no_grad():
                return self._score_dense(dense).float()
        finally:
            self.train(was_training)

    def _score_dense(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _score_all(self, users: torch.Tensor) -> torch.Tensor:
        return self.score_all_from(self.history().dense_rows(users.to(self._device())))

    def forward(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """Score of each pair: each distinct user's row scored once, then its items picked.

        Distinct users are scored in chunks of ``SCORE_ALL_PAIRS // n_items`` rows, so a large
        batch of pairs never materialises more than about ``SCORE_ALL_PAIRS`` scores.  # [B]
        """
        users, items = users.to(self._device()), items.to(self._device())
        uniq, inverse = torch.unique(users, return_inverse=True)
        out = torch.empty(users.shape[0], device=self._device())
        chunk = max(1, SCORE_ALL_PAIRS // self.n_items)
        for start in range(0, uniq.numel(), chunk):
            rows = self._score_all(uniq[start : start + chunk])  # [C, n_items]
            sel = (inverse >= start) & (inverse < start + chunk)
            out[sel] = rows[inverse[sel] - start, items[sel]]
        return out


def left_to_right_padding(tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Move the padding of left-padded rows to the right (order of real tokens kept).

    Args:
        tokens: Left-padded tokens, 0 = padding.  # [B, L]

    Returns:
        ``(right_padded, lengths)``.  # [B, L], [B]
    """
    lengths = (tokens != 0).sum(1)
    pad = tokens.shape[1] - lengths
    cols = (torch.arange(tokens.shape[1], device=tokens.device) + pad[:, None]) % tokens.shape[1]
    return tokens.gather(1, cols), lengths


class SequenceModel(nn.Module):
    """Base of next-item models over a token vocabulary (``n_vocab`` items, token 0 = padding).

    Subclasses implement ``_next_logits(tokens) -> [B, n_tokens]`` (scores of the token that
    follows each left-padded row) and, when gradient-trained, ``training_loss``.
    """

    family: ClassVar[str] = ""
    config_cls: ClassVar[type]

    def __init__(self, n_vocab: int, config: Any) -> None:
        super().__init__()
        if n_vocab <= 0:
            raise ValueError(f"n_vocab={n_vocab} must be positive")
        if not isinstance(config, self.config_cls):
            raise ValueError(f"{type(self).__name__} needs a {self.config_cls.__name__}, "
                             f"got {type(config).__name__}")
        self.n_vocab = int(n_vocab)
        self.n_users = 0  # not user-indexed: the file format's n_users field stays 0
        self.n_items = self.n_vocab
        self.config = config

    @property
    def n_tokens(self) -> int:
        """Vocabulary plus the padding token."""
        return self.n_vocab + 1

    def score_next(self, tokens: torch.Tensor | np.ndarray) -> torch.Tensor:
        """Scores of the next token after each left-padded row; column 0 (padding) is -inf.

        Args:
            tokens: Left-padded token rows, each with at least one real token.  # [B, L]

        Returns:
            ``out[b, t]``: score of token ``t`` following row ``b``.  # [B, n_tokens]
        """
        device = module_device(self)
        tokens = torch.as_tensor(tokens, device=device).long()
        if tokens.ndim != 2:
            raise ValueError(f"tokens must be [B, L], got shape {tuple(tokens.shape)}")
        if tokens.numel() and (int(tokens.min()) < 0 or int(tokens.max()) > self.n_vocab):
            raise ValueError(f"unknown token {int(tokens.max())}: the model knows tokens "
                             f"0..{self.n_vocab}")
        if tokens.shape[0] and bool((tokens[:, -1] == 0).any()):
            raise ValueError("rows must be left-padded with their last column a real token")
        was_training = self.training
        self.eval()
        try:
            with torch.no_grad():
                scores = self._next_logits(tokens).float()
        finally:
            self.train(was_training)
        scores[:, 0] = float("-inf")
        return scores

    def _next_logits(self, tokens: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def init_args(self) -> dict[str, Any]:
        """Constructor extras beyond (n_vocab, config), as JSON values."""
        return {}

    @classmethod
    def from_init_args(cls, n_users: int, n_items: int, config: Any,
                       init_args: dict[str, Any]) -> SequenceModel:
        """Rebuild an empty model; ``n_items`` holds ``n_vocab`` in the file format."""
        return cls(n_items, config, **init_args)

    def save(self, directory: str | os.PathLike[str]) -> Path:
        """Save with ``models.base.save_model`` (``config.json`` + ``state_dict.pt``)."""
        return save_model(self, directory)  # type: ignore[arg-type]

    @classmethod
    def load(cls, directory: str | os.PathLike[str],
             map_location: str | torch.device = "cpu") -> SequenceModel:
        """Load a model saved by :meth:`save`, checking it is a ``cls``."""
        return check_loaded(load_ranking_model(directory, map_location), cls, directory)


def module_device(module: nn.Module) -> torch.device:
    """The device of a module's first parameter or buffer (CPU when it has none)."""
    for t in (*module.parameters(), *module.buffers()):
        return t.device
    return torch.device("cpu")


def check_loaded(model: nn.Module, cls: type, directory: Any) -> Any:
    if not isinstance(model, cls):
        raise ValueError(f"{directory}: holds a {type(model).__name__}, not a {cls.__name__}")
    return model


def load_ranking_model(
    directory: str | os.PathLike[str], map_location: str | torch.device = "cpu"
) -> nn.Module:
    """Load a ranking model written by ``models.base.save_model``, in eval mode.

    Args:
        directory: Folder holding ``config.json`` and ``state_dict.pt``.
        map_location: Device for the weights.

    Returns:
        The model; its class comes from the ``family`` / ``class`` fields of ``config.json``.

    Raises:
        FileNotFoundError: A file is missing (named).
        ValueError: The family, class or config is unknown.
    """
    return load_saved(directory, map_location, RANKING_FAMILIES, nn.Module)
