"""``RatingData``: encoded (user, item, rating) triples as tensors kept on one device."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import scipy.sparse as sp
import torch

from recsys_pipeline.schema import ITEM_IDX, RATING, USER_IDX


def _as_tensor(values: Any, name: str, dtype: torch.dtype) -> torch.Tensor:
    """Convert a numpy / pyarrow / torch / list column to a 1-D tensor of ``dtype``."""
    if isinstance(values, pa.ChunkedArray | pa.Array):
        if values.null_count:
            raise ValueError(f"column {name!r} has {values.null_count} null value(s)")
        values = values.to_numpy(zero_copy_only=False)
    if isinstance(values, torch.Tensor):
        tensor = values
    else:
        array = np.asarray(values)
        if not array.flags.writeable:  # arrow buffers are read-only; torch needs writable
            array = array.copy()
        tensor = torch.as_tensor(array)
    if tensor.ndim != 1:
        raise ValueError(f"column {name!r} must be 1-D, got shape {tuple(tensor.shape)}")
    if dtype == torch.long and tensor.dtype.is_floating_point:
        raise ValueError(f"column {name!r} must hold integer indices, got dtype {tensor.dtype}")
    return tensor.to(dtype)


@dataclass(frozen=True)
class RatingData:
    """Encoded interactions: three aligned 1-D tensors on one device.

    Attributes:
        users: ``user_idx`` values, int64, in ``[0, n_users)``.  # [n]
        items: ``item_idx`` values, int64, in ``[0, n_items)``.  # [n]
        ratings: ``rating`` values, float32.  # [n]
    """

    users: torch.Tensor
    items: torch.Tensor
    ratings: torch.Tensor

    def __post_init__(self) -> None:
        n = self.users.shape[0]
        for name, t in ((ITEM_IDX, self.items), (RATING, self.ratings)):
            if t.shape[0] != n:
                raise ValueError(f"column {name!r} has {t.shape[0]} rows, {USER_IDX!r} has {n}")

    @classmethod
    def from_arrays(
        cls,
        users: Any,
        items: Any,
        ratings: Any,
        *,
        n_users: int | None = None,
        n_items: int | None = None,
        device: torch.device | str = "cpu",
    ) -> RatingData:
        """Build from numpy arrays, pyarrow arrays, tensors or lists.

        Args:
            users: ``user_idx`` values (int32 or int64).
            items: ``item_idx`` values (int32 or int64).
            ratings: ``rating`` values (cast to float32).
            n_users: When given, every user index must lie in ``[0, n_users)``.
            n_items: When given, every item index must lie in ``[0, n_items)``.
            device: Where the tensors live.

        Returns:
            The data, validated: equal lengths, indices in range, finite ratings.

        Raises:
            ValueError: Naming the column and the offending value.
        """
        data = cls(
            _as_tensor(users, USER_IDX, torch.long).to(device),
            _as_tensor(items, ITEM_IDX, torch.long).to(device),
            _as_tensor(ratings, RATING, torch.float32).to(device),
        )
        data.validate(n_users=n_users, n_items=n_items)
        return data

    @classmethod
    def from_table(
        cls,
        table: pa.Table,
        *,
        n_users: int | None = None,
        n_items: int | None = None,
        device: torch.device | str = "cpu",
    ) -> RatingData:
        """Build from an Arrow table with ``user_idx``, ``item_idx`` and ``rating`` columns."""
        missing = [c for c in (USER_IDX, ITEM_IDX, RATING) if c not in table.column_names]
        if missing:
            raise ValueError(f"table lacks column(s) {missing}; has {table.column_names}")
        return cls.from_arrays(
            table.column(USER_IDX),
            table.column(ITEM_IDX),
            table.column(RATING),
            n_users=n_users,
            n_items=n_items,
            device=device,
        )

    @classmethod
    def from_csr(cls, matrix: sp.spmatrix) -> RatingData:
        """The stored entries of a ``[n_users, n_items]`` sparse matrix as rows (CPU)."""
        coo = sp.coo_matrix(matrix)
        return cls.from_arrays(coo.row.astype(np.int64), coo.col.astype(np.int64),
                               coo.data.astype(np.float32))

    def to_csr(self, n_users: int, n_items: int) -> sp.csr_matrix:
        """The rows as a ``[n_users, n_items]`` CSR matrix of ratings."""
        return sp.csr_matrix((self.ratings.cpu().numpy(), (self.users.cpu().numpy(),
                                                           self.items.cpu().numpy())),
                             shape=(n_users, n_items))

    def validate(self, *, n_users: int | None = None, n_items: int | None = None) -> None:
        """Raise ``ValueError`` on out-of-range indices or non-finite ratings."""
        for name, t, n in ((USER_IDX, self.users, n_users), (ITEM_IDX, self.items, n_items)):
            if t.numel() == 0:
                continue
            lo, hi = int(t.min()), int(t.max())
            if lo < 0:
                raise ValueError(f"column {name!r} has negative index {lo}")
            if n is not None and hi >= n:
                raise ValueError(f"column {name!r} has index {hi} >= n={n}")
        bad = ~torch.isfinite(self.ratings)
        if bool(bad.any()):
            value = float(self.ratings[bad][0])
            raise ValueError(f"column {RATING!r} has {int(bad.sum())} non-finite value(s): {value}")

    def __len__(self) -> int:
        return int(self.users.shape[0])

    @property
    def device(self) -> torch.device:
        """The device the tensors live on."""
        return self.users.device

    def to(self, device: torch.device | str) -> RatingData:
        """The same data on ``device`` (no copy when already there)."""
        return RatingData(self.users.to(device), self.items.to(device), self.ratings.to(device))

    def subset(self, index: torch.Tensor) -> RatingData:
        """Rows ``index`` (a long index or bool mask tensor) as new data."""
        return RatingData(self.users[index], self.items[index], self.ratings[index])
