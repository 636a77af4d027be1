"""Building blocks shared by the neural rating models: seeded init, MLP towers, range output."""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import nn

Norm = Literal["none", "batch", "layer"]
NORMS: tuple[str, ...] = ("none", "batch", "layer")


def check_common(
    rating_min: float, rating_max: float, hidden: tuple[int, ...] = (), dropout: float = 0.0,
    norm: str = "none",
) -> None:
    """Validate the config fields several models share; raise ``ValueError`` naming the field."""
    if not rating_min < rating_max:
        raise ValueError(f"rating_min={rating_min} must be < rating_max={rating_max}")
    if any(h <= 0 for h in hidden):
        raise ValueError(f"hidden={hidden} must hold positive layer widths")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout={dropout} must be in [0, 1)")
    if norm not in NORMS:
        raise ValueError(f"norm={norm!r} must be one of {NORMS}")


def init_normal(weight: torch.Tensor, std: float, generator: torch.Generator) -> None:
    """Fill ``weight`` with N(0, std²) draws from ``generator`` (embeddings, factors)."""
    with torch.no_grad():
        nn.init.normal_(weight, 0.0, std, generator=generator)


def init_linear(layer: nn.Linear, generator: torch.Generator) -> None:
    """PyTorch's default ``nn.Linear`` init (Kaiming-uniform, a=√5), drawn from ``generator``."""
    with torch.no_grad():
        nn.init.kaiming_uniform_(layer.weight, a=math.sqrt(5), generator=generator)
        if layer.bias is not None:
            bound = 1.0 / math.sqrt(layer.in_features) if layer.in_features > 0 else 0.0
            nn.init.uniform_(layer.bias, -bound, bound, generator=generator)


def mlp_tower(in_dim: int, hidden: tuple[int, ...], dropout: float, norm: str) -> nn.Sequential:
    """``[Linear → norm → ReLU → Dropout] × len(hidden)``; the caller adds its output layer.

    Args:
        in_dim: Input width.
        hidden: Width of each hidden layer; ``()`` gives an empty (identity) tower.
        dropout: Dropout probability after each activation (0 disables).
        norm: ``"none"``, ``"batch"`` (``BatchNorm1d``) or ``"layer"`` (``LayerNorm``).

    Returns:
        The tower; its output width is ``hidden[-1]`` (or ``in_dim`` when ``hidden`` is empty).
    """
    layers: list[nn.Module] = []
    width = in_dim
    for h in hidden:
        layers.append(nn.Linear(width, h))
        if norm == "batch":
            layers.append(nn.BatchNorm1d(h))
        elif norm == "layer":
            layers.append(nn.LayerNorm(h))
        layers.append(nn.ReLU())
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        width = h
    return nn.Sequential(*layers)


def init_module_linears(module: nn.Module, generator: torch.Generator) -> None:
    """Re-initialise every ``nn.Linear`` inside ``module`` from ``generator`` (in module order)."""
    for sub in module.modules():
        if isinstance(sub, nn.Linear):
            init_linear(sub, generator)


def to_rating_range(logit: torch.Tensor, rating_min: float, rating_max: float) -> torch.Tensor:
    """Map a logit to the rating scale: ``r̂ = min + (max − min) · σ(logit)``."""
    return rating_min + (rating_max - rating_min) * torch.sigmoid(logit.float())


def range_logit(value: float, rating_min: float, rating_max: float) -> float:
    """Inverse of :func:`to_rating_range`, clipped away from 0/1 (used to start at the mean)."""
    frac = (value - rating_min) / (rating_max - rating_min)
    frac = min(max(frac, 1e-3), 1 - 1e-3)
    return math.log(frac / (1 - frac))
