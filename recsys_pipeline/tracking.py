"""MLflow tracking: the helper that trains one model inside one MLflow run, and the leaderboard
rows read back from MLflow. ``MlflowResource`` (where runs live) is in ``mlflow_resource`` and
re-exported here.

One run per trained model holds: params (model, training, evaluation, data and system
info), per-epoch metrics (``step`` = epoch), final ``best_valid_*`` / ``test_*`` metrics,
the learning curve PNG, the id maps, and the model (PyTorch flavor, pt2 graph format, no
pickle; input: an int64 ``[n, 2]`` array of ``(user_idx, item_idx)``, output: ``[n]``
scores), registered as a new version of ``recsys-<family>``, plus its ONNX export and
original-id pyfunc (``tracking_export``). Tags carry the Dagster run id, the release and the
SHA-256 of the split files. A run whose training raises ends as FAILED.

The champion alias (``champion`` on ``recsys-<family>``) moves by the gate of ``champion.py``:
a new version takes it when the family has none, when the champion was trained on another
release, or when it beats the champion on the same validation data (the champion re-scored
on the new validation rows when the data moved on) by more than the resource's
``champion_margin``; the decision and its evidence are the run's ``champion.*`` tags.
"""

import dataclasses
import io
import os
import platform
import tempfile
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import matplotlib
import mlflow
import mlflow.pytorch
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from mlflow.entities import Run
from mlflow.models import ModelSignature
from mlflow.types import Schema, TensorSpec

from recsys_pipeline.champion import (  # noqa: F401 (CHAMPION: re-exported)
    CHAMPION,
    TAG_RELEASE,
    TAG_SELECTION,
    GateDecision,
    GatePolicy,
    Rescorer,
    gate,
    rating_rescorer,
    split_signature,
)
from recsys_pipeline.data.encode import IdMaps
from recsys_pipeline.evaluation.rescore import PAIR_METRICS
from recsys_pipeline.evaluation.selection import Contender
from recsys_pipeline.mlflow_resource import (  # noqa: F401 (re-exported for the assets)
    DEFAULT_EXPERIMENT,
    REGISTRY_ENV,
    SPLIT_TAGS,
    TAG_ASSET,
    TAG_DAGSTER_RUN,
    TAG_FAMILY,
    TAG_TRAIN_SHA,
    TAG_VALID_SHA,
    TRACKING_ENV,
    MlflowResource,
    metric_key,
    registered_name,
)
from recsys_pipeline.models.base import RatingModel, config_to_dict
from recsys_pipeline.models.export import PairScorer
from recsys_pipeline.models.ranking_base import FoldInModel
from recsys_pipeline.tracking_export import PYFUNC_DIR, log_exports
from recsys_pipeline.tracking_rescore import PARAM_SPLIT_METHOD, TopKValidation, topk_rescorer
from recsys_pipeline.training.device import cpu_name, pick_device
from recsys_pipeline.training.experiment import (
    EvalConfig,
    ExperimentData,
    ExperimentResult,
    run_experiment,
)
from recsys_pipeline.training.loop import TrainConfig

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

EPOCH_LINE_KEYS = ("train_loss", "valid_loss", "valid_rmse")


def learning_curve_png(history: list[dict[str, float]], title: str, best_epoch: int) -> bytes:
    """Train and valid MSE per epoch, the best epoch marked, as PNG bytes."""
    epochs = [row["epoch"] for row in history]
    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=90)
    try:
        ax.plot(epochs, [r["train_loss"] for r in history], "o-", label="train MSE")
        ax.plot(epochs, [r["valid_loss"] for r in history], "s-", label="valid MSE")
        ax.axvline(best_epoch, color="grey", linestyle=":", label=f"best epoch {best_epoch}")
        ax.set(title=title, xlabel="epoch", ylabel="MSE")
        ax.legend()
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, format="png")
    finally:
        plt.close(fig)
    return buf.getvalue()


def system_params(device: str) -> dict[str, Any]:
    """Torch version, device name and CPU count, as MLflow params."""
    dev = torch.device(device)
    name = (torch.cuda.get_device_name(dev) if dev.type == "cuda"
            else cpu_name())
    return {"system.torch_version": torch.__version__, "system.device": str(dev),
            "system.device_name": name, "system.cpu_count": os.cpu_count(),
            "system.python": platform.python_version()}


