"""MLflow tracking and storage of the ranking models (autoencoders, EASE, sequence models,
two-tower): one MLflow run per model, the champion rule on NDCG@10 (higher is better).

A run holds params (``model.*``, ``train.*``, ``data.*``, ``system.*``), per-epoch metrics
(``step`` = epoch), final ``best_valid_*`` / ``test_*`` (and ``peruser_test_*``) metrics, and
the model as ``model/{config.json,state_dict.pt}`` artifacts (no pickle) and its pyfunc
(``original_ids_model/``, ``tracking_export``), which is registered as a version of
``recsys-<family>``; a sequence model's run also holds the original item id of
each token (``token_items/item_ids.parquet``), and sequence and two-tower runs hold
``data.split.method``, so a later challenger can re-score them (``tracking_rescore``).
Ranking runs carry the tag ``ranking.protocol`` and the data hash tags
``data.ranking_train_sha256`` / ``data.ranking_valid_sha256``; they do not carry the rating
models' ``data.train_sha256`` tag, so the rating leaderboard never lists them.
"""

import dataclasses
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import dagster as dg
import mlflow
from torch import nn

from recsys_pipeline.champion import (
    TAG_RELEASE,
    GateDecision,
    Rescorer,
    gate,
    split_signature,
)
from recsys_pipeline.data.raw_watch import ingested_release_name
from recsys_pipeline.evaluation.selection import Contender
from recsys_pipeline.model_io import ModelIOManager
from recsys_pipeline.models.base import config_to_dict, save_model
from recsys_pipeline.models.ranking_base import FoldInModel, load_ranking_model
from recsys_pipeline.serving.ranking_serving import lake_served_history
from recsys_pipeline.tracking import (
    MlflowResource,
    epoch_logger,
    metric_key,
    register_version,
    registered_name,
    run_row,
    system_params,
)
from recsys_pipeline.tracking_export import PYFUNC_DIR, lake_ids, log_exports
from recsys_pipeline.tracking_rescore import (
    PARAM_SPLIT_METHOD,
    RUN_MODEL_DIR,
    NextItemValidation,
    TopKValidation,
    Validation,
    log_token_items,
    rescorer,
)
from recsys_pipeline.training.ranking_experiment import SELECTION_METRIC, RankingOutcome
from recsys_pipeline.training.ranking_loop import RankingTrainConfig

TAG_PROTOCOL = "ranking.protocol"
TAG_RANKING_TRAIN_SHA = "data.ranking_train_sha256"
TAG_RANKING_VALID_SHA = "data.ranking_valid_sha256"
EPOCH_KEYS = ("train_loss", "valid_ndcg@10", "valid_recall@20", "valid_hr@10")


class RankingModelIOManager(ModelIOManager):
    """Ranking models (fold-in, sequence, two-tower) as ``<lake>/<key path>/{config.json,
    state_dict.pt}``, written into a temp folder and renamed into place; loaded with
    ``models.ranking_base.load_ranking_model`` (``torch.load(weights_only=True)``)."""

    def _check(self, context: dg.OutputContext, obj: nn.Module) -> None:
        if not hasattr(obj, "family") or not hasattr(obj, "config"):
            raise TypeError(f"{context.asset_key.to_user_string()}: expected a ranking model, "
                            f"got {type(obj).__name__}")

    def _save(self, obj: nn.Module, folder: Path) -> None:
        save_model(obj, folder)  # type: ignore[arg-type]

    def _load(self, folder: Path) -> nn.Module:
        return load_ranking_model(folder, map_location="cpu")


# metrics of the popularity baseline a run scored on its own protocol beside its model
# (``baseline_popularity_valid_*`` / ``_test_*``), shown as their own leaderboard row
BASELINE_PREFIX = "baseline_popularity_"
BASELINE_MODEL = "popularity (baseline)"


def ranking_final_metrics(outcome: RankingOutcome) -> dict[str, float]:
    """``best_valid_*``, ``test_*``, extra (per-user-split) scores and run totals."""
    out = {f"best_valid_{metric_key(k)}": v for k, v in outcome.valid.items()}
    out.update({f"test_{metric_key(k)}": v for k, v in outcome.test.items()})
    out.update({metric_key(k): v for k, v in outcome.extra.items()})
    out.update({"best_epoch": float(outcome.best_epoch),
                "train_seconds": outcome.train_seconds})
    return out


@dataclasses.dataclass
class TrackedRanking:
    """A trained ranking model and its MLflow run / registry outcome."""

    outcome: RankingOutcome
    run_id: str
    registered_version: str | None
    champion: bool
    champion_reason: str
    gate: GateDecision | None = None


def _register(tracker: MlflowResource, run_id: str, family: str, valid: float,
              valid_sha: str, rescore: Rescorer | None, split: str = "",
              source_dir: str = RUN_MODEL_DIR) -> tuple[str, GateDecision] | None:
    """Register ``runs:/<run>/<source_dir>`` (the original-id pyfunc where one was logged, so
    ``models:/recsys-<family>@champion`` loads with ``mlflow.pyfunc``; else the model folder)
    as a version of ``recsys-<family>``; apply the champion gate on the validation NDCG@10
    (higher is better). On changed validation data ``rescore`` (``tracking_rescore.rescorer``)
    compares both on the same rows; without one, or when it fails, the resource's
    ``champion_when_incomparable`` decides."""
    if not tracker.register_models:
        return None
    client, name = tracker.client(), registered_name(family)
    version = register_version(client, name, f"{mlflow.get_artifact_uri()}/{source_dir}",
                               run_id)
    release = ingested_release_name(tracker.lake.raw_dir())
    if release:
        mlflow.set_tag(TAG_RELEASE, release)
    contender = Contender(SELECTION_METRIC, valid, "max", valid_sha)
    return version, gate(client, name, version, contender, tracker.gate_policy(), release,
                         rescore, split)


