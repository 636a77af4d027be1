"""The interface every model shares (``score`` / ``score_all``) and state_dict + JSON save/load.

Every model is an ``nn.Module`` subclass of :class:`RatingModel` with a frozen ``@dataclass``
config. Evaluation, top-K and serving only use :meth:`RatingModel.score` (one prediction per
(user, item) pair) and :meth:`RatingModel.score_all` (a user's scores over the whole catalogue),
so they work for every model unchanged (like RecBole's ``predict`` / ``full_sort_predict``).

Saving writes two files into a directory: ``config.json`` (family, class, sizes, config,
constructor extras) and ``state_dict.pt`` (tensors only, read back with
``torch.load(weights_only=True)``); each is written atomically (temp file + ``os.replace``).
Nothing is pickled.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from recsys_pipeline.schema import ITEM_IDX, USER_IDX
from recsys_pipeline.training.data import RatingData

CONFIG_FILE = "config.json"
STATE_FILE = "state_dict.pt"
FORMAT_VERSION = 1
# families load_model may import: module names under recsys_pipeline.models
FAMILIES: tuple[str, ...] = ("bias", "popularity", "mf", "mlp", "neumf", "deepfm",
                             "autoencoder_rating")
# generic score_all expands users × items pairs; cap the pairs per forward pass (memory)
SCORE_ALL_PAIRS = 1 << 20


class RatingModel(nn.Module):
    """Base class: a model scoring (user, item) pairs with ``n_users`` × ``n_items`` ids.

    Subclasses set ``family`` (their module name) and ``config_cls``, implement
    ``forward(users, items) -> [B]`` and may override ``_score_all`` with a faster form.

    Class attributes:
        family: Module name under ``recsys_pipeline.models`` (used by :func:`load_model`).
        config_cls: The frozen dataclass holding the model's hyperparameters.
        trainable: True when ``training.loop.fit`` trains it by gradient descent on MSE;
            False for closed-form models with their own ``fit`` classmethod.
        predicts_ratings: False for ranking-only scorers (popularity) whose scores are not
            on the rating scale, so RMSE/MAE of them are meaningless.
    """

    family: ClassVar[str] = ""
    config_cls: ClassVar[type]
    trainable: ClassVar[bool] = True
    predicts_ratings: ClassVar[bool] = True

    def __init__(self, n_users: int, n_items: int, config: Any) -> None:
        super().__init__()
        if n_users <= 0 or n_items <= 0:
            raise ValueError(f"n_users={n_users} and n_items={n_items} must be positive")
        if not isinstance(config, self.config_cls):
            raise ValueError(f"{type(self).__name__} needs a {self.config_cls.__name__}, "
                             f"got {type(config).__name__}")
        self.n_users = int(n_users)
        self.n_items = int(n_items)
        self.config = config

    # --- the shared interface ---------------------------------------------------------------
    def score(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """Predicted score of each (user, item) pair: ``forward`` after an id range check.

        Call under ``model.eval()`` for evaluation (dropout off, outputs clamped where the
        model clamps). Unknown ids raise instead of silently indexing out of range.

        Args:
            users: ``user_idx`` values.  # [B]
            items: ``item_idx`` values.  # [B]

        Returns:
            One score per pair (a predicted rating unless ``predicts_ratings`` is False).  # [B]
        """
        if users.shape != items.shape or users.ndim != 1:
            raise ValueError(f"users {tuple(users.shape)} and items {tuple(items.shape)} "
                             "must be 1-D and the same shape")
        self._check_ids(users, USER_IDX, self.n_users)
        self._check_ids(items, ITEM_IDX, self.n_items)
        return self(users, items)

    def score_all(self, users: torch.Tensor) -> torch.Tensor:
        """Scores of each user against every item, a new tensor the caller may modify.

        Args:
            users: ``user_idx`` values.  # [B]

        Returns:
            ``out[b, i] == score(users[b], i)``.  # [B, n_items]
        """
        if users.ndim != 1:
            raise ValueError(f"users must be 1-D, got shape {tuple(users.shape)}")
        self._check_ids(users, USER_IDX, self.n_users)
        return self._score_all(users)

    def _score_all(self, users: torch.Tensor) -> torch.Tensor:
        """Generic form: run ``forward`` on the users × items grid, in chunks of users."""
        items = torch.arange(self.n_items, device=users.device)
        chunk = max(1, SCORE_ALL_PAIRS // self.n_items)
        parts = []
        for start in range(0, users.shape[0], chunk):
            u = users[start : start + chunk]
            pred = self(u.repeat_interleave(self.n_items), items.repeat(u.shape[0]))
            parts.append(pred.float().view(u.shape[0], self.n_items))
        if not parts:
            return torch.empty(0, self.n_items, device=users.device)
        return torch.cat(parts)

    def penalty(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor | None:
        """Extra training loss for a batch (e.g. L2 on the rows it touches); None when none."""
        return None

    def prepare(self, train: RatingData) -> None:
        """Data-dependent set-up before the first epoch (e.g. the global mean); default none."""

    # --- persistence ------------------------------------------------------------------------
    def init_args(self) -> dict[str, Any]:
        """Constructor extras beyond (n_users, n_items, config), as JSON values (e.g. shapes)."""
        return {}

    @classmethod
    def from_init_args(
        cls, n_users: int, n_items: int, config: Any, init_args: dict[str, Any]
    ) -> RatingModel:
        """Rebuild an empty model of the saved shape; its state_dict is loaded afterwards."""
        return cls(n_users, n_items, config)

    def save(self, directory: str | os.PathLike[str]) -> Path:
        """Save to ``directory`` (see :func:`save_model`)."""
        return save_model(self, directory)

    @classmethod
    def load(
        cls, directory: str | os.PathLike[str], map_location: str | torch.device = "cpu"
    ) -> RatingModel:
        """Load a model saved by :meth:`save`, checking it is a ``cls`` (see :func:`load_model`)."""
        model = load_model(directory, map_location)
        if not isinstance(model, cls):
            raise ValueError(f"{directory}: holds a {type(model).__name__}, not a {cls.__name__}")
        return model

    # --- helpers ----------------------------------------------------------------------------
    @staticmethod
    def _check_ids(ids: torch.Tensor, column: str, n: int) -> None:
        if ids.dtype.is_floating_point:
            raise ValueError(f"{column} must be an integer tensor, got {ids.dtype}")
        if ids.numel() == 0:
            return
        lo, hi = int(ids.min()), int(ids.max())
        if lo < 0 or hi >= n:
            bad = lo if lo < 0 else hi
            raise ValueError(f"unknown {column} {bad}: the model knows ids 0..{n - 1}")


def config_to_dict(config: Any) -> dict[str, Any]:
    """A frozen config dataclass as JSON-ready primitives (tuples become lists)."""
    return json.loads(json.dumps(dataclasses.asdict(config)))


def config_from_dict(config_cls: type, values: dict[str, Any]) -> Any:
    """Rebuild a config dataclass from :func:`config_to_dict` output (lists back to tuples)."""
    names = {f.name for f in dataclasses.fields(config_cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise ValueError(f"{config_cls.__name__} has no field(s) {unknown}")
    return config_cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})


def with_rating_range(config: Any, rating_range: tuple[float, float] | None) -> Any:
    """``config`` with ``rating_min`` / ``rating_max`` set to ``rating_range`` (a release's
    scale, e.g. 1..5 for ml-1m); unchanged for None or a config without those fields."""
    names = {f.name for f in dataclasses.fields(config)}
    if rating_range is None or not {"rating_min", "rating_max"} <= names:
        return config
    return dataclasses.replace(config, rating_min=rating_range[0], rating_max=rating_range[1])


def atomic_write_bytes(path: Path, write: Any) -> None:
    """Call ``write(tmp_path)`` on a temp file beside ``path``, then ``os.replace`` it in place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_model(model: RatingModel, directory: str | os.PathLike[str]) -> Path:
    """Write ``config.json`` + ``state_dict.pt`` into ``directory``, each atomically.

    Args:
        model: Any :class:`RatingModel`.
        directory: Target folder (created when missing).

    Returns:
        The directory path.
    """
    directory = Path(directory)
    meta = {
        "format_version": FORMAT_VERSION,
        "family": model.family,
        "class": type(model).__name__,
        "n_users": model.n_users,
        "n_items": model.n_items,
        "config": config_to_dict(model.config),
        "init_args": model.init_args(),
    }
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    atomic_write_bytes(directory / STATE_FILE, lambda p: torch.save(state, p))
    text = json.dumps(meta, indent=2, sort_keys=True)
    atomic_write_bytes(directory / CONFIG_FILE, lambda p: p.write_text(text))
    return directory


