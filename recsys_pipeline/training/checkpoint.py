"""One resumable checkpoint dict per training run, written atomically, read weights-only.

The dict holds only tensors and primitives (so ``torch.load(weights_only=True)`` reads it)::

    {"format_version": int, "epoch": int, "model": state_dict, "optimizer": state_dict,
     "scaler": state_dict | None, "best_model": state_dict | None, "best_metric": float,
     "best_epoch": int, "bad_epochs": int, "stopped": bool, "history": [dict[str, float]],
     "config": dict, "model_config": dict, "rng": {"cpu": ByteTensor, "cuda"?: ByteTensor}}
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch

FORMAT_VERSION = 1
REQUIRED_KEYS: tuple[str, ...] = (
    "format_version", "epoch", "model", "optimizer", "best_model", "best_metric", "best_epoch",
    "bad_epochs", "stopped", "history", "config", "model_config", "rng",
)


def save_checkpoint(path: str | os.PathLike[str], checkpoint: dict[str, Any]) -> Path:
    """Write ``checkpoint`` to ``path`` atomically (temp file in the same folder + os.replace).

    A crash mid-write leaves the previous checkpoint intact, never a truncated file.

    Args:
        path: Target file (parent folders are created).
        checkpoint: The dict described in the module docstring.

    Returns:
        The path written.
    """
    missing = [k for k in REQUIRED_KEYS if k not in checkpoint]
    if missing:
        raise ValueError(f"{path}: checkpoint lacks key(s) {missing}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        torch.save(checkpoint, tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def load_checkpoint(
    path: str | os.PathLike[str], map_location: str | torch.device = "cpu"
) -> dict[str, Any]:
    """Read a checkpoint with ``torch.load(weights_only=True)`` (no arbitrary unpickling).

    Args:
        path: File written by :func:`save_checkpoint`.
        map_location: Device for the tensors.

    Returns:
        The checkpoint dict.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: The file lacks required keys or has another format version.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: checkpoint not found")
    checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    if not isinstance(checkpoint, dict):
        raise ValueError(f"{path}: checkpoint is a {type(checkpoint).__name__}, not a dict")
    missing = [k for k in REQUIRED_KEYS if k not in checkpoint]
    if missing:
        raise ValueError(f"{path}: checkpoint lacks key(s) {missing}")
    if checkpoint["format_version"] != FORMAT_VERSION:
        raise ValueError(f"{path}: format_version={checkpoint['format_version']}, "
                         f"expected {FORMAT_VERSION}")
    return checkpoint


def check_resumable(
    path: str | os.PathLike[str],
    checkpoint: dict[str, Any],
    config: dict[str, Any],
    model_config: dict[str, Any],
    free_fields: tuple[str, ...] = ("epochs", "checkpoint_path", "device", "patience"),
) -> None:
    """Raise ``ValueError`` when a checkpoint was written under a different configuration.

    Args:
        path: The checkpoint file (for the message).
        checkpoint: The loaded dict.
        config: The current training config as a dict.
        model_config: The current model config as a dict.
        free_fields: Training fields that may change on resume (e.g. more epochs).
    """
    for name, saved, now in (("config", checkpoint["config"], config),
                             ("model_config", checkpoint["model_config"], model_config)):
        keys = sorted((set(saved) | set(now)) - set(free_fields if name == "config" else ()))
        diff = {k: (saved.get(k), now.get(k)) for k in keys if saved.get(k) != now.get(k)}
        if diff:
            raise ValueError(f"{path}: cannot resume, {name} differs (saved, now): {diff}")