def train_and_track_ranking(
    tracker: MlflowResource, log: Any, *, name: str, family: str,
    fit: Callable[[Callable[[int, dict[str, float]], None]], RankingOutcome],
    model_config: Any, train_config: RankingTrainConfig | None, tags: Mapping[str, str],
    params: Mapping[str, Any] | None = None,
    validation: Validation = None,
) -> TrackedRanking:
    """Run ``fit(on_epoch)`` inside one MLflow run; log params, metrics, model; register.

    ``validation`` (a fold-in model's validation fold-in and held-out rows, a sequence
    model's :class:`NextItemValidation`, a two-tower model's :class:`TopKValidation`) lets
    the champion gate re-score the champion on it when the data changed.

    Returns:
        The outcome, run id and registry result. An exception ends the run FAILED.
    """
    with tracker.start_run(run_name=name, tags=tags) as run:
        device = train_config.device if train_config else "cpu"
        loop = dataclasses.asdict(train_config) if train_config else {"closed_form": True}
        mlflow.log_params({**{f"model.{k}": v for k, v in config_to_dict(model_config).items()},
                           **{f"train.{k}": v for k, v in loop.items()},
                           **system_params("cpu" if device == "auto" else device),
                           **(params or {})})
        if isinstance(validation, NextItemValidation | TopKValidation) and (
                PARAM_SPLIT_METHOD not in (params or {})):
            mlflow.log_param(PARAM_SPLIT_METHOD, validation.split_method)
        outcome = fit(epoch_logger(name, log, EPOCH_KEYS))
        mlflow.log_metrics(ranking_final_metrics(outcome))
        with tempfile.TemporaryDirectory() as tmp:
            save_model(outcome.model, tmp)  # type: ignore[arg-type]
            mlflow.log_artifacts(tmp, RUN_MODEL_DIR)
        user_ids, item_ids = lake_ids(tracker.lake.path(), outcome.model)
        width = None
        served = None  # fold-in: the pyfunc scores from the rows recommend serves from
        if isinstance(outcome.model, FoldInModel) and user_ids is not None:
            try:
                served = lake_served_history(tracker.lake.path(), outcome.model)
            except FileNotFoundError as exc:  # a lake without splits: the stored rows only
                mlflow.set_tag("export.pyfunc_rows", f"the model's stored rows only ({exc})")
                log.info(f"export: fold-in pyfunc without the held-out users' rows: {exc}")
        if isinstance(validation, NextItemValidation):  # the pyfunc's ids: one per token
            item_ids, width = validation.item_ids, validation.tokens.shape[1]
            log_token_items(validation.item_ids)
        log_exports(outcome.model, user_ids, item_ids, onnx=tracker.log_onnx, log=log,
                    pyfunc_model=served, sequence_width=width)
        rescore = rescorer(outcome.model, validation, user_ids, item_ids,
                            tracker.resolved_tracking_uri())
        pyfunc = item_ids is not None and (user_ids is not None or width is not None)
        valid = outcome.valid.get(SELECTION_METRIC, float("nan"))
        registered = _register(tracker, run.info.run_id, family, valid,
                               tags.get(TAG_RANKING_VALID_SHA, ""), rescore,
                               split_signature(params),
                               PYFUNC_DIR if pyfunc else RUN_MODEL_DIR)
        if registered is None:
            mlflow.set_tags({"champion": "false", "champion_reason": "not registered"})
            return TrackedRanking(outcome, run.info.run_id, None, False, "not registered")
        version, decision = registered
        mlflow.set_tags(decision.tags())
        return TrackedRanking(outcome, run.info.run_id, version, decision.promoted,
                              decision.reason, decision)


def ranking_rows(tracker: MlflowResource, train_sha256: str) -> list[dict[str, Any]]:
    """Latest FINISHED ranking run per asset on this data, plus a ``popularity (baseline)``
    row for a run that scored the baseline beside itself (``BASELINE_PREFIX`` metrics: the
    co-occurrence run, on the next-item protocol); raises when there is no run."""
    experiment_id = tracker.experiment_id(create=False)
    runs = [] if experiment_id is None else tracker.client().search_runs(
        [experiment_id], filter_string=f"tags.`{TAG_RANKING_TRAIN_SHA}` = '{train_sha256}' "
                                       "and attributes.status = 'FINISHED'",
        order_by=["attributes.start_time DESC"], max_results=5000)
    latest: dict[str, Any] = {}
    for run in runs:
        latest.setdefault(run.info.run_name, run)
    if not latest:
        raise ValueError(f"no FINISHED ranking run in MLflow experiment "
                         f"{tracker.experiment_name!r} with {TAG_RANKING_TRAIN_SHA}="
                         f"{train_sha256}; materialize the ranking models first")
    rows = []
    for run in latest.values():
        row = run_row(run)
        row["protocol"] = run.data.tags.get(TAG_PROTOCOL, "")
        row.update({k: v for k, v in run.data.metrics.items()
                    if k.startswith(("peruser_test_", "best_valid_ndcg_at_10"))
                    and not k.endswith("n_users")})
        rows.append(row)
        baseline = {k.removeprefix(BASELINE_PREFIX): v for k, v in run.data.metrics.items()
                    if k.startswith(BASELINE_PREFIX)}
        if baseline:
            rows.append({"model": BASELINE_MODEL, "family": "popularity",
                         "run_id": row["run_id"], "started": row["started"],
                         "protocol": row["protocol"],
                         "best_valid_ndcg_at_10": baseline.get("valid_ndcg_at_10"),
                         **{k: v for k, v in baseline.items() if k.startswith("test_")}})
    return rows

