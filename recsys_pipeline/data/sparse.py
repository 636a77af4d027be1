"""User x item CSR matrices of the rating splits.

Every matrix has shape ``(n_users, n_items)`` from the id maps, so rows and columns mean the
same user and item in train and in every evaluation split. Rows are ``user_idx``, columns
``item_idx``; matrices are canonical (sorted column indices, no duplicates), float32.

* explicit: the rating value.
* binary: ``1.0`` where ``rating >= binarize_threshold``, no entry otherwise (the default
  threshold 0 keeps every interaction).

For strong generalization the ``valid_fold_in`` / ``valid`` (and test) matrices are the
fold-in/evaluation pair: feed the fold-in rows to the model, score against the evaluation rows.
Files are written with ``scipy.sparse.save_npz`` to a temp file in the target folder and
renamed into place; ``load_npz`` reads them with ``allow_pickle=False``.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import scipy.sparse as sp

from recsys_pipeline import schema
from recsys_pipeline.data import lake
from recsys_pipeline.data.split import Splits

logger = logging.getLogger(__name__)

EXPLICIT = "explicit"
BINARY = "binary"


@dataclass(frozen=True)
class SparseConfig:
    """Matrix building knobs.

    Attributes:
        binarize_threshold: Binary matrices keep ratings ``>=`` this value as 1.0.
    """

    binarize_threshold: float = 0.0


@dataclass(frozen=True)
class SplitMatrices:
    """Explicit and binary CSR matrices per split name (``schema.SPLIT_NAMES``).

    Attributes:
        explicit: Split name -> rating matrix ``[n_users, n_items]``.
        binary: Split name -> 0/1 matrix ``[n_users, n_items]``.
    """

    explicit: dict[str, sp.csr_matrix] = field(default_factory=dict)
    binary: dict[str, sp.csr_matrix] = field(default_factory=dict)

    def fold_in_pair(self, split: str, kind: str = BINARY) -> tuple[sp.csr_matrix, sp.csr_matrix]:
        """(fold-in, evaluation) matrices of ``valid`` or ``test`` (strong generalization)."""
        if split not in (schema.VALID, schema.TEST):
            raise ValueError(f"fold_in_pair: split must be valid or test, got {split!r}")
        mats = self.explicit if kind == EXPLICIT else self.binary
        return mats[f"{split}_fold_in"], mats[split]


def ratings_to_csr(
    table: pa.Table, n_users: int, n_items: int, binarize_threshold: float | None = None
) -> sp.csr_matrix:
    """CSR matrix of one encoded ratings table.

    Args:
        table: Table with ``user_idx``, ``item_idx``, ``rating`` columns, unique pairs.
        n_users: Number of rows (user index space).
        n_items: Number of columns (item index space).
        binarize_threshold: None for rating values, else 1.0 where ``rating >= threshold``.

    Returns:
        Canonical float32 ``csr_matrix`` of shape ``(n_users, n_items)``.
    """
    user = table.column(schema.USER_IDX).to_numpy()
    item = table.column(schema.ITEM_IDX).to_numpy()
    value = table.column(schema.RATING).to_numpy().astype(np.float32, copy=False)
    for name, idx, n in ((schema.USER_IDX, user, n_users), (schema.ITEM_IDX, item, n_items)):
        if len(idx) and (idx.min() < 0 or idx.max() >= n):
            raise ValueError(f"ratings_to_csr: column {name!r} has values outside [0, {n})")
    if binarize_threshold is not None:
        keep = value >= np.float32(binarize_threshold)
        user, item = user[keep], item[keep]
        value = np.ones(len(user), np.float32)
    matrix = sp.coo_matrix((value, (user, item)), shape=(n_users, n_items)).tocsr()
    if matrix.nnz != len(user):  # tocsr summed duplicates: the input was not unique
        raise ValueError(f"ratings_to_csr: {len(user) - matrix.nnz} duplicate (user_idx, item_idx)")
    matrix.sort_indices()
    return matrix


def binarize(matrix: sp.csr_matrix, threshold: float) -> sp.csr_matrix:
    """0/1 copy of an explicit matrix: 1.0 where the value is ``>= threshold``, else no entry."""
    out = matrix.copy()
    out.data = (out.data >= np.float32(threshold)).astype(np.float32)
    out.eliminate_zeros()
    return out


def csr_to_ratings(matrix: sp.csr_matrix) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The stored entries as (user_idx, item_idx, value) arrays, row-major order."""
    matrix = sp.csr_matrix(matrix)
    user = np.repeat(np.arange(matrix.shape[0], dtype=np.int32), np.diff(matrix.indptr))
    return user, matrix.indices.astype(np.int32), matrix.data