def experiment_params(model_config: Any, train_config: TrainConfig, eval_config: EvalConfig,
                      data: ExperimentData) -> dict[str, Any]:
    """Model, training, evaluation and data-size params, prefixed by their source."""
    params = {f"model.{k}": v for k, v in config_to_dict(model_config).items()}
    params.update({f"train.{k}": v for k, v in dataclasses.asdict(train_config).items()})
    params.update({f"eval.{k}": v for k, v in dataclasses.asdict(eval_config).items()})
    params.update({"data.n_users": data.n_users, "data.n_items": data.n_items,
                   "data.n_train": len(data.train), "data.n_valid": len(data.valid),
                   "data.n_test": len(data.test)})
    return params


def final_metrics(result: ExperimentResult) -> dict[str, float]:
    """``best_valid_*`` (the kept weights on valid), ``test_*`` and run totals."""
    out = {f"best_valid_{metric_key(k)}": v for k, v in result.valid.items()}
    out.update({f"test_{metric_key(k)}": v for k, v in result.test.items()})
    out.update({"best_epoch": float(result.best_epoch), "train_seconds": result.train_seconds,
                "eval_seconds": result.eval_seconds})
    return out


def epoch_logger(name: str, log: Any, shown: tuple[str, ...] = EPOCH_LINE_KEYS) -> Any:
    """``on_epoch`` for a training loop: MLflow metrics at ``step=epoch`` and one log line
    with the ``shown`` metrics and the throughput."""
    def on_epoch(epoch: int, metrics: dict[str, float]) -> None:
        mlflow.log_metrics({metric_key(k): float(v) for k, v in metrics.items()}, step=epoch)
        values = " ".join(f"{k}={metrics[k]:.4f}" for k in shown if k in metrics)
        log.info(f"{name} epoch {epoch}: {values} "
                 f"{metrics.get('samples_per_s', float('nan')):,.0f} samples/s")

    return on_epoch


def log_pair_model(model: RatingModel, example: np.ndarray, registered: str | None
                   ) -> tuple[str, str | None]:
    """Log ``model`` with the PyTorch flavor (pt2 graph, no pickle) in the active run.

    ``mlflow.pyfunc.load_model(uri).predict(pairs)`` takes an int64 ``[n, 2]`` numpy array of
    ``(user_idx, item_idx)`` and returns the ``[n]`` float32 scores of ``model(users, items)``
    in eval mode.

    Returns:
        ``(model_uri, registered_version)``; the version is None when not registered.
    """
    signature = ModelSignature(inputs=Schema([TensorSpec(np.dtype(np.int64), (-1, 2))]),
                               outputs=Schema([TensorSpec(np.dtype(np.float32), (-1,))]))
    # explicit requirements: MLflow's inference would re-load the model in a subprocess
    torch_version = torch.__version__.split("+")[0]
    info = mlflow.pytorch.log_model(
        pytorch_model=PairScorer(model), name="model", signature=signature,
        input_example=example, serialization_format="pt2", registered_model_name=registered,
        pip_requirements=[f"torch=={torch_version}", f"mlflow=={mlflow.__version__}"])
    version = info.registered_model_version
    return info.model_uri, None if version is None else str(version)


PT2_SKIPPED = ("row-scored model (scores come from the user's stored train row through "
               "torch.unique, which torch.export cannot trace): no pt2 pair graph; the "
               "registered model is the original-id pyfunc")


def log_row_model(model: RatingModel, id_maps: Mapping[str, pa.Table] | None,
                  registered: str | None, log: Any, client: Any = None
                  ) -> tuple[str, str | None]:
    """Log and register a row-scored rating model (the rating autoencoder).

    Its pair scores go through data-dependent shapes that ``torch.export`` cannot trace, so
    instead of the pt2 pair graph the original-id pyfunc that ``log_exports`` logs
    (``original_ids_model/``: ``user_id, item_id`` -> predicted rating, the model folder
    inside) is the run's model and the registered version (tag ``export.pt2_skipped``). Without
    id maps the model folder alone is logged there (``original_ids_model/artifacts/model``).

    Returns:
        ``(model_uri, registered_version)``; the version is None when not registered.
    """
    mlflow.set_tags({"export.pt2_skipped": PT2_SKIPPED})
    log.info(f"export: {PT2_SKIPPED}")
    if map_ids(id_maps)[0] is None:
        with tempfile.TemporaryDirectory() as tmp:
            model.save(tmp)
            mlflow.log_artifacts(tmp, f"{PYFUNC_DIR}/artifacts/model")
    source = f"{mlflow.get_artifact_uri()}/{PYFUNC_DIR}"
    model_uri = f"runs:/{mlflow.active_run().info.run_id}/{PYFUNC_DIR}"
    if registered is None:
        return model_uri, None
    return model_uri, register_version(client or mlflow.MlflowClient(), registered, source,
                                       mlflow.active_run().info.run_id)


