"""One experiment: build a model from its config, train it, evaluate it on valid and test.

This is the single core call behind every train asset (and the benchmarks). It knows nothing
of Dagster or MLflow: progress goes out through ``on_epoch(epoch, metrics)``.

Evaluation, for every model:

* rating metrics (RMSE, MAE, FCP; see ``evaluation.rating``) on valid and test, for models
  that predict ratings (not for the popularity ranker);
* full-catalogue top-K ranking metrics (P/R/NDCG/MAP/HR/MRR@K and coverage@K; see
  ``evaluation.topk``) where an item is relevant when its held-out rating is ``>=
  relevance_threshold``. Items the user rated in training are never recommended; for test,
  the user's validation items are excluded too (they are known and cannot be test hits).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import torch

from recsys_pipeline.evaluation.rating import evaluate_ratings, mae, predict, rmse
from recsys_pipeline.evaluation.topk import ItemSets, evaluate_topk
from recsys_pipeline.models.autoencoder_rating import (
    AutoEncoderRatingConfig,
    AutoEncoderRatingModel,
)
from recsys_pipeline.models.base import RatingModel
from recsys_pipeline.models.bias import BiasConfig, BiasModel
from recsys_pipeline.models.deepfm import DeepFMConfig, DeepFMModel, year_buckets
from recsys_pipeline.models.mf import MFConfig, MFModel
from recsys_pipeline.models.mlp import MLPConfig, MLPModel
from recsys_pipeline.models.neumf import NeuMFConfig, NeuMFModel
from recsys_pipeline.models.popularity import PopularityConfig, PopularityModel
from recsys_pipeline.training.data import RatingData
from recsys_pipeline.training.device import model_device, pick_device, synchronize
from recsys_pipeline.training.loop import TrainConfig, fit
from recsys_pipeline.training.ranking_data import CSRTensors
from recsys_pipeline.training.ranking_loop import RankingTrainConfig, fit_ranking

logger = logging.getLogger(__name__)

# model config dataclass -> model class (the config alone says which model to build)
MODEL_CLASSES: dict[type, type[RatingModel]] = {
    BiasConfig: BiasModel, PopularityConfig: PopularityModel, MFConfig: MFModel,
    MLPConfig: MLPModel, NeuMFConfig: NeuMFModel, DeepFMConfig: DeepFMModel,
    AutoEncoderRatingConfig: AutoEncoderRatingModel,
}
OnEpoch = Callable[[int, dict[str, float]], None]


@dataclass(frozen=True)
class ItemFeatures:
    """Item side features as model buffers (DeepFM uses them; other models ignore them).

    Attributes:
        genres: Genre multi-hot or None.  # [n_items, n_genres]
        year_bucket: Year bucket per item (0 = unknown) or None.  # [n_items]
        n_year_buckets: Number of year buckets.
        tags: Tag multi-hot or None.  # [n_items, n_tags]
    """

    genres: torch.Tensor | None = None
    year_bucket: torch.Tensor | None = None
    n_year_buckets: int | None = None
    tags: torch.Tensor | None = None

    @classmethod
    def from_arrays(cls, genres: np.ndarray | None, years: np.ndarray | None,
                    tags: np.ndarray | None = None, year_width: int = 10) -> ItemFeatures:
        """From numpy arrays (e.g. ``data.item_features.ItemSideFeatures``); empty → None."""
        def tensor(a: np.ndarray | None) -> torch.Tensor | None:
            return None if a is None or a.shape[1] == 0 else torch.from_numpy(a).float()

        buckets, n_buckets = (None, None) if years is None else year_buckets(years, year_width)
        return cls(tensor(genres), buckets, n_buckets, tensor(tags))


@dataclass(frozen=True)
class ExperimentData:
    """The three prediction splits and the index space, on the CPU.

    Attributes:
        train: Interactions to fit.
        valid: Interactions for early stopping and model selection.
        test: Held-out interactions reported once.
        n_users: Size of the user index space (rows of the user map).
        n_items: Size of the item index space (rows of the item map).
        item_features: Side features for feature-aware models.
    """

    train: RatingData
    valid: RatingData
    test: RatingData
    n_users: int
    n_items: int
    item_features: ItemFeatures | None = None

    @classmethod
    def from_tables(cls, train: pa.Table, valid: pa.Table, test: pa.Table, n_users: int,
                    n_items: int, item_features: ItemFeatures | None = None) -> ExperimentData:
        """From ``schema.ENCODED_RATINGS_SCHEMA`` tables; indices are range-checked."""
        parts = [RatingData.from_table(t, n_users=n_users, n_items=n_items)
                 for t in (train, valid, test)]
        for name, part in zip(("train", "valid", "test"), parts, strict=True):
            if len(part) == 0:
                raise ValueError(f"split {name!r} has no ratings")
        return cls(*parts, n_users=n_users, n_items=n_items, item_features=item_features)


@dataclass(frozen=True)
class EvalConfig:
    """Options of the final evaluation.

    Attributes:
        ks: Ranking cut-offs K.
        relevance_threshold: A held-out rating ``>=`` this is relevant.
        user_batch: Users per ``score_all`` call.
        max_users: Rank a fixed sample of this many users per split (see
            ``evaluation.topk.evaluate_topk``); None ranks every user. Rating metrics always
            cover every held-out rating.
    """

    ks: tuple[int, ...] = (10,)
    relevance_threshold: float = 4.0
    user_batch: int = 1024
    max_users: int | None = None


@dataclass
class ExperimentResult:
    """What :func:`run_experiment` returns.

    Attributes:
        model: The trained model, in eval mode, on the training device.
        history: Per-epoch metrics (``training.loop.FitResult.history``); one row for a
            closed-form rating model, none for the popularity ranker.
        best_epoch: Epoch whose weights the model holds (1 for closed-form models).
        valid: Final metrics on valid (rating metrics when the model predicts ratings, then
            ranking metrics), keys such as ``rmse`` and ``ndcg@10``.
        test: The same on test.
        selection_metric: The valid metric models of a family are compared by.
        selection_mode: ``"min"`` or ``"max"``: which direction is better.
        device: Device trained on.
        train_seconds: Wall time of fitting.
        eval_seconds: Wall time of the final evaluation.
    """

    model: RatingModel
    history: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int = 1
    valid: dict[str, float] = field(default_factory=dict)
    test: dict[str, float] = field(default_factory=dict)
    selection_metric: str = "rmse"
    selection_mode: str = "min"
    device: str = "cpu"
    train_seconds: float = 0.0
    eval_seconds: float = 0.0


def build_model(config: Any, n_users: int, n_items: int,
                features: ItemFeatures | None = None) -> RatingModel:
    """An untrained gradient-trained model for ``config`` (DeepFM gets the side features)."""
    cls = MODEL_CLASSES.get(type(config))
    if cls is None:
        raise ValueError(f"no model for config type {type(config).__name__}; "
                         f"known: {[c.__name__ for c in MODEL_CLASSES]}")
    if cls is DeepFMModel and features is not None:
        return DeepFMModel(n_users, n_items, config, item_genres=features.genres,
                           item_year_bucket=features.year_bucket,
                           n_year_buckets=features.n_year_buckets, item_tags=features.tags)
    return cls(n_users, n_items, config)


def selection_metric(model: RatingModel, ks: tuple[int, ...]) -> tuple[str, str]:
    """``(metric, mode)`` a model is selected by: valid RMSE, or NDCG@K for pure rankers."""
    if model.predicts_ratings:
        return "rmse", "min"
    return f"ndcg@{min(ks)}", "max"


def evaluate_split(model: RatingModel, data: RatingData, exclude: ItemSets,
                   config: EvalConfig) -> dict[str, float]:
    """Rating metrics (when the model predicts ratings) and ranking metrics on ``data``."""
    device = model_device(model)
    data = data.to(device)
    out: dict[str, float] = {}
    if model.predicts_ratings:
        out.update(evaluate_ratings(model, data))
        out.pop("n_ratings", None)
    ranking = evaluate_topk(model, data, exclude.to(device), ks=config.ks,
                            relevance_threshold=config.relevance_threshold,
                            batch_size=config.user_batch, max_users=config.max_users)
    out.update({k: v for k, v in ranking.items() if k != "n_users"})
    out["n_ratings"], out["n_ranked_users"] = float(len(data)), ranking["n_users"]
    return out


def _fit_closed_form(cls: type[RatingModel], data: ExperimentData, config: Any,
                     device: torch.device) -> tuple[RatingModel, list[dict[str, float]]]:
    """Fit bias / popularity; a rating model gets one history row like an epoch's."""
    t0 = time.perf_counter()
    model = cls.fit(data.train.to(device), data.n_users, data.n_items, config)  # type: ignore[attr-defined]
    synchronize(device)
    seconds = time.perf_counter() - t0
    if not model.predicts_ratings:
        return model, []
    train_m = evaluate_ratings(model, data.train.to(device))
    valid_m = evaluate_ratings(model, data.valid.to(device))
    row = {"epoch": 1.0, "train_loss": train_m["rmse"] ** 2, "valid_loss": valid_m["rmse"] ** 2,
           "valid_rmse": valid_m["rmse"], "valid_mae": valid_m["mae"],
           "samples_per_s": len(data.train) / max(seconds, 1e-9), "seconds": seconds}
    return model, [row]


