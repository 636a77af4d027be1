"""A one-input view of any rating model, for graph export (``torch.export``, MLflow's pt2).

Exporters and MLflow's pyfunc ``predict`` hand a model one tensor, while every
:class:`~recsys_pipeline.models.base.RatingModel` takes ``(users, items)``. :class:`PairScorer`
takes the pairs as one ``[B, 2]`` int64 tensor, columns ``(user_idx, item_idx)``.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from recsys_pipeline.models.base import RatingModel


class PairScorer(nn.Module):
    """``forward(pairs)[b] == model(pairs[b, 0], pairs[b, 1])``, always in eval mode.

    It calls the model's ``forward``, not ``score``: the id range check of ``score`` reads
    tensor values, which a traced graph cannot hold; an unknown id fails the embedding lookup
    instead.

    Args:
        model: The trained model; a CPU copy is taken, so the export never holds device
            tensors and later training of ``model`` does not change the copy.
    """

    def __init__(self, model: RatingModel) -> None:
        super().__init__()
        self.model = copy.deepcopy(model).cpu().eval()
        self.eval()

    def forward(self, pairs: torch.Tensor) -> torch.Tensor:
        """Score ``pairs`` (``user_idx``, ``item_idx`` columns).  # [B, 2] -> [B]"""
        return self.model(pairs[:, 0], pairs[:, 1]).float()

    def train(self, mode: bool = True) -> PairScorer:
        """Stay in eval mode: an exported scorer must be deterministic (no dropout)."""
        return super().train(False)
