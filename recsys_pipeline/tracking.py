"""MLflow tracking: ``MlflowResource`` and the helper that trains one model inside one MLflow run.

Only this module and the train/evaluate assets import mlflow. By default tracking needs no
server: runs and the model registry live in a SQLite file in the lake
(``sqlite:///<lake>/mlflow/mlflow.db``) with artifacts beside it (``<lake>/mlflow/artifacts``);
the resource's ``tracking_uri`` (or ``$MLFLOW_TRACKING_URI``) points it at a server instead.

One run per trained model holds: params (model, training, evaluation, data and system
info), per-epoch metrics (``step`` = epoch), final ``best_valid_*`` / ``test_*`` metrics,
the learning curve PNG, the id maps, and the model (PyTorch flavor, pt2 graph format, no
pickle; input: an int64 ``[n, 2]`` array of ``(user_idx, item_idx)``, output: ``[n]``
scores), registered as a new version of ``recsys-<family>``. Tags carry the Dagster run id
and the SHA-256 of the split files. A run whose training raises ends as FAILED.

The champion alias (``champion`` on ``recsys-<family>``) moves by the gate of ``champion.py``:
a new version takes it when the family has none, when the champion was trained on another
release, or when it beats the champion on the same validation data (the champion re-scored
on the new validation rows when the data moved on) by more than the resource's
``champion_margin``; the decision and its evidence are the run's ``champion.*`` tags.
"""

import contextlib
import dataclasses
import io
import os
import platform
import tempfile
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import dagster as dg
import matplotlib
import mlflow
import mlflow.pytorch
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from mlflow.entities import Run
from mlflow.models import ModelSignature
from mlflow.tracking import MlflowClient
from mlflow.types import Schema, TensorSpec

from recsys_pipeline.champion import (  # noqa: F401 (CHAMPION, promote_if_better: re-exported)
    CHAMPION,
    TAG_RELEASE,
    TAG_SELECTION,
    GateDecision,
    GatePolicy,
    gate,
    promote_if_better,
    rating_rescorer,
)
from recsys_pipeline.data.encode import IdMaps
from recsys_pipeline.evaluation.selection import INCOMPARABLE_POLICIES, Contender
from recsys_pipeline.models.base import RatingModel, config_to_dict
from recsys_pipeline.models.export import PairScorer
from recsys_pipeline.resources import LakeResource
from recsys_pipeline.tracking_export import log_exports
from recsys_pipeline.training.device import pick_device
from recsys_pipeline.training.experiment import (
    EvalConfig,
    ExperimentData,
    ExperimentResult,
    run_experiment,
)
from recsys_pipeline.training.loop import TrainConfig

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

DEFAULT_EXPERIMENT = "recsys-pipeline"
TRACKING_ENV, REGISTRY_ENV = "MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI"
# tags every run carries
TAG_DAGSTER_RUN = "dagster.run_id"
TAG_ASSET = "dagster.asset_key"
TAG_FAMILY = "model.family"
SPLIT_TAGS = {name: f"data.{name}_sha256" for name in ("train", "valid", "test")}
TAG_TRAIN_SHA, TAG_VALID_SHA = SPLIT_TAGS["train"], SPLIT_TAGS["valid"]
EPOCH_LINE_KEYS = ("train_loss", "valid_loss", "valid_rmse")


def metric_key(name: str) -> str:
    """An MLflow-safe metric name (MLflow rejects ``@``): ``ndcg@10`` -> ``ndcg_at_10``."""
    return name.replace("@", "_at_")


def registered_name(family: str) -> str:
    """The registered model of a family, e.g. ``recsys-mf``."""
    return f"recsys-{family}"