def register_version(client: Any, name: str, source: str, run_id: str) -> str:
    """A new version of registered model ``name`` (created when missing) from ``source``."""
    if not client.search_registered_models(filter_string=f"name = '{name}'"):
        client.create_registered_model(name)
    return str(client.create_model_version(name, source, run_id=run_id).version)


def log_tables(tables: Mapping[str, pa.Table], artifact_path: str) -> None:
    """Each table as ``<artifact_path>/<name>.parquet`` in the active run."""
    with tempfile.TemporaryDirectory() as tmp:
        for name, table in tables.items():
            pq.write_table(table, Path(tmp) / f"{name}.parquet")
        mlflow.log_artifacts(tmp, artifact_path)


def log_png(png: bytes, artifact_file: str) -> None:
    """PNG bytes as an artifact of the active run."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / Path(artifact_file).name
        path.write_bytes(png)
        mlflow.log_artifact(str(path), str(Path(artifact_file).parent))


@dataclasses.dataclass
class TrackedRun:
    """A trained model and where MLflow keeps it.

    Attributes:
        result: What the core runner returned (model, history, metrics).
        run_id: The MLflow run.
        model_uri: The logged model (``models:/...``), loadable with ``mlflow.pyfunc``.
        registered_version: Version of ``recsys-<family>`` (None when not registered).
        champion: Whether this version took the champion alias.
        champion_reason: Why it did or did not.
        learning_curve: The learning-curve PNG (None when there is no epoch history).
        gate: The champion gate's decision and evidence (None when not registered).
    """

    result: ExperimentResult
    run_id: str
    model_uri: str
    registered_version: str | None
    champion: bool
    champion_reason: str
    learning_curve: bytes | None
    gate: GateDecision | None = None


def train_and_track(
    tracker: MlflowResource,
    log: Any,
    *,
    name: str,
    data: ExperimentData,
    model_config: Any,
    train_config: TrainConfig,
    eval_config: EvalConfig | None = None,
    tags: Mapping[str, str],
    params: Mapping[str, Any] | None = None,
    id_maps: Mapping[str, pa.Table] | None = None,
) -> TrackedRun:
    """Run :func:`~recsys_pipeline.training.experiment.run_experiment` inside one MLflow run.

    Args:
        tracker: Where to log.
        log: A logger (``context.log``) for one line per epoch.
        name: Run name (the asset name, e.g. ``mf_model``).
        data: Splits and sizes.
        model_config: The model config dataclass.
        train_config: Loop options (its ``device`` is used for closed-form models too).
        eval_config: Ranking options.
        tags: Must include ``data.valid_sha256`` for the champion rule; usually the Dagster
            run id, asset key, family and all split hashes.
        params: Extra params (e.g. the split's metadata).
        id_maps: Tables logged under ``id_maps/`` (user and item maps).

    Returns:
        The result, run id, model URI and champion outcome. An exception inside ends the run
        FAILED and propagates.
    """
    eval_config = eval_config or EvalConfig()
    with tracker.start_run(run_name=name, tags=tags) as run:
        device = str(pick_device(train_config.device))
        mlflow.log_params({**experiment_params(model_config, train_config, eval_config, data),
                           **system_params(device), **(params or {})})
        result = run_experiment(data, model_config, train_config, eval_config,
                                on_epoch=epoch_logger(name, log))
        mlflow.log_metrics(final_metrics(result))
        curve = None
        if result.history:
            curve = learning_curve_png(result.history, name, result.best_epoch)
            log_png(curve, "plots/learning_curve.png")
        if id_maps:
            log_tables(id_maps, "id_maps")
        example = torch.stack([data.train.users[:5], data.train.items[:5]], 1).numpy()
        registered = registered_name(result.model.family) if tracker.register_models else None
        if isinstance(result.model, FoldInModel):  # the rating autoencoder: no pt2 graph
            log_exports(result.model, *map_ids(id_maps), onnx=tracker.log_onnx, log=log)
            model_uri, version = log_row_model(result.model, id_maps, registered, log,
                                               tracker.client())
        else:
            model_uri, version = log_pair_model(result.model, example, registered)
            log_exports(result.model, *map_ids(id_maps), onnx=tracker.log_onnx, log=log)
        decision = None
        if registered is not None and version is not None:
            contender = Contender(result.selection_metric, result.valid[result.selection_metric],
                                  result.selection_mode, tags.get(TAG_VALID_SHA, ""))
            rescore = _rescorer(result, data, id_maps, params, eval_config,
                                tracker.resolved_tracking_uri())
            decision = gate(tracker.client(), registered, version, contender,
                            tracker.gate_policy(), tags.get(TAG_RELEASE, ""), rescore,
                            split_signature(params))
        mlflow.set_tags(decision.tags() if decision else
                        {"champion": "false", "champion_reason": "not registered"})
        won, reason = (decision.promoted, decision.reason) if decision else (False,
                                                                             "not registered")
        return TrackedRun(result, run.info.run_id, model_uri, version, won, reason, curve,
                          decision)


def _rescorer(result: ExperimentResult, data: ExperimentData,
              id_maps: Mapping[str, pa.Table] | None, params: Mapping[str, Any] | None,
              eval_config: EvalConfig, tracking_uri: str) -> Rescorer | None:
    """How the gate re-scores the champion on changed data: RMSE / MAE on the validation
    pairs both know (rating models), or the top-K protocol on the users and items both know
    (pure rankers such as popularity, selected by NDCG@K; temporal splits only). None
    without id maps."""
    if not {"user_map", "item_map"} <= set(id_maps or {}):
        return None
    if result.selection_metric in PAIR_METRICS:
        return rating_rescorer(result.model, data.valid,
                               IdMaps(id_maps["user_map"], id_maps["item_map"]), tracking_uri)
    user_ids, item_ids = map_ids(id_maps)
    method = str((params or {}).get(PARAM_SPLIT_METHOD, "unknown"))
    validation = TopKValidation(data.train.to_csr(data.n_users, data.n_items),
                                data.valid.to_csr(data.n_users, data.n_items), method,
                                eval_config.relevance_threshold)
    return topk_rescorer(result.model, validation, user_ids, item_ids, tracking_uri)


LEADERBOARD_EXTRAS = ("best_valid_rmse", "best_valid_ndcg_at_10", "best_epoch", "train_seconds")


def run_row(run: Run) -> dict[str, Any]:
    """A leaderboard row of a run: model, family, run id, start time and its metrics."""
    tags, metrics = run.data.tags, run.data.metrics
    row: dict[str, Any] = {
        "model": tags.get(TAG_ASSET, run.info.run_name or "").split("/")[-1],
        "family": tags.get(TAG_FAMILY, ""), "run_id": run.info.run_id,
        "started": datetime.fromtimestamp(run.info.start_time / 1000, UTC)}
    row.update({k: v for k, v in metrics.items()
                if (k.startswith("test_") and not k.startswith("test_n_"))
                or k in LEADERBOARD_EXTRAS})
    return row


def leaderboard_rows(tracker: MlflowResource, train_sha256: str) -> list[dict[str, Any]]:
    """Rows of the latest finished run per family on this train split; raises when none."""
    runs = tracker.latest_runs(train_sha256)
    if not runs:
        raise ValueError(f"no FINISHED run in MLflow experiment {tracker.experiment_name!r} "
                         f"({tracker.resolved_tracking_uri()}) for train split sha256 "
                         f"{train_sha256}; materialize the models/* assets first")
    return [run_row(run) for run in runs]


def map_ids(id_maps: Mapping[str, pa.Table] | None) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Original user and item ids in index order from ``user_map`` / ``item_map`` tables;
    ``(None, None)`` unless both are given (then no original-id pyfunc is logged)."""
    if not id_maps or "user_map" not in id_maps or "item_map" not in id_maps:
        return None, None
    users = id_maps["user_map"].sort_by("user_idx").column("user_id").to_numpy()
    items = id_maps["item_map"].sort_by("item_idx").column("item_id").to_numpy()
    return users, items