def load_model(
    directory: str | os.PathLike[str], map_location: str | torch.device = "cpu"
) -> RatingModel:
    """Load a model written by :func:`save_model`, in eval mode.

    Args:
        directory: Folder holding ``config.json`` and ``state_dict.pt``.
        map_location: Device for the weights.

    Returns:
        The model, its class chosen by the ``family`` / ``class`` fields of ``config.json``.

    Raises:
        FileNotFoundError: A file is missing (named).
        ValueError: The family, class or config is unknown.
    """
    return load_saved(directory, map_location, FAMILIES, RatingModel)


def load_saved(
    directory: str | os.PathLike[str],
    map_location: str | torch.device,
    families: tuple[str, ...],
    base_cls: type[nn.Module],
) -> nn.Module:
    """Load a folder written by :func:`save_model` whose family is one of ``families`` and
    whose class derives from ``base_cls`` (shared by the rating and ranking loaders).

    Raises:
        FileNotFoundError: A file is missing (named).
        ValueError: The family, class or config is unknown.
    """
    directory = Path(directory)
    for name in (CONFIG_FILE, STATE_FILE):
        if not (directory / name).is_file():
            raise FileNotFoundError(f"{directory / name}: model file not found")
    meta = json.loads((directory / CONFIG_FILE).read_text())
    family = meta.get("family")
    if family not in families:
        raise ValueError(f"{directory / CONFIG_FILE}: field 'family'={family!r} not in "
                         f"{families}")
    module = importlib.import_module(f"{__package__}.{family}")
    cls = getattr(module, str(meta.get("class")), None)
    if not (isinstance(cls, type) and issubclass(cls, base_cls) and hasattr(cls, "config_cls")):
        raise ValueError(f"{directory / CONFIG_FILE}: field 'class'={meta.get('class')!r} "
                         f"is not a model in {module.__name__}")
    config = config_from_dict(cls.config_cls, meta["config"])
    model = cls.from_init_args(meta["n_users"], meta["n_items"], config, meta["init_args"])
    state = torch.load(directory / STATE_FILE, map_location=map_location, weights_only=True)
    model.load_state_dict(state)
    return model.to(map_location).eval()
