"""Search spaces of the gradient-trained rating models, and the configs a trial's params build.

Each family tunes at least three hyperparameters, with the bounds of one :class:`SearchSpace`:

* ``mf``: ``lr``, ``embedding_dim`` (the factor count), ``l2`` (per-sample L2 on the touched
  factors; MF's own regulariser, so ``weight_decay`` stays 0 for it);
* ``mlp``, ``neumf``, ``deepfm``: ``lr``, ``weight_decay``, ``embedding_dim``, ``dropout`` and
  ``hidden`` (the hidden layer widths, one categorical choice such as ``"64-32"``).

``lr``, ``weight_decay`` and ``l2`` are sampled on a log scale. Bias and popularity are fitted
in closed form and have no gradient-trained hyperparameters; asking for them raises.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import optuna

from recsys_pipeline.models.base import with_rating_range
from recsys_pipeline.models.deepfm import DeepFMConfig
from recsys_pipeline.models.mf import MFConfig
from recsys_pipeline.models.mlp import MLPConfig
from recsys_pipeline.models.neumf import NeuMFConfig

TUNABLE_FAMILIES: tuple[str, ...] = ("mf", "mlp", "neumf", "deepfm")
CLOSED_FORM_FAMILIES: tuple[str, ...] = ("bias", "popularity")


def check_family(family: str) -> str:
    """``family`` when it can be tuned, else a ValueError naming the tunable ones."""
    if family in TUNABLE_FAMILIES:
        return family
    why = (" (it is fitted in closed form: nothing to tune by gradient trials)"
           if family in CLOSED_FORM_FAMILIES else "")
    raise ValueError(f"model family {family!r} cannot be tuned{why}; choose one of "
                     f"{', '.join(TUNABLE_FAMILIES)}")


def hidden_label(widths: tuple[int, ...] | list[int]) -> str:
    """A hidden-layer choice as the categorical value Optuna stores: ``(64, 32)`` -> ``"64-32"``."""
    return "-".join(str(int(w)) for w in widths)


def parse_hidden(label: str) -> tuple[int, ...]:
    """The widths of a :func:`hidden_label` string: ``"64-32"`` -> ``(64, 32)``."""
    return tuple(int(w) for w in label.split("-") if w)


@dataclass(frozen=True)
class SearchSpace:
    """Bounds of the hyperparameters (plain values, so a Dagster Config can carry them).

    Attributes:
        lr: ``(low, high)`` of the learning rate (log scale).
        weight_decay: ``(low, high)`` of the optimizer weight decay (log scale; mlp, neumf,
            deepfm).
        l2: ``(low, high)`` of MF's per-sample L2 weight (log scale).
        embedding_dims: Embedding widths to choose from (MF: the number of factors).
        dropout: ``(low, high)`` of the dropout after each hidden layer.
        hidden: Hidden layer width tuples to choose from.
    """

    lr: tuple[float, float] = (1e-3, 3e-2)
    weight_decay: tuple[float, float] = (1e-7, 1e-3)
    l2: tuple[float, float] = (1e-3, 0.3)
    embedding_dims: tuple[int, ...] = (8, 16, 32, 64)
    dropout: tuple[float, float] = (0.0, 0.5)
    hidden: tuple[tuple[int, ...], ...] = ((32,), (64, 32), (128, 64))

    def __post_init__(self) -> None:
        for name in ("lr", "weight_decay", "l2"):
            low, high = getattr(self, name)
            if not 0 < low <= high:
                raise ValueError(f"search space {name}=({low}, {high}): need 0 < low <= high "
                                 "(sampled on a log scale)")
        if not 0 <= self.dropout[0] <= self.dropout[1] < 1:
            raise ValueError(f"search space dropout={self.dropout}: need 0 <= low <= high < 1")
        if not self.embedding_dims or min(self.embedding_dims) < 1:
            raise ValueError(f"search space embedding_dims={self.embedding_dims}: need at least "
                             "one width, each >= 1")
        if not self.hidden or any(not h or min(h) < 1 for h in self.hidden):
            raise ValueError(f"search space hidden={self.hidden}: need at least one non-empty "
                             "tuple of widths >= 1")


def suggest_params(trial: optuna.Trial, family: str, space: SearchSpace) -> dict[str, Any]:
    """Sample one configuration of ``family`` from ``space`` through ``trial``.

    Args:
        trial: The Optuna trial (its sampler decides the values).
        family: One of ``TUNABLE_FAMILIES``.
        space: The bounds.

    Returns:
        ``{name: value}``; ``hidden`` is a :func:`hidden_label` string.
    """
    check_family(family)
    params: dict[str, Any] = {
        "lr": trial.suggest_float("lr", *space.lr, log=True),
        "embedding_dim": trial.suggest_categorical("embedding_dim", list(space.embedding_dims)),
    }
    if family == "mf":
        params["l2"] = trial.suggest_float("l2", *space.l2, log=True)
        return params
    params["weight_decay"] = trial.suggest_float("weight_decay", *space.weight_decay, log=True)
    params["dropout"] = trial.suggest_float("dropout", *space.dropout)
    params["hidden"] = trial.suggest_categorical("hidden", [hidden_label(h) for h in space.hidden])
    return params


def model_config_from_params(family: str, params: dict[str, Any], seed: int = 0,
                             rating_range: tuple[float, float] | None = None) -> Any:
    """The model config dataclass of ``family`` with the tuned ``params`` (other fields default).

    Args:
        family: One of ``TUNABLE_FAMILIES``.
        params: What :func:`suggest_params` returned (or ``study.best_params``).
        seed: Seeds the parameter init; every trial uses the same seed, so trials differ only
            in their hyperparameters.
        rating_range: ``(rating_min, rating_max)`` (the release's scale); None: defaults.

    Returns:
        An ``MFConfig``, ``MLPConfig``, ``NeuMFConfig`` or ``DeepFMConfig``.
    """
    return with_rating_range(_config_from_params(family, params, seed), rating_range)


def _config_from_params(family: str, params: dict[str, Any], seed: int) -> Any:
    check_family(family)
    dim = int(params["embedding_dim"])
    if family == "mf":
        return MFConfig(n_factors=dim, l2=float(params["l2"]), seed=seed)
    hidden, dropout = parse_hidden(str(params["hidden"])), float(params["dropout"])
    if family == "mlp":
        return MLPConfig(user_dim=dim, item_dim=dim, hidden=hidden, dropout=dropout, seed=seed)
    if family == "neumf":
        return NeuMFConfig(gmf_dim=dim, mlp_dim=dim, hidden=hidden, dropout=dropout, seed=seed)
    return DeepFMConfig(embedding_dim=dim, hidden=hidden, dropout=dropout, seed=seed)
