"""EASE (Steck 2019): a closed-form item-item linear autoencoder with a zero diagonal."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import scipy.sparse as sp
import torch

from recsys_pipeline.models.ranking_base import FoldInModel
from recsys_pipeline.training.device import available_memory, pick_device
from recsys_pipeline.training.ranking_data import CSRTensors

SPARSE_SCORING = 0.05  # input rows sparser than this are scored as sparse rows on CPU
GRAM_BLOCK = 1024  # item rows of XᵀX per sparse product (bounds its sparse temporaries)


@dataclass(frozen=True)
class EASEConfig:
    """Hyperparameters of :class:`EASEModel`.

    Attributes:
        l2: The one regularisation weight λ added to the Gram matrix's diagonal.
        float64: Solve in float64 (exact on small catalogues); float32 halves memory.
    """

    l2: float = 500.0
    float64: bool = True

    def __post_init__(self) -> None:
        if self.l2 <= 0:
            raise ValueError(f"l2={self.l2} must be > 0 (XᵀX alone may be singular)")


class EASEModel(FoldInModel):
    """``score(x) = x B`` with ``B = argmin ‖X − XB‖² + λ‖B‖²`` s.t. ``diag(B) = 0``.

    Closed form: ``P = (XᵀX + λI)⁻¹`` and ``B = I − P · diag(1 / diag(P))``, i.e.
    ``B_ij = −P_ij / P_jj`` off the diagonal and ``B_jj = 0``. ``X`` is the binary (or weighted)
    user × item training matrix; any user row ``x``, seen in training or not, is scored as
    ``x B``. Not gradient-trained: use :meth:`fit`.
    """

    family: ClassVar[str] = "ease"
    config_cls: ClassVar[type] = EASEConfig

    def __init__(self, n_users: int, n_items: int, config: EASEConfig | None = None,
                 history_nnz: int = 0, weights: torch.Tensor | None = None) -> None:
        super().__init__(n_users, n_items, config or EASEConfig(), history_nnz)
        if weights is None:  # zeros until fitted or loaded
            weights = torch.zeros(n_items, n_items)
        elif weights.shape != (n_items, n_items):
            raise ValueError(f"weights must be [{n_items}, {n_items}], got {tuple(weights.shape)}")
        self.register_buffer("weights", weights)  # B: [n_items, n_items]

    @classmethod
    def fit(cls, train: sp.spmatrix, config: EASEConfig | None = None,
            device: str | torch.device = "auto") -> EASEModel:
        """Solve for ``B`` on ``train`` (``[n_users, n_items]``).

        Args:
            train: Training interactions (binary or weighted), scipy sparse.
            config: λ and precision.
            device: ``"auto"`` (CUDA when present), ``"cpu"`` or ``"cuda"``.

        Returns:
            The fitted model (training rows kept for ``score_all``), in eval mode.
        """
        config = config or EASEConfig()
        dev = pick_device(device) if isinstance(device, str) else device
        n_users, n_items = train.shape
        # the solved matrix becomes the buffer itself: no second n_items² allocation
        model = cls(n_users, n_items, config,
                    weights=ease_weights(train, config.l2, config.float64, dev)).to(dev)
        model.set_history(CSRTensors.from_scipy(train, dev))
        return model.eval()

    def _score_dense(self, x: torch.Tensor) -> torch.Tensor:
        # a user row holds a few dozen of thousands of items: on CPU, multiplying only its
        # entries is several times faster than the dense product (GPUs do the dense one fast);
        # traced graphs (ONNX export, torch.compile) keep the one dense product
        if (x.device.type == "cpu" and not torch.compiler.is_compiling()
                and int(x.count_nonzero()) < SPARSE_SCORING * x.numel()):
            return torch.sparse.mm(x.to_sparse(), self.weights)  # [B, n_items]
        return x @ self.weights  # [B, n_items]


def ease_memory_bytes(n_items: int, float64: bool) -> int:
    """Peak bytes :func:`ease_weights` allocates for ``n_items`` columns (on its device): the
    ``n_items²`` matrix it solves in place, the float32 copy of a float64 solve, and one
    block of the sparse ``XᵀX`` product (at most 12 bytes an entry)."""
    block = min(GRAM_BLOCK, n_items) * n_items * 12
    return (12 if float64 else 4) * n_items * n_items + block


def ease_weights(train: sp.spmatrix, l2: float, float64: bool = True,
                 device: torch.device | str = "cpu") -> torch.Tensor:
    """The EASE item-item matrix ``B = I − P diag(1/diag(P))``, ``P = (XᵀX + λI)⁻¹``.

    Memory-lean: ``XᵀX`` is filled densely block by block (the sparse product of a large
    catalogue is nearly dense and bigger than the dense matrix), then factorized and inverted
    in place (LAPACK works on column-major matrices: the symmetric ``XᵀX`` is handed over as
    the column-major view of its own buffer, so no copy is made), so the peak is one
    ``n_items²`` matrix plus the float32 result (:func:`ease_memory_bytes`; a 27,133-item
    catalogue: 8.2 GiB in float64, where the plain solve ran out of 24 GiB).

    Args:
        train: ``X``, users × items.
        l2: λ > 0.
        float64: Solve in float64.
        device: Where to solve.

    Returns:
        ``B`` with a zero diagonal, float32, row-major.  # [n_items, n_items]

    Raises:
        MemoryError: ``device`` has less memory available than the solve needs (names the
            catalogue size and what to change).
    """
    dev = torch.device(device)
    dtype = torch.float64 if float64 else torch.float32
    n_items = train.shape[1]
    _check_memory(n_items, float64, dev)
    matrix = _gram(train, dtype, dev)  # row-major XᵀX
    matrix.diagonal().add_(l2)
    # XᵀX + λI is symmetric positive definite: a Cholesky inverse is cheaper and stabler.
    # Its transpose is the same matrix, column-major: LAPACK overwrites it without a copy.
    column_major = matrix.t()
    torch.linalg.cholesky(column_major, out=column_major)  # L
    torch.cholesky_inverse(column_major, out=column_major)  # P, symmetric: matrix holds P too
    matrix.div_(matrix.diagonal().clone()).neg_()  # B_ij = −P_ij / P_jj
    matrix.diagonal().zero_()
    return matrix.float()


def _check_memory(n_items: int, float64: bool, device: torch.device) -> None:
    need, free = ease_memory_bytes(n_items, float64), available_memory(device)
    if free is None or need <= free:
        return
    precision = "float64" if float64 else "float32"
    fixes = ["keep fewer items (raise min_item_users of prepared/strong_generalization_matrix)"]
    if float64:
        fixes.append("solve in float32 (float64: false, a third of the memory)")
    fixes.append("use a device with more memory")
    raise MemoryError(f"EASE: the {n_items:,} × {n_items:,} item-item solve ({precision}) needs "
                      f"about {need / 2**30:.1f} GiB on {device}, {free / 2**30:.1f} GiB are "
                      f"available; {', '.join(fixes[:-1])} or {fixes[-1]}")


def _gram(train: sp.spmatrix, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """Dense ``XᵀX`` on ``device``, ``GRAM_BLOCK`` rows at a time.  # [n_items, n_items]"""
    np_dtype = np.float64 if dtype == torch.float64 else np.float32
    csr = sp.csr_matrix(train, dtype=np_dtype)
    rows = csr.T.tocsr()  # Xᵀ: row i = the users of item i
    n_items = csr.shape[1]
    gram = torch.empty(n_items, n_items, dtype=dtype, device=device)
    host = gram.numpy() if device.type == "cpu" else None
    for start in range(0, n_items, GRAM_BLOCK):
        stop = min(n_items, start + GRAM_BLOCK)
        block = rows[start:stop] @ csr  # sparse [block, n_items]
        if host is not None:
            block.toarray(out=host[start:stop])
        else:
            gram[start:stop] = torch.from_numpy(block.toarray()).to(device)
    return gram