class MlflowResource(dg.ConfigurableResource):
    """MLflow tracking + model registry; by default a SQLite file in the lake, no server."""

    lake: dg.ResourceDependency[LakeResource]
    # "" = $MLFLOW_TRACKING_URI when set, else sqlite:///<lake>/mlflow/mlflow.db
    tracking_uri: str = ""
    # "" = the tracking URI
    registry_uri: str = ""
    # the experiment holding one run per trained model
    experiment_name: str = DEFAULT_EXPERIMENT
    # artifact root of a newly created experiment; "" = <lake>/mlflow/artifacts for the
    # default SQLite store, the server's default for a configured tracking URI
    artifact_location: str = ""
    # register each logged model as a version of recsys-<family> and move its champion alias
    register_models: bool = True
    # champion gate: a new version takes the champion alias only when its validation metric
    # beats the champion's on the same data by more than this (metric units; 0 = strictly)
    champion_margin: float = 0.0
    # when scores cannot be compared (ranking metric on changed data): "keep" or "promote"
    champion_when_incomparable: str = "keep"
    # also log each model's ONNX export (checked against torch with onnxruntime; about 1 s
    # per demo model on a 2-core CPU) beside its original-id pyfunc; needs onnx, onnxscript
    # and onnxruntime (a run without them tags export.onnx_skipped)
    log_onnx: bool = True

    def gate_policy(self) -> GatePolicy:
        """The champion gate's settings (validated)."""
        if self.champion_when_incomparable not in INCOMPARABLE_POLICIES:
            raise ValueError(f"mlflow resource: champion_when_incomparable="
                             f"{self.champion_when_incomparable!r}, expected one of "
                             f"{', '.join(INCOMPARABLE_POLICIES)}")
        if not self.champion_margin >= 0:
            raise ValueError(f"mlflow resource: champion_margin={self.champion_margin!r} must "
                             "be >= 0")
        return GatePolicy(self.champion_margin, self.champion_when_incomparable)

    def resolved_tracking_uri(self) -> str:
        """The tracking URI in effect (see the field comments for the order)."""
        if self.tracking_uri:
            return self.tracking_uri
        if os.environ.get(TRACKING_ENV):
            return os.environ[TRACKING_ENV]
        db = self.lake.path("mlflow", "mlflow.db")
        db.parent.mkdir(parents=True, exist_ok=True)
        return f"sqlite:///{db}"

    def resolved_registry_uri(self) -> str:
        """The model registry URI in effect."""
        return self.registry_uri or self.resolved_tracking_uri()

    def _artifact_location(self) -> str | None:
        if self.artifact_location:
            return self.artifact_location
        if self.tracking_uri or os.environ.get(TRACKING_ENV):
            return None
        return self.lake.path("mlflow", "artifacts").as_uri()

    def ui_command(self) -> str:
        """The shell command that opens the MLflow UI on these runs."""
        return f"mlflow ui --backend-store-uri {self.resolved_tracking_uri()}"

    def client(self) -> MlflowClient:
        """A client bound to this resource's URIs (no global state)."""
        return MlflowClient(self.resolved_tracking_uri(), self.resolved_registry_uri())

    def experiment_id(self, create: bool = True) -> str | None:
        """The experiment's id, creating it when missing (None when missing and not created)."""
        client = self.client()
        found = client.get_experiment_by_name(self.experiment_name)
        if found is not None:
            return found.experiment_id
        if not create:
            return None
        return client.create_experiment(self.experiment_name, self._artifact_location())

    @contextlib.contextmanager
    def activated(self) -> Iterator[None]:
        """Point mlflow's global (fluent) API at this resource; restore the previous URIs and
        environment afterwards, so nothing leaks into later runs or tests."""
        saved = {k: os.environ.get(k) for k in (TRACKING_ENV, REGISTRY_ENV)}
        mlflow.set_tracking_uri(self.resolved_tracking_uri())
        mlflow.set_registry_uri(self.resolved_registry_uri())
        try:
            yield
        finally:
            mlflow.set_tracking_uri(saved[TRACKING_ENV])
            mlflow.set_registry_uri(saved[REGISTRY_ENV])
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value

    @contextlib.contextmanager
    def start_run(self, run_name: str, tags: Mapping[str, str]) -> Iterator[Run]:
        """An active MLflow run in the experiment; it ends FINISHED, or FAILED on an exception."""
        experiment_id = self.experiment_id()
        with self.activated(), mlflow.start_run(experiment_id=experiment_id, run_name=run_name,
                                                tags=dict(tags)) as active:
            yield mlflow.get_run(active.info.run_id)

    def latest_runs(self, train_sha256: str) -> list[Run]:
        """Latest FINISHED run of each model asset (else family) trained on this train split."""
        experiment_id = self.experiment_id(create=False)
        if experiment_id is None:
            return []
        runs = self.client().search_runs(
            [experiment_id],
            filter_string=f"tags.`{TAG_TRAIN_SHA}` = '{train_sha256}' "
                          "and attributes.status = 'FINISHED'",
            order_by=["attributes.start_time DESC"], max_results=5000)
        latest: dict[str, Run] = {}
        for run in runs:
            tags = run.data.tags  # one row per asset (models/tuned_model beside models/mf_model)
            latest.setdefault(tags.get(TAG_ASSET) or tags.get(TAG_FAMILY, run.info.run_name), run)
        return list(latest.values())


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


def cpu_name() -> str:
    """The CPU model (``/proc/cpuinfo`` "model name" on Linux), else the platform's word."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


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


def epoch_logger(name: str, log: Any) -> Any:
    """``on_epoch`` for the loop: MLflow metrics at ``step=epoch`` and one log line."""
    def on_epoch(epoch: int, metrics: dict[str, float]) -> None:
        mlflow.log_metrics({metric_key(k): float(v) for k, v in metrics.items()}, step=epoch)
        losses = " ".join(f"{k}={metrics[k]:.4f}" for k in EPOCH_LINE_KEYS if k in metrics)
        log.info(f"{name} epoch {epoch}: {losses} "
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
        model_uri, version = log_pair_model(result.model, example, registered)
        log_exports(result.model, *map_ids(id_maps), onnx=tracker.log_onnx, log=log)
        decision = None
        if registered is not None and version is not None:
            contender = Contender(result.selection_metric, result.valid[result.selection_metric],
                                  result.selection_mode, tags.get(TAG_VALID_SHA, ""))
            rescore = None if not {"user_map", "item_map"} <= set(id_maps or {}) else \
                rating_rescorer(
                result.model, data.valid, IdMaps(id_maps["user_map"], id_maps["item_map"]),
                tracker.resolved_tracking_uri())
            decision = gate(tracker.client(), registered, version, contender,
                            tracker.gate_policy(), tags.get(TAG_RELEASE, ""), rescore)
        mlflow.set_tags(decision.tags() if decision else
                        {"champion": "false", "champion_reason": "not registered"})
        won, reason = (decision.promoted, decision.reason) if decision else (False,
                                                                             "not registered")
        return TrackedRun(result, run.info.run_id, model_uri, version, won, reason, curve,
                          decision)


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