def _row_loop(config: TrainConfig) -> RankingTrainConfig:
    """The row loop's options from the rating loop's: early stop on the valid RMSE."""
    return RankingTrainConfig(
        epochs=config.epochs, batch_size=config.batch_size, lr=config.lr,
        weight_decay=config.weight_decay, optimizer=config.optimizer, patience=config.patience,
        min_delta=config.min_delta, monitor="valid_rmse", mode="min",
        restore_best=config.restore_best, amp=config.amp, amp_dtype=config.amp_dtype,
        seed=config.seed, device=config.device, checkpoint_path=config.checkpoint_path)


def _fit_rows(cls: type[RatingModel], data: ExperimentData, config: Any,
              train_config: TrainConfig, on_epoch: OnEpoch | None
              ) -> tuple[RatingModel, list[dict[str, float]], int]:
    """Fit a row-trained rating model (the rating autoencoder) on the users' train rows.

    The epoch data are the train split as a ``[n_users, n_items]`` CSR matrix of ratings,
    batches drawn from the users who have train ratings; the model keeps the whole matrix
    as its history (``FoldInModel.prepare_training``), so a user's scores come from their
    own train row; ``model.prepare(train)`` starts its output at the train mean. The loss is
    the model's own (masked MSE on observed ratings); after each
    epoch the valid RMSE / MAE are measured and the best epoch by valid RMSE is restored.
    History rows carry ``train_loss``, ``valid_loss`` (valid MSE), ``valid_rmse`` and
    ``valid_mae`` like those of ``training.loop.fit``.
    """
    model = cls(data.n_users, data.n_items, config)
    rows = CSRTensors.from_scipy(data.train.to_csr(data.n_users, data.n_items)).nonempty()
    model.prepare(data.train)
    valid = data.valid

    def validate(m: torch.nn.Module) -> dict[str, float]:
        pred = predict(m, valid.to(model_device(m)))
        truth = valid.ratings.to(pred.device)
        out = {"rmse": rmse(pred, truth), "mae": mae(pred, truth)}
        return {"loss": out["rmse"] ** 2, **out}

    fitted = fit_ranking(model, rows, validate, _row_loop(train_config), on_epoch)
    return model, fitted.history, fitted.best_epoch


