"""The training loop of the ranking models: shuffled device batches, ranking-metric early stop.

Like ``training.loop`` (the MSE rating loop), the epoch data stay on the device; each epoch
draws ``torch.randperm`` from the generator ``(seed, 1, epoch)`` and slices it into batches
(``idx = perm[start:end]``), with no ``DataLoader``. The loss is the model's own
``training_loss(batch, step) -> scalar`` (``step`` counts optimizer steps, e.g. for KL
annealing). After each evaluated epoch a ``validate(model)`` callable returns ranking metrics
(e.g. ``evaluation.strong.evaluate_fold_in``), stored as ``valid_<name>``; the best epoch by
``monitor`` is kept and restored. One line is logged per epoch, ``on_epoch(epoch, metrics)``
is called, and one resumable checkpoint (``training.checkpoint``) is written atomically.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn

from recsys_pipeline.models.base import config_to_dict
from recsys_pipeline.training.checkpoint import (
    FORMAT_VERSION,
    check_resumable,
    load_checkpoint,
    save_checkpoint,
)
from recsys_pipeline.training.device import pick_device, synchronize
from recsys_pipeline.training.optim import OPTIMIZERS, build_optimizer
from recsys_pipeline.training.seed import global_rng_state, scoped_global_rng, torch_generator

logger = logging.getLogger(__name__)

Validate = Callable[[nn.Module], dict[str, float]]
OnEpoch = Callable[[int, dict[str, float]], None]


class EpochData(Protocol):
    """What the loop trains on (``training.ranking_data`` has the implementations)."""

    def __len__(self) -> int: ...

    def to(self, device: torch.device | str) -> EpochData: ...

    def batch(self, index: torch.Tensor) -> tuple[torch.Tensor, ...]: ...


@dataclass(frozen=True)
class RankingTrainConfig:
    """Options of :func:`fit_ranking`.

    Attributes:
        epochs: Maximum passes over the epoch data.
        batch_size: Samples (user rows, sequences or pairs) per gradient step.
        lr: Learning rate.
        weight_decay: Optimizer weight decay (decoupled for ``adamw``).
        optimizer: ``"adam"``, ``"adamw"`` or ``"sgd"`` (momentum 0.9).
        grad_clip: Clip the global gradient norm to this value (None: no clipping).
        patience: Stop after this many evaluations without improvement (None: never).
        min_delta: Smallest change of ``monitor`` that counts as an improvement.
        monitor: Metric selecting the best epoch, e.g. ``"valid_ndcg@100"`` or ``"train_loss"``.
        mode: ``"max"`` or ``"min"``: whether a higher or lower ``monitor`` is better.
        eval_every: Validate every this many epochs (and after the last).
        restore_best: Load the best epoch's weights when fit returns.
        amp: ``torch.autocast`` mixed precision, on CUDA only (ignored on CPU).
        amp_dtype: ``"bf16"`` or ``"fp16"`` (fp16 adds a ``GradScaler``).
        seed: Seeds the shuffles (stream ``(seed, 1, epoch)``) and the global stream that
            dropout and sampling draw from.
        device: ``"auto"``, ``"cpu"`` or ``"cuda"`` (see ``pick_device``).
        checkpoint_path: Per-epoch checkpoint file; an existing one is resumed.
    """

    epochs: int = 50
    batch_size: int = 512
    lr: float = 1e-3
    weight_decay: float = 0.0
    optimizer: str = "adam"
    grad_clip: float | None = None
    patience: int | None = 5
    min_delta: float = 0.0
    monitor: str = "valid_ndcg@10"
    mode: str = "max"
    eval_every: int = 1
    restore_best: bool = True
    amp: bool = False
    amp_dtype: str = "bf16"
    seed: int = 0
    device: str = "auto"
    checkpoint_path: str | None = None

    def __post_init__(self) -> None:
        if min(self.epochs, self.batch_size, self.eval_every) < 1:
            raise ValueError(f"epochs={self.epochs}, batch_size={self.batch_size} and "
                             f"eval_every={self.eval_every} must be >= 1")
        if self.lr <= 0 or self.weight_decay < 0:
            raise ValueError(f"lr={self.lr} must be > 0 and weight_decay={self.weight_decay} >= 0")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer={self.optimizer!r} must be one of {OPTIMIZERS}")
        if self.patience is not None and self.patience < 1:
            raise ValueError(f"patience={self.patience} must be >= 1 or None")
        if self.mode not in ("min", "max") or self.amp_dtype not in ("bf16", "fp16"):
            raise ValueError(f"mode={self.mode!r} must be 'min'/'max' and amp_dtype="
                             f"{self.amp_dtype!r} 'bf16'/'fp16'")
        if self.grad_clip is not None and self.grad_clip <= 0:
            raise ValueError(f"grad_clip={self.grad_clip} must be > 0 or None")


@dataclass
class RankingFitResult:
    """What :func:`fit_ranking` returns.

    Attributes:
        history: One dict per epoch: epoch, train_loss, valid_* (evaluated epochs),
            samples_per_s, epoch_train_seconds (the epoch's training pass), seconds.
        best_epoch: Epoch whose weights the model holds (the last epoch without validation).
        best_metric: ``monitor`` at that epoch.
        monitor: The metric name.
        stopped_early: True when patience ran out.
        device: The device trained on.
        steps: Optimizer steps taken.
    """

    history: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int = 0
    best_metric: float = math.nan
    monitor: str = ""
    stopped_early: bool = False
    device: str = "cpu"
    steps: int = 0


def _better(value: float, best: float, config: RankingTrainConfig) -> bool:
    if math.isnan(best):
        return not math.isnan(value)
    if config.mode == "min":
        return value < best - config.min_delta
    return value > best + config.min_delta


@dataclass
class _Run:
    """Everything one epoch needs besides the mutable state dict."""

    model: nn.Module
    data: EpochData
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler | None
    amp_dtype: torch.dtype | None
    config: RankingTrainConfig
    device: torch.device


def _train_epoch(run: _Run, epoch: int, state: dict[str, Any]) -> float:
    """One shuffled pass; returns the sample-weighted mean loss (one host sync per epoch)."""
    run.model.train()
    n, cfg = len(run.data), run.config
    gen = torch_generator(cfg.seed, 1, epoch, device=run.device)
    perm = torch.randperm(n, generator=gen, device=run.device)
    total = torch.zeros((), dtype=torch.float64, device=run.device)
    for start in range(0, n, cfg.batch_size):
        idx = perm[start : start + cfg.batch_size]
        batch = run.data.batch(idx)
        with torch.autocast(run.device.type, dtype=run.amp_dtype or torch.float32,
                            enabled=run.amp_dtype is not None):
            loss = run.model.training_loss(batch, int(state["step"])).float()
        run.optimizer.zero_grad(set_to_none=True)
        if run.scaler is not None:
            run.scaler.scale(loss).backward()
            run.scaler.unscale_(run.optimizer)
        else:
            loss.backward()
        if cfg.grad_clip is not None:
            nn.utils.clip_grad_norm_(run.model.parameters(), cfg.grad_clip)
        if run.scaler is not None:
            run.scaler.step(run.optimizer)
            run.scaler.update()
        else:
            run.optimizer.step()
        total += loss.detach().double() * idx.numel()
        state["step"] += 1
    return float(total) / n


def fit_ranking(
    model: nn.Module,
    data: EpochData,
    validate: Validate | None = None,
    config: RankingTrainConfig | None = None,
    on_epoch: OnEpoch | None = None,
) -> RankingFitResult:
    """Train a ranking model on its own ``training_loss`` with early stopping on ``validate``.

    Args:
        model: A module with ``training_loss(batch, step) -> scalar`` and a frozen ``config``;
            an optional ``prepare_training(data)`` runs once before the first epoch.
        data: Epoch data (``training.ranking_data``); moved to the device once.
        validate: ``model -> {metric: value}`` run in eval mode under ``no_grad`` (None: no
            validation; the weights of the last epoch are kept).
        config: Options; defaults to ``RankingTrainConfig()``.
        on_epoch: Called after each epoch with ``(epoch, metrics)``.

    Returns:
        History and the best epoch; the model ends on the device in eval mode.

    Raises:
        ValueError: Empty data, an unknown ``monitor``, a checkpoint from another
            configuration, or a non-finite training loss.
    """
    config = config or RankingTrainConfig()
    if len(data) == 0:
        raise ValueError("fit_ranking: the epoch data is empty")
    device = pick_device(config.device)
    model.to(device)
    data = data.to(device)
    amp_dtype = None
    if config.amp and device.type == "cuda":
        amp_dtype = torch.bfloat16 if config.amp_dtype == "bf16" else torch.float16
    scaler = torch.amp.GradScaler("cuda") if amp_dtype == torch.float16 else None
    optimizer = build_optimizer(model.parameters(), config.optimizer, config.lr,
                                config.weight_decay)
    run = _Run(model, data, optimizer, scaler, amp_dtype, config, device)
    path = Path(config.checkpoint_path) if config.checkpoint_path else None
    if path is not None and path.exists():
        state = _resume(path, run)
    else:
        if hasattr(model, "prepare_training"):
            model.prepare_training(data)
        state = {"epoch": 0, "step": 0, "best_model": None, "best_metric": math.nan,
                 "best_epoch": 0, "bad_epochs": 0, "stopped": False, "history": [], "rng": {}}
    with scoped_global_rng(device, config.seed, state["rng"]):
        for epoch in range(int(state["epoch"]) + 1, config.epochs + 1):
            if state["stopped"]:
                break
            _epoch(run, epoch, state, validate, on_epoch, path)
    if config.restore_best and state["best_model"] is not None:
        model.load_state_dict(state["best_model"])
    model.eval()
    return RankingFitResult(
        history=list(state["history"]), best_epoch=int(state["best_epoch"]),
        best_metric=float(state["best_metric"]), monitor=config.monitor,
        stopped_early=bool(state["stopped"]), device=str(device), steps=int(state["step"]))


def _epoch(run: _Run, epoch: int, state: dict[str, Any], validate: Validate | None,
           on_epoch: OnEpoch | None, path: Path | None) -> None:
    """Train one epoch, validate, track the best weights, report and checkpoint."""
    cfg = run.config
    synchronize(run.device)
    t0 = time.perf_counter()
    train_loss = _train_epoch(run, epoch, state)
    synchronize(run.device)
    train_s = time.perf_counter() - t0
    if not math.isfinite(train_loss):
        raise ValueError(f"training diverged at epoch {epoch}: train_loss={train_loss} "
                         f"(lr={cfg.lr}); lower the learning rate")
    metrics = {"train_loss": train_loss}
    evaluated = validate is not None and (epoch % cfg.eval_every == 0 or epoch == cfg.epochs)
    if evaluated:
        run.model.eval()
        with torch.no_grad():
            metrics.update({f"valid_{k}": float(v) for k, v in validate(run.model).items()})
    metrics.update(samples_per_s=len(run.data) / max(train_s, 1e-9), epoch_train_seconds=train_s,
                   seconds=time.perf_counter() - t0)
    improved = False
    if evaluated or validate is None:
        if cfg.monitor not in metrics:
            raise ValueError(f"monitor={cfg.monitor!r} is not among the metrics {sorted(metrics)}")
        improved = validate is None or _better(metrics[cfg.monitor], state["best_metric"], cfg)
        if improved:
            state.update(best_metric=metrics[cfg.monitor], best_epoch=epoch, bad_epochs=0,
                         best_model=None if validate is None else
                         {k: v.detach().clone() for k, v in run.model.state_dict().items()})
        else:
            state["bad_epochs"] += 1
        state["stopped"] = cfg.patience is not None and state["bad_epochs"] >= cfg.patience
    state["epoch"] = epoch
    state["history"].append({"epoch": epoch, **metrics})
    shown = f" {cfg.monitor}={metrics[cfg.monitor]:.4f}" if cfg.monitor in metrics else ""
    logger.info("epoch %d/%d train_loss=%.4f%s %.0f samples/s %.2fs%s", epoch, cfg.epochs,
                train_loss, shown, metrics["samples_per_s"], metrics["seconds"],
                " *" if improved else "")
    if on_epoch is not None:
        on_epoch(epoch, dict(metrics))
    if path is not None:
        _save(path, run, state)


def _save(path: Path, run: _Run, state: dict[str, Any]) -> None:
    state["rng"] = global_rng_state(run.device)
    save_checkpoint(path, {
        **state, "format_version": FORMAT_VERSION, "model": run.model.state_dict(),
        "optimizer": run.optimizer.state_dict(),
        "scaler": None if run.scaler is None else run.scaler.state_dict(),
        "config": dataclasses.asdict(run.config),
        "model_config": config_to_dict(run.model.config),
    })


def _resume(path: Path, run: _Run) -> dict[str, Any]:
    ckpt = load_checkpoint(path, map_location=run.device)
    check_resumable(path, ckpt, dataclasses.asdict(run.config), config_to_dict(run.model.config))
    run.model.load_state_dict(ckpt["model"])
    run.optimizer.load_state_dict(ckpt["optimizer"])
    if run.scaler is not None and ckpt.get("scaler") is not None:
        run.scaler.load_state_dict(ckpt["scaler"])
    logger.info("resuming from %s after epoch %d", path, ckpt["epoch"])
    keys = ("epoch", "step", "best_model", "best_metric", "best_epoch", "bad_epochs", "stopped",
            "history", "rng")
    return {k: ckpt[k] for k in keys}
