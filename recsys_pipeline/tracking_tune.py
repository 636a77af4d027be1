"""MLflow side of hyperparameter tuning: one parent run, one nested run per Optuna trial.

``tune_and_track`` runs ``tuning.tune`` inside one parent MLflow run, tagged like the
training runs (Dagster run id, asset key, ``model.family``, split hashes) plus
``tune.role=parent``. Each trial is a nested run (``mlflow.start_run(nested=True)``, so its
``mlflow.parentRunId`` tag names the parent) holding the sampled params, the per-epoch
metrics (``step`` = epoch), ``best_valid_rmse`` when it completed and the tag ``tune.state``
(``COMPLETE``, ``PRUNED`` or ``FAIL``). Trial runs carry no family or split-hash tags, so the
leaderboard (latest run per family) never mistakes one for a trained model. The parent gets
the settings and bounds (``tune.*``, ``space.*``), the best params (``best.*``), the best
valid RMSE, trial counts, Optuna's optimization-history and parameter-importance plots
(``plots/*.png``) and the best configuration (``tuning/best_config.json``, also written
atomically to ``<lake>/tuning/<family>/best_config.json``).

The tuned model is then trained with the best configuration (train split, early stopping on
valid), evaluated on test, logged and registered by ``tracking.train_and_track``, so the
champion rule applies to it like to any other version of ``recsys-<family>``. That final run
starts after the parent has ended (MLflow's fluent API allows one active run chain, and
``train_and_track`` opens a top-level run), and is made its child by the
``mlflow.parentRunId`` tag; the parent is tagged ``tune.final_run_id`` and receives the final
run's ``test_*`` metrics. A failing final run marks the parent FAILED too.
"""

import contextlib
import dataclasses
import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import mlflow
import pyarrow as pa

from recsys_pipeline.data.lake import write_json
from recsys_pipeline.mlflow_resource import process_tags
from recsys_pipeline.models.base import config_to_dict
from recsys_pipeline.tracking import (
    MlflowResource,
    TrackedRun,
    epoch_logger,
    final_metrics,
    log_png,
    train_and_track,
)
from recsys_pipeline.training.experiment import EvalConfig, ExperimentData, OnEpoch
from recsys_pipeline.tuning.plots import history_png, importance_png, param_importances
from recsys_pipeline.tuning.space import SearchSpace
from recsys_pipeline.tuning.study import (
    TrialOutcome,
    TrialScope,
    TuneResult,
    TuneSettings,
    settings_dict,
    tune,
)

TAG_ROLE, TAG_TRIAL, TAG_STATE = "tune.role", "tune.trial", "tune.state"
TAG_PARENT_RUN, TAG_FINAL_RUN = "mlflow.parentRunId", "tune.final_run_id"
BEST_CONFIG_ARTIFACT = "tuning/best_config.json"


@dataclasses.dataclass
class TunedRun:
    """A finished tuning and where MLflow keeps it.

    Attributes:
        result: The study, best params and configs (``tuning.TuneResult``).
        parent_run_id: The parent MLflow run.
        trial_run_ids: The nested run of each trial, by trial number.
        final: The tuned model's own run (trained, evaluated on test, registered).
        history_png: Optuna's optimization-history plot.
        importance_png: Optuna's parameter-importance plot.
        importances: ``{param: importance}`` (empty with fewer than two complete trials).
        best_config_path: The best configuration's JSON file in the lake.
    """

    result: TuneResult
    parent_run_id: str
    trial_run_ids: dict[int, str]
    final: TrackedRun
    history_png: bytes
    importance_png: bytes
    importances: dict[str, float]
    best_config_path: Path


def _trial_scope(name: str, log: Any, experiment_id: str, tags: Mapping[str, str],
                 run_ids: dict[int, str]) -> TrialScope:
    """One nested MLflow run per trial; per-epoch metrics through ``epoch_logger``."""

    @contextlib.contextmanager
    def scope(outcome: TrialOutcome) -> Iterator[OnEpoch | None]:
        run_name = f"{name}-trial-{outcome.number}"
        trial_tags = {**process_tags(), **tags, TAG_ROLE: "trial", TAG_TRIAL: str(outcome.number)}
        with mlflow.start_run(experiment_id=experiment_id, run_name=run_name, nested=True,
                              tags=trial_tags) as run:
            run_ids[outcome.number] = run.info.run_id
            mlflow.log_params(outcome.params)
            try:
                yield epoch_logger(run_name, log)
            except BaseException as exc:  # Ctrl-C, a stopped run: not left looking RUNNING
                if outcome.state == "RUNNING":
                    outcome.state = "FAIL"
                    outcome.error = outcome.error or f"interrupted: {type(exc).__name__}"
                raise
            finally:
                mlflow.set_tag(TAG_STATE, outcome.state)
                mlflow.log_metric("epochs_run", float(len(outcome.history)))
                if outcome.value is not None:
                    mlflow.log_metrics({"best_valid_rmse": outcome.value,
                                        "best_epoch": float(outcome.best_epoch)})
                if outcome.error:
                    mlflow.set_tag("tune.error", outcome.error[:5000])
                value = "" if outcome.value is None else f" best valid_rmse={outcome.value:.4f}"
                log.info(f"{run_name}: {outcome.state}{value} {outcome.params}")

    return scope