def run_experiment(
    data: ExperimentData,
    model_config: Any,
    train_config: TrainConfig | None = None,
    eval_config: EvalConfig | None = None,
    on_epoch: OnEpoch | None = None,
) -> ExperimentResult:
    """Train the model ``model_config`` describes on ``data.train`` and evaluate it.

    Gradient-trained models go through ``training.loop.fit`` (MSE, early stopping on valid,
    best weights restored); bias and popularity use their closed-form ``fit``; row-trained
    models (the rating autoencoder: ``row_trained``) go through
    ``training.ranking_loop.fit_ranking`` on the users' train rating rows with their own
    masked loss, early-stopped on the valid RMSE (see :func:`_fit_rows`).

    Args:
        data: Splits and index sizes.
        model_config: A model config dataclass (``MFConfig``, ``DeepFMConfig``, ...).
        train_config: Loop options (epochs, batch size, device, ...); device also applies to
            closed-form models.
        eval_config: Ranking cut-offs and relevance threshold.
        on_epoch: Called with ``(epoch, metrics)`` after each epoch (once for a closed-form
            rating model, never for the popularity ranker).

    Returns:
        The trained model with its history and valid/test metrics.

    Raises:
        ValueError: Unknown config type, empty splits, out-of-range ids, divergence.
    """
    train_config = train_config or TrainConfig()
    eval_config = eval_config or EvalConfig()
    cls = MODEL_CLASSES.get(type(model_config))
    if cls is None:
        raise ValueError(f"no model for config type {type(model_config).__name__}")
    device = pick_device(train_config.device)
    t0 = time.perf_counter()
    if getattr(cls, "row_trained", False):
        model, history, best_epoch = _fit_rows(cls, data, model_config, train_config, on_epoch)
    elif cls.trainable:
        model = build_model(model_config, data.n_users, data.n_items, data.item_features)
        fitted = fit(model, data.train, data.valid, train_config, on_epoch)
        history, best_epoch = fitted.history, fitted.best_epoch
    else:
        model, history = _fit_closed_form(cls, data, model_config, device)
        best_epoch = 1
        if on_epoch is not None and history:
            on_epoch(1, {k: v for k, v in history[0].items() if k != "epoch"})
    train_seconds = time.perf_counter() - t0
    t1 = time.perf_counter()
    seen = ItemSets.from_data(data.train, data.n_users)
    seen_or_valid = ItemSets.from_pairs(torch.cat([data.train.users, data.valid.users]),
                                        torch.cat([data.train.items, data.valid.items]),
                                        data.n_users)
    valid = evaluate_split(model, data.valid, seen, eval_config)
    test = evaluate_split(model, data.test, seen_or_valid, eval_config)
    metric, mode = selection_metric(model, eval_config.ks)
    result = ExperimentResult(model=model, history=history, best_epoch=best_epoch, valid=valid,
                              test=test, selection_metric=metric, selection_mode=mode,
                              device=str(device), train_seconds=train_seconds,
                              eval_seconds=time.perf_counter() - t1)
    logger.info("%s: test %s valid %s=%.4f (%.1fs train, %.1fs eval)", cls.__name__,
                _brief(test), metric, valid[metric], train_seconds, result.eval_seconds)
    return result


def _brief(metrics: dict[str, float]) -> str:
    keys = [k for k in ("rmse", "mae", "ndcg@10") if k in metrics]
    return " ".join(f"{k}={metrics[k]:.4f}" for k in keys)


def non_finite_parameters(model: torch.nn.Module) -> dict[str, int]:
    """Parameters and buffers holding NaN or ±inf: name -> number of such values."""
    bad = {}
    for name, tensor in (*model.named_parameters(), *model.named_buffers()):
        if tensor.is_floating_point():
            count = int((~torch.isfinite(tensor)).sum())
            if count:
                bad[name] = count
    return bad

