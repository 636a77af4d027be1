"""EASE (Steck 2019): a closed-form item-item linear autoencoder with a zero diagonal."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import scipy.sparse as sp
import torch

from recsys_pipeline.models.ranking_base import FoldInModel
from recsys_pipeline.training.device import pick_device
from recsys_pipeline.training.ranking_data import CSRTensors


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
                 history_nnz: int = 0) -> None:
        super().__init__(n_users, n_items, config or EASEConfig(), history_nnz)
        self.register_buffer("weights", torch.zeros(n_items, n_items))  # B: [n_items, n_items]

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
        model = cls(n_users, n_items, config).to(dev)
        model.weights.copy_(ease_weights(train, config.l2, config.float64, dev))
        model.set_history(CSRTensors.from_scipy(train, dev))
        return model.eval()

    def _score_dense(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.weights  # [B, n_items]


def ease_weights(train: sp.spmatrix, l2: float, float64: bool = True,
                 device: torch.device | str = "cpu") -> torch.Tensor:
    """The EASE item-item matrix ``B = I − P diag(1/diag(P))``, ``P = (XᵀX + λI)⁻¹``.

    Args:
        train: ``X``, users × items.
        l2: λ > 0.
        float64: Solve in float64.
        device: Where to solve.

    Returns:
        ``B`` with a zero diagonal, float32.  # [n_items, n_items]
    """
    dtype = torch.float64 if float64 else torch.float32
    csr = sp.csr_matrix(train)
    gram = torch.as_tensor((csr.T @ csr).toarray(), dtype=dtype, device=device)  # XᵀX
    gram.diagonal().add_(l2)
    # XᵀX + λI is symmetric positive definite: a Cholesky inverse is cheaper and stabler
    precision = torch.cholesky_inverse(torch.linalg.cholesky(gram))  # P
    weights = -precision / precision.diagonal()[None, :]
    weights.diagonal().zero_()
    return weights.float()