def best_config_document(result: TuneResult, settings: TuneSettings, space: SearchSpace,
                         parent_run_id: str) -> dict[str, Any]:
    """The JSON saved for the best configuration: params, configs, settings, trial counts."""
    return {
        "family": result.family, "best_params": result.best_params,
        "best_valid_rmse": result.best_value, "best_trial": result.best_trial,
        "model_config_type": type(result.model_config).__name__,
        "model_config": config_to_dict(result.model_config),
        "train_config": dataclasses.asdict(result.train_config),
        "settings": dataclasses.asdict(settings),
        "space": json.loads(json.dumps(dataclasses.asdict(space))),
        "trials": result.states, "mlflow_parent_run_id": parent_run_id,
    }


def _log_study(result: TuneResult, name: str, seed: int) -> tuple[bytes, bytes, dict]:
    """Best params, counts and both plots on the active (parent) run."""
    mlflow.log_params({f"best.{k}": v for k, v in result.best_params.items()})
    mlflow.log_metrics({"best_valid_rmse": result.best_value,
                        **{f"n_trials_{k.lower()}": float(v) for k, v in result.states.items()}})
    mlflow.set_tag("tune.best_trial", str(result.best_trial))
    history = history_png(result.study, name)
    importance = importance_png(result.study, name, seed)
    importances = param_importances(result.study, seed)
    log_png(history, "plots/optimization_history.png")
    log_png(importance, "plots/param_importances.png")
    if importances:
        mlflow.log_metrics({f"importance.{k}": v for k, v in importances.items()})
    return history, importance, importances


def tune_and_track(
    tracker: MlflowResource,
    log: Any,
    *,
    name: str,
    data: ExperimentData,
    family: str,
    space: SearchSpace,
    settings: TuneSettings,
    tags: Mapping[str, str],
    best_config_path: Path,
    params: Mapping[str, Any] | None = None,
    id_maps: Mapping[str, pa.Table] | None = None,
    eval_config: EvalConfig | None = None,
    study_file: Path | None = None,
) -> TunedRun:
    """Tune ``family`` on valid in a parent MLflow run, then train, test and register the best.

    Args:
        tracker: Where to log.
        log: A logger (``context.log``).
        name: Run name of the parent and of the final run (the asset name).
        data: Splits and sizes (trials read train and valid only).
        family: The model family to tune.
        space: Bounds of the search.
        settings: Trials, timeout, seed and per-trial training.
        tags: Tags of the parent and the final run (Dagster run id, asset key, family, split
            hashes); trial runs get only the Dagster run id and asset key of them.
        best_config_path: Where the best configuration's JSON goes (atomically).
        params: Extra params of the parent and the final run (e.g. the split's config).
        id_maps: Tables logged with the final model.
        eval_config: The final model's evaluation (e.g. a sample of users to rank).
        study_file: A SQLite file holding the Optuna study while it runs: a tuning that was
            cut short resumes from it when re-run with the same file; removed once the tuned
            model is trained. None: the study lives in memory.

    Returns:
        The study, the run ids, the final tracked run and both plots.

    Raises:
        ValueError: A family that cannot be tuned, bad bounds, or no trial completing; the
            parent then ends FAILED.
    """
    trial_tags = {k: v for k, v in tags.items() if k.startswith("dagster.")}
    run_ids: dict[int, str] = {}
    with tracker.start_run(run_name=name, tags={**tags, TAG_ROLE: "parent"}) as parent:
        parent_id = parent.info.run_id
        mlflow.log_params({**settings_dict(settings, space), "tune.family": family,
                           "data.n_users": data.n_users, "data.n_items": data.n_items,
                           "data.n_train": len(data.train), "data.n_valid": len(data.valid),
                           **(params or {})})
        scope = _trial_scope(name, log, parent.info.experiment_id, trial_tags, run_ids)
        storage = None
        if study_file is not None:
            study_file.parent.mkdir(parents=True, exist_ok=True)
            if study_file.is_file():
                log.info(f"resuming the tuning study in {study_file}")
            storage = f"sqlite:///{study_file}"
        result = tune(data, family, space, settings, scope, storage=storage,
                      study_name=None if study_file is None else study_file.stem)
        history, importance, importances = _log_study(result, name, settings.seed)
        document = best_config_document(result, settings, space, parent_id)
        mlflow.log_dict(document, BEST_CONFIG_ARTIFACT)
        write_json(document, best_config_path)
    client = tracker.client()
    final_tags = {**tags, TAG_ROLE: "final", TAG_PARENT_RUN: parent_id}
    try:
        final = train_and_track(
            tracker, log, name=name, data=data, model_config=result.model_config,
            train_config=result.train_config, eval_config=eval_config, tags=final_tags,
            params={**(params or {}), **{f"best.{k}": v for k, v in result.best_params.items()}},
            id_maps=id_maps)
    except BaseException:
        client.set_terminated(parent_id, "FAILED")
        raise
    client.set_tag(parent_id, TAG_FINAL_RUN, final.run_id)
    if study_file is not None:  # done: nothing left to resume
        study_file.unlink(missing_ok=True)
    for key, value in final_metrics(final.result).items():
        if key.startswith("test_"):
            client.log_metric(parent_id, key, value)
    return TunedRun(result, parent_id, dict(run_ids), final, history, importance, importances,
                    best_config_path)
