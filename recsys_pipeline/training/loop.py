"""The one training loop for gradient-trained rating models (MSE), with early stopping and resume.

Epoch tensors stay on the device; each epoch shuffles with ``torch.randperm`` drawn from an
explicit generator and slices batches (``idx = perm[start:end]``), as LensKit's FlexMF does;
no ``DataLoader``. After each epoch: validate in large batches, log one line, call
``on_epoch(epoch, metrics)``, and write one resumable checkpoint.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from recsys_pipeline.evaluation.rating import predict
from recsys_pipeline.models.base import RatingModel, config_to_dict
from recsys_pipeline.training.checkpoint import (
    FORMAT_VERSION,
    check_resumable,
    load_checkpoint,
    save_checkpoint,
)
from recsys_pipeline.training.data import RatingData
from recsys_pipeline.training.device import pick_device, synchronize
from recsys_pipeline.training.optim import OPTIMIZERS, build_optimizer
from recsys_pipeline.training.seed import global_rng_state, scoped_global_rng, torch_generator

logger = logging.getLogger(__name__)

METRICS: tuple[str, ...] = ("train_loss", "valid_loss", "valid_rmse", "valid_mae")


@dataclass(frozen=True)
class TrainConfig:
    """Options of :func:`fit`.

    Attributes:
        epochs: Maximum passes over the training data.
        batch_size: Rows per gradient step.
        eval_batch_size: Rows per validation forward pass.
        lr: Learning rate.
        weight_decay: Optimizer weight decay (decoupled for ``adamw``, L2 otherwise).
        optimizer: ``"adam"``, ``"adamw"`` or ``"sgd"`` (momentum 0.9).
        patience: Stop after this many epochs without improvement; None never stops early.
        min_delta: Smallest change of the monitored metric that counts as an improvement.
        monitor: Metric to select the best epoch by (one of ``METRICS``).
        mode: ``"min"`` or ``"max"``: whether a lower or higher ``monitor`` is better.
        restore_best: Load the best epoch's weights into the model when fit returns.
        amp: Mixed precision with ``torch.autocast``; applies on CUDA only (ignored on CPU).
        amp_dtype: ``"bf16"`` or ``"fp16"`` (fp16 adds a ``GradScaler``).
        seed: Seeds the shuffles (epoch e uses stream ``(seed, 1, e)``) and dropout.
        device: ``"auto"``, ``"cpu"`` or ``"cuda"`` (see ``pick_device``).
        checkpoint_path: File for the per-epoch checkpoint; an existing one is resumed.
    """

    epochs: int = 20
    batch_size: int = 4096
    eval_batch_size: int = 65536
    lr: float = 1e-3
    weight_decay: float = 0.0
    optimizer: str = "adam"
    patience: int | None = 3
    min_delta: float = 0.0
    monitor: str = "valid_rmse"
    mode: str = "min"
    restore_best: bool = True
    amp: bool = False
    amp_dtype: str = "bf16"
    seed: int = 0
    device: str = "auto"
    checkpoint_path: str | None = None

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1 or self.eval_batch_size < 1:
            raise ValueError(f"epochs={self.epochs}, batch_size={self.batch_size} and "
                             f"eval_batch_size={self.eval_batch_size} must be >= 1")
        if self.lr <= 0 or self.weight_decay < 0:
            raise ValueError(f"lr={self.lr} must be > 0 and weight_decay={self.weight_decay} >= 0")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer={self.optimizer!r} must be one of {OPTIMIZERS}")
        if self.patience is not None and self.patience < 1:
            raise ValueError(f"patience={self.patience} must be >= 1 or None")
        if self.monitor not in METRICS or self.mode not in ("min", "max"):
            raise ValueError(f"monitor={self.monitor!r} must be one of {METRICS} and "
                             f"mode={self.mode!r} 'min' or 'max'")
        if self.amp_dtype not in ("bf16", "fp16"):
            raise ValueError(f"amp_dtype={self.amp_dtype!r} must be 'bf16' or 'fp16'")


@dataclass
class FitResult:
    """What :func:`fit` returns.

    Attributes:
        history: One dict per epoch run: epoch, train_loss, valid_loss (MSE), valid_rmse,
            valid_mae, samples_per_s, seconds.
        best_epoch: 1-based epoch with the best ``monitor`` value.
        best_metric: That value.
        monitor: The metric name.
        stopped_early: True when patience ran out before ``epochs``.
        device: The device trained on.
    """

    history: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int = 0
    best_metric: float = math.nan
    monitor: str = "valid_rmse"
    stopped_early: bool = False
    device: str = "cpu"


def _batch_bounds(n: int, batch_size: int) -> list[tuple[int, int]]:
    """``[start, end)`` slices; a trailing batch of 1 row joins the previous one (BatchNorm)."""
    bounds = [(s, min(s + batch_size, n)) for s in range(0, n, batch_size)]
    if len(bounds) > 1 and bounds[-1][1] - bounds[-1][0] == 1:
        bounds[-2:] = [(bounds[-2][0], n)]
    return bounds


def _train_epoch(
    model: RatingModel,
    train: RatingData,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler | None,
    amp_dtype: torch.dtype | None,
    config: TrainConfig,
    epoch: int,
) -> float:
    """One shuffled pass; returns the mean training MSE (one host sync per epoch)."""
    model.train()
    device = train.device
    gen = torch_generator(config.seed, 1, epoch, device=device)
    perm = torch.randperm(len(train), generator=gen, device=device)
    total = torch.zeros((), device=device, dtype=torch.float64)
    for start, end in _batch_bounds(len(train), config.batch_size):
        idx = perm[start:end]
        users, items, ratings = train.users[idx], train.items[idx], train.ratings[idx]
        with torch.autocast(device.type, dtype=amp_dtype or torch.float32,
                            enabled=amp_dtype is not None):
            mse = F.mse_loss(model(users, items).float(), ratings)
            penalty = model.penalty(users, items)
            loss = mse if penalty is None else mse + penalty.float()
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            optimizer.step()
        total += mse.detach().double() * (end - start)
    return float(total) / len(train)


def _validate(model: RatingModel, valid: RatingData, batch_size: int) -> dict[str, float]:
    err = predict(model, valid, batch_size).double() - valid.ratings.double()
    mse = float(err.pow(2).mean())
    return {"valid_loss": mse, "valid_rmse": math.sqrt(mse), "valid_mae": float(err.abs().mean())}


def _improved(value: float, best: float, config: TrainConfig) -> bool:
    if math.isnan(best):
        return True
    if config.mode == "min":
        return value < best - config.min_delta
    return value > best + config.min_delta


def _state_copy(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


_STATE_KEYS = ("epoch", "best_model", "best_metric", "best_epoch", "bad_epochs", "stopped",
               "history", "rng")


def _fresh_state(model: RatingModel, train: RatingData) -> dict[str, Any]:
    model.prepare(train)
    return {"epoch": 0, "best_model": None, "best_metric": math.nan, "best_epoch": 0,
            "bad_epochs": 0, "stopped": False, "history": [], "rng": {}}


def _resume_state(
    path: Path, model: RatingModel, optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler | None, config: TrainConfig, device: torch.device,
) -> dict[str, Any]:
    ckpt = load_checkpoint(path, map_location=device)
    check_resumable(path, ckpt, dataclasses.asdict(config), config_to_dict(model.config))
    model.load_state_dict(ckpt["model"])
    optimizer.load_state_dict(ckpt["optimizer"])
    if scaler is not None and ckpt.get("scaler") is not None:
        scaler.load_state_dict(ckpt["scaler"])
    logger.info("resuming from %s after epoch %d", path, ckpt["epoch"])
    return {k: ckpt[k] for k in _STATE_KEYS}


def fit(
    model: RatingModel,
    train: RatingData,
    valid: RatingData,
    config: TrainConfig | None = None,
    on_epoch: Callable[[int, dict[str, float]], None] | None = None,
) -> FitResult:
    """Train ``model`` on MSE with early stopping, resumable checkpoints and best-weight restore.

    Args:
        model: A gradient-trained :class:`RatingModel` (``trainable`` True).
        train: Training interactions (moved to the device once).
        valid: Validation interactions; ``valid_*`` metrics come from them.
        config: Options; defaults to ``TrainConfig()``.
        on_epoch: Called after each epoch with ``(epoch, metrics)`` (e.g. an MLflow logger).

    Returns:
        The per-epoch history and the best epoch; the model ends on the device, in eval mode,
        holding the best epoch's weights when ``restore_best``.

    Raises:
        ValueError: Untrainable model, empty or out-of-range data, a checkpoint written under
            another configuration, or a non-finite training loss.
    """
    config = config or TrainConfig()
    if not getattr(model, "trainable", False):
        raise ValueError(f"{type(model).__name__} is not gradient-trained; use its fit() method")
    if len(train) == 0 or len(valid) == 0:
        raise ValueError(f"fit needs non-empty data: train={len(train)}, valid={len(valid)} rows")
    device = pick_device(config.device)
    model.to(device)
    train, valid = train.to(device), valid.to(device)
    for data in (train, valid):
        data.validate(n_users=model.n_users, n_items=model.n_items)
    amp_dtype = None
    if config.amp and device.type == "cuda":
        amp_dtype = torch.bfloat16 if config.amp_dtype == "bf16" else torch.float16
    scaler = torch.amp.GradScaler("cuda") if amp_dtype == torch.float16 else None
    optimizer = build_optimizer(model.parameters(), config.optimizer, config.lr,
                                config.weight_decay)
    path = Path(config.checkpoint_path) if config.checkpoint_path else None
    if path is not None and path.exists():
        state = _resume_state(path, model, optimizer, scaler, config, device)
    else:
        state = _fresh_state(model, train)
    with scoped_global_rng(device, config.seed, state["rng"]):
        _run_epochs(model, train, valid, optimizer, scaler, amp_dtype, config, path, state,
                    on_epoch)
    if config.restore_best and state["best_model"] is not None:
        model.load_state_dict(state["best_model"])
    model.eval()
    return FitResult(history=list(state["history"]), best_epoch=int(state["best_epoch"]),
                     best_metric=float(state["best_metric"]), monitor=config.monitor,
                     stopped_early=bool(state["stopped"]), device=str(device))


def _run_epochs(
    model: RatingModel, train: RatingData, valid: RatingData, optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler | None, amp_dtype: torch.dtype | None, config: TrainConfig,
    path: Path | None, state: dict[str, Any],
    on_epoch: Callable[[int, dict[str, float]], None] | None,
) -> None:
    """Epochs ``state["epoch"] + 1 .. config.epochs``, updating ``state`` in place."""
    device = train.device
    for epoch in range(int(state["epoch"]) + 1, config.epochs + 1):
        if state["stopped"]:
            break
        synchronize(device)
        t0 = time.perf_counter()
        train_loss = _train_epoch(model, train, optimizer, scaler, amp_dtype, config, epoch)
        train_s = time.perf_counter() - t0
        if not math.isfinite(train_loss):
            raise ValueError(f"training diverged at epoch {epoch}: train_loss={train_loss} "
                             f"(lr={config.lr}); lower the learning rate")
        metrics = {"train_loss": train_loss, **_validate(model, valid, config.eval_batch_size)}
        metrics["samples_per_s"] = len(train) / max(train_s, 1e-9)
        metrics["seconds"] = time.perf_counter() - t0
        value = metrics[config.monitor]
        improved = _improved(value, float(state["best_metric"]), config)
        if improved:
            state.update(best_metric=value, best_epoch=epoch, bad_epochs=0,
                         best_model=_state_copy(model))
        else:
            state["bad_epochs"] += 1
        state["stopped"] = config.patience is not None and state["bad_epochs"] >= config.patience
        state["epoch"] = epoch
        state["history"].append({"epoch": epoch, **metrics})
        logger.info("epoch %d/%d train_loss=%.4f valid_rmse=%.4f valid_mae=%.4f %.0f samples/s "
                    "%.2fs%s", epoch, config.epochs, train_loss, metrics["valid_rmse"],
                    metrics["valid_mae"], metrics["samples_per_s"], metrics["seconds"],
                    " *" if improved else "")
        if on_epoch is not None:
            on_epoch(epoch, dict(metrics))
        if path is not None:
            state["rng"] = global_rng_state(device)
            save_checkpoint(path, {
                **state, "format_version": FORMAT_VERSION, "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scaler": None if scaler is None else scaler.state_dict(),
                "config": dataclasses.asdict(config), "model_config": config_to_dict(model.config),
            })
        if state["stopped"]:
            logger.info("early stop after epoch %d: best %s=%.4f at epoch %d", epoch,
                        config.monitor, state["best_metric"], state["best_epoch"])