def build_matrices(
    splits: Splits, n_users: int, n_items: int, config: SparseConfig
) -> SplitMatrices:
    """Explicit and binary matrices for every split table, one shared shape.

    Args:
        splits: Rating splits.
        n_users: User index space size (id maps).
        n_items: Item index space size (id maps).
        config: Binarization threshold.

    Returns:
        :class:`SplitMatrices` keyed by ``schema.SPLIT_NAMES``.
    """
    explicit, binary = {}, {}
    for name, table in splits.tables().items():
        explicit[name] = ratings_to_csr(table, n_users, n_items)
        binary[name] = binarize(explicit[name], config.binarize_threshold)
    logger.info("matrices (%d x %d): %s", n_users, n_items, {k: m.nnz for k, m in explicit.items()})
    return SplitMatrices(explicit, binary)


def save_csr(matrix: sp.csr_matrix, path: str | os.PathLike, compressed: bool = False) -> Path:
    """Write ``matrix`` as ``.npz`` atomically (temp file in the same folder, then rename).

    Args:
        matrix: CSR matrix.
        path: Destination file (its folder is created).
        compressed: zip-compress the arrays.

    Returns:
        The destination path.
    """

    def write(tmp: Path) -> None:
        # a file object, not a name: save_npz would append ".npz" to the temp name
        with open(tmp, "wb") as fh:
            sp.save_npz(fh, sp.csr_matrix(matrix), compressed=compressed)

    return lake.write_atomic(path, write)


def load_csr(path: str | os.PathLike) -> sp.csr_matrix:
    """Read a matrix written by :func:`save_csr` (``allow_pickle=False`` inside ``load_npz``).

    Raises:
        FileNotFoundError: naming the path when it is missing.
        ValueError: naming the path when it does not hold a CSR matrix.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such matrix file")
    matrix = sp.load_npz(path)
    if matrix.format != "csr":
        raise ValueError(f"{path}: holds a {matrix.format} matrix, expected csr")
    return sp.csr_matrix(matrix)


def matrix_path(directory: str | os.PathLike, split: str, kind: str) -> Path:
    """File of one matrix: ``<directory>/<split>_<kind>.npz``."""
    return Path(directory) / f"{split}_{kind}.npz"


def save_matrices(
    matrices: SplitMatrices, directory: str | os.PathLike, compressed: bool = False
) -> list[Path]:
    """Write every matrix of ``matrices`` under ``directory`` (one atomic file each)."""
    paths = []
    for kind, mats in ((EXPLICIT, matrices.explicit), (BINARY, matrices.binary)):
        for split, matrix in mats.items():
            paths.append(save_csr(matrix, matrix_path(directory, split, kind), compressed))
    return paths


def load_matrices(directory: str | os.PathLike) -> SplitMatrices:
    """Read the matrices :func:`save_matrices` wrote (FileNotFoundError naming a missing one)."""
    return SplitMatrices(
        {s: load_csr(matrix_path(directory, s, EXPLICIT)) for s in schema.SPLIT_NAMES},
        {s: load_csr(matrix_path(directory, s, BINARY)) for s in schema.SPLIT_NAMES},
    )
