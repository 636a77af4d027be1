"""Epoch data for ranking models: CSR user rows and aligned tensors, kept on one device.

The ranking loop (``training.ranking_loop``) shuffles ``range(len(data))`` and asks the data for
``data.batch(index)``, a tuple of device tensors the model's ``training_loss`` consumes:

* :class:`CSRTensors`: a user × item CSR matrix (indptr / indices / values tensors); a batch is
  the dense rows ``[B, n_items]`` of the chosen users, built by one scatter (the autoencoders).
  Models also keep their training history in this form, so scoring a known user needs no dense
  ``[n_users, n_items]`` matrix.
* :class:`TensorBatches`: aligned tensors sliced by the same index (token sequences, pairs).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import scipy.sparse as sp
import torch

from recsys_pipeline.data.sessions import PAD, SequenceBatch


@dataclass(frozen=True)
class CSRTensors:
    """A CSR matrix as three tensors: row ``r`` holds ``indices[indptr[r]:indptr[r+1]]``.

    Attributes:
        indptr: Row offsets, int64.  # [n_rows + 1]
        indices: Column indices, int64.  # [nnz]
        values: Entry values, float32.  # [nnz]
        n_cols: Number of columns (items).
        active: Rows an epoch draws batches from (None: every row); see :meth:`nonempty`.
    """

    indptr: torch.Tensor
    indices: torch.Tensor
    values: torch.Tensor
    n_cols: int
    active: torch.Tensor | None = None

    @classmethod
    def from_scipy(cls, matrix: sp.spmatrix, device: torch.device | str = "cpu") -> CSRTensors:
        """From any scipy sparse matrix (converted to canonical CSR, float32)."""
        csr = sp.csr_matrix(matrix, dtype=np.float32)
        csr.sum_duplicates()
        if csr.nnz and not np.isfinite(csr.data).all():
            raise ValueError("CSR matrix has non-finite values")
        return cls(
            torch.from_numpy(csr.indptr.astype(np.int64)).to(device),
            torch.from_numpy(csr.indices.astype(np.int64)).to(device),
            torch.from_numpy(csr.data.copy()).to(device),
            int(csr.shape[1]),
        )

    @property
    def n_rows(self) -> int:
        """Number of rows (users)."""
        return self.indptr.numel() - 1

    def __len__(self) -> int:
        """Epoch-data protocol: rows an epoch draws from (``active``, else every row)."""
        return self.n_rows if self.active is None else int(self.active.numel())

    def nonempty(self) -> CSRTensors:
        """The same matrix, with epochs drawn from the rows that have entries only.

        Strong-generalization train matrices keep (empty) rows for the held-out users; a
        batch of empty rows teaches an autoencoder "no input, no output" and dilutes the
        loss of the real rows (a third of every batch with 100 + 100 of 601 users held out).
        """
        return replace(self, active=torch.nonzero(self.row_nnz() > 0).flatten())

    @property
    def device(self) -> torch.device:
        """Where the tensors live."""
        return self.indptr.device

    def to(self, device: torch.device | str) -> CSRTensors:
        """The same matrix on ``device``."""
        return CSRTensors(self.indptr.to(device), self.indices.to(device),
                          self.values.to(device), self.n_cols,
                          None if self.active is None else self.active.to(device))

    def row_nnz(self) -> torch.Tensor:
        """Entries per row.  # [n_rows]"""
        return self.indptr[1:] - self.indptr[:-1]

    def entries(self, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(position in rows, column, value)`` of every entry of ``rows``.  # [m] x 3"""
        sizes = self.row_nnz()[rows]
        pos_row = torch.repeat_interleave(torch.arange(rows.numel(), device=rows.device), sizes)
        first = torch.cumsum(sizes, 0) - sizes
        offset = torch.arange(pos_row.numel(), device=rows.device) - first[pos_row]
        flat = self.indptr[rows][pos_row] + offset
        return pos_row, self.indices[flat], self.values[flat]

    def dense_rows(self, rows: torch.Tensor) -> torch.Tensor:
        """Dense copy of ``rows`` (zeros where there is no entry).  # [B, n_cols] float32"""
        out = torch.zeros(rows.numel(), self.n_cols, device=self.device)
        r, c, v = self.entries(rows.to(self.device))
        out[r, c] = v
        return out

    def batch(self, index: torch.Tensor) -> tuple[torch.Tensor]:
        """Epoch-data protocol: dense rows ``index`` of ``active`` (or of all).  # ([B, n_cols],)"""
        rows = index if self.active is None else self.active[index.to(self.device)]
        return (self.dense_rows(rows),)


class TensorBatches:
    """Aligned tensors (same first dimension) sliced together by one index."""

    def __init__(self, *tensors: torch.Tensor) -> None:
        if not tensors:
            raise ValueError("TensorBatches needs at least one tensor")
        n = tensors[0].shape[0]
        for i, t in enumerate(tensors):
            if t.shape[0] != n:
                raise ValueError(f"tensor {i} has {t.shape[0]} rows, tensor 0 has {n}")
        self.tensors = tuple(tensors)

    def __len__(self) -> int:
        return int(self.tensors[0].shape[0])

    def to(self, device: torch.device | str) -> TensorBatches:
        """The same tensors on ``device``."""
        return TensorBatches(*(t.to(device) for t in self.tensors))

    def batch(self, index: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Epoch-data protocol: every tensor's rows ``index``."""
        return tuple(t[index] for t in self.tensors)


def training_sequences(batch: SequenceBatch | np.ndarray, min_length: int = 2) -> TensorBatches:
    """Left-padded token rows with at least ``min_length`` items, as epoch data.

    Every position of a kept row is a next-item example (the model predicts ``tokens[:, t+1]``
    from ``tokens[:, :t+1]``), so a row needs two items to hold one example.

    Args:
        batch: A :class:`SequenceBatch` (its ``tokens``) or a ``[n, L]`` int token array.
        min_length: Fewest real tokens a row needs.

    Returns:
        ``TensorBatches`` of one int64 ``[n_kept, L]`` tensor.
    """
    tokens = batch.tokens if isinstance(batch, SequenceBatch) else np.asarray(batch)
    if tokens.ndim != 2:
        raise ValueError(f"tokens must be [n, L], got shape {tokens.shape}")
    lengths = (tokens != PAD).sum(1)
    kept = torch.from_numpy(tokens[lengths >= min_length].astype(np.int64))
    if kept.shape[0] == 0:
        raise ValueError(f"no training sequence has >= {min_length} items")
    return TensorBatches(kept)


def sequence_windows(tokens: np.ndarray, width: int) -> np.ndarray:
    """Cut long left-padded rows into windows of ``width`` tokens overlapping by one.

    Window ``k`` of a row holds columns ``[L − width − k(width − 1), L − k(width − 1))``, so
    every consecutive pair (every next-item example) of the row lies in exactly one window,
    and each window is itself left-padded. Rows with fewer than two real tokens are dropped,
    and so are all-padding windows. This trades context beyond ``width`` for shorter rows
    (cheaper recurrent steps and attention) without losing training examples.

    Args:
        tokens: Left-padded token rows, 0 = padding.  # [n, L]
        width: Window width (>= 2).

    Returns:
        Left-padded windows, newest windows of each row first.  # [m, width]
    """
    tokens = np.asarray(tokens)
    if width < 2 or tokens.ndim != 2:
        raise ValueError(f"width={width} must be >= 2 and tokens [n, L], got {tokens.shape}")
    n, length = tokens.shape
    if length <= width:
        padded = np.zeros((n, width), tokens.dtype)
        padded[:, width - length :] = tokens
        windows = padded
    else:
        step = width - 1
        n_windows = -(-(length - 1) // step)  # ceil: the windows cover every pair
        pad = n_windows * step + 1 - length
        full = np.concatenate([np.zeros((n, pad), tokens.dtype), tokens], 1)
        starts = full.shape[1] - width - step * np.arange(n_windows)
        cols = starts[:, None] + np.arange(width)[None, :]  # [n_windows, width]
        windows = full[:, cols].reshape(n * n_windows, width)
    return windows[(windows != PAD).sum(1) >= 2]


def pairs_from_csr(matrix: sp.spmatrix) -> TensorBatches:
    """The (user, item) entries of a CSR matrix as epoch data for pairwise / in-batch training."""
    csr = sp.csr_matrix(matrix)
    users = np.repeat(np.arange(csr.shape[0], dtype=np.int64), np.diff(csr.indptr))
    if users.size == 0:
        raise ValueError("matrix has no entries to train on")
    return TensorBatches(torch.from_numpy(users), torch.from_numpy(csr.indices.astype(np.int64)))
