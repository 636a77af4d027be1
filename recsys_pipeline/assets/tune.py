"""Tune stage: Optuna search over one model family's hyperparameters, then the tuned model.

``models/tuned_model`` reads the same splits and id maps as the train assets (plus the movie
side features, used when the family is DeepFM), runs the seeded TPE + median-pruner search on
the validation split (core: ``tuning.tune``) with one nested MLflow run per trial under one
parent (``tracking_tune.tune_and_track``), trains the best configuration, evaluates it on test
and registers it as a version of ``recsys-<family>``. The best configuration is also saved at
``<lake>/tuning/<family>/best_config.json``. ``tune_job`` materializes it.
"""

import hashlib
import json
from pathlib import Path

import dagster as dg

from recsys_pipeline.assets.train import (
    DATA_INS,
    MODEL_IO,
    PREFIX,
    SIDE_INS,
    release_rating_range,
    run_tags,
    split_params,
)
from recsys_pipeline.data.item_features import item_side_features
from recsys_pipeline.metadata import markdown_table, png_markdown
from recsys_pipeline.model_io import DeviceResource, EvaluationResource
from recsys_pipeline.models.base import RatingModel
from recsys_pipeline.resources import LakeResource
from recsys_pipeline.tracking import MlflowResource
from recsys_pipeline.tracking_tune import TunedRun, tune_and_track
from recsys_pipeline.training.experiment import ExperimentData, ItemFeatures
from recsys_pipeline.tuning import SearchSpace, TuneSettings, check_family
from recsys_pipeline.tuning.study import settings_dict

GROUP = "tune"
KINDS = {"pytorch", "mlflow", "optuna"}
DEEPFM_MAX_TAGS = 50  # as deepfm_model's default: the tag field over the 50 most common tags
TEST_KEYS = ("rmse", "mae", "fcp", "ndcg@10", "recall@10", "hit_rate@10", "coverage@10")


class TunedModelConfig(dg.Config):
    """Which family to tune, how long, and the bounds of the search."""

    model: str = "mf"  # model family to tune: mf, mlp, neumf or deepfm
    n_trials: int = 10  # most Optuna trials
    timeout_s: float | None = None  # stop starting trials after this many seconds (None: never)
    seed: int = 0  # seeds the TPE sampler, every trial's weights and shuffles
    epochs: int = 8  # most epochs per trial (and of the final tuned model)
    patience: int | None = 2  # early-stopping patience per trial (None: never stop early)
    batch_size: int = 1024  # rows per gradient step
    tpe_startup_trials: int = 5  # random trials before TPE starts modelling
    pruner_startup_trials: int = 3  # trials never pruned (the median needs some history)
    pruner_warmup_epochs: int = 1  # epochs of each trial never pruned
    lr_low: float = SearchSpace.lr[0]  # learning rate bounds (log scale)
    lr_high: float = SearchSpace.lr[1]
    weight_decay_low: float = SearchSpace.weight_decay[0]  # weight decay bounds (log scale;
    weight_decay_high: float = SearchSpace.weight_decay[1]  # mlp, neumf, deepfm)
    l2_low: float = SearchSpace.l2[0]  # MF per-sample L2 bounds (log scale)
    l2_high: float = SearchSpace.l2[1]
    embedding_dims: list[int] = list(SearchSpace.embedding_dims)  # embedding widths to try
    dropout_low: float = SearchSpace.dropout[0]  # dropout bounds (mlp, neumf, deepfm)
    dropout_high: float = SearchSpace.dropout[1]
    hidden_choices: list[list[int]] = [list(h) for h in SearchSpace.hidden]  # layer widths

    def to_space(self) -> SearchSpace:
        return SearchSpace(lr=(self.lr_low, self.lr_high),
                           weight_decay=(self.weight_decay_low, self.weight_decay_high),
                           l2=(self.l2_low, self.l2_high),
                           embedding_dims=tuple(self.embedding_dims),
                           dropout=(self.dropout_low, self.dropout_high),
                           hidden=tuple(tuple(h) for h in self.hidden_choices))

    def to_settings(self, device: str, rating_range: tuple[float, float] | None = None
                    ) -> TuneSettings:
        return TuneSettings(n_trials=self.n_trials, timeout_s=self.timeout_s, seed=self.seed,
                            epochs=self.epochs, patience=self.patience,
                            batch_size=self.batch_size,
                            tpe_startup_trials=self.tpe_startup_trials,
                            pruner_startup_trials=self.pruner_startup_trials,
                            pruner_warmup_epochs=self.pruner_warmup_epochs, device=device,
                            rating_range=rating_range)


def _features(family: str, inputs: dict) -> ItemFeatures | None:
    """DeepFM's side features (genres, year buckets of 10 years, top tags); None otherwise."""
    if family != "deepfm":
        return None
    side = item_side_features(inputs["item_map"], inputs["movies"], inputs["tags"],
                              DEEPFM_MAX_TAGS)
    return ItemFeatures.from_arrays(side.genres, side.years, side.tags, 10)


def tuning_metadata(tuned: TunedRun) -> dict[str, object]:
    """What a tuning is judged by: its runs, best params, scores, trial counts and plots."""
    result, final = tuned.result, tuned.final.result
    params = [{"param": k, "value": v if isinstance(v, str) else f"{v:.4g}",
               "importance": round(tuned.importances[k], 3) if k in tuned.importances else ""}
              for k, v in result.best_params.items()]
    keys = [k for k in TEST_KEYS if k in final.test]
    return {
        "mlflow_parent_run_id": tuned.parent_run_id,
        "mlflow_run_id": tuned.final.run_id,
        "registered_version": tuned.final.registered_version or "",
        "champion": tuned.final.champion,
        "family": result.family,
        "best_trial": result.best_trial,
        "best_valid_rmse": round(result.best_value, 4),
        "best_params": dg.MetadataValue.md(markdown_table(params)),
        "trials_complete": result.states["COMPLETE"],
        "trials_pruned": result.states["PRUNED"],
        "trials_failed": result.states["FAIL"],
        **{f"test_{k.replace('@', '_at_')}": round(final.test[k], 4) for k in keys},
        "best_config_path": dg.MetadataValue.path(str(tuned.best_config_path)),
        "optimization_history": png_markdown(tuned.history_png, "optimization history"),
        "param_importances": png_markdown(tuned.importance_png, "parameter importances"),
    }


def _study_file(lake: LakeResource, family: str, train_sha256: str, settings: TuneSettings,
                space: SearchSpace) -> Path:
    """``<lake>/tuning/<family>/study-<hash>.db``, the hash over the training split and every
    setting and bound: only the same tuning on the same data resumes a study."""
    key = json.dumps([train_sha256, family, settings_dict(settings, space)], sort_keys=True,
                     default=str)
    return Path(lake.path("tuning", family,
                          f"study-{hashlib.sha256(key.encode()).hexdigest()[:16]}.db"))


@dg.asset(key_prefix=PREFIX, group_name=GROUP, io_manager_key=MODEL_IO,
          ins={**DATA_INS, **SIDE_INS}, kinds=KINDS)
def tuned_model(context: dg.AssetExecutionContext, config: TunedModelConfig,
                mlflow: MlflowResource, lake: LakeResource, device: DeviceResource,
                evaluation: EvaluationResource, **inputs: object) -> RatingModel:
    """The best of an Optuna search (one nested MLflow run per trial), trained, tested and
    registered."""
    family = check_family(config.model)
    data = ExperimentData.from_tables(
        inputs["train"], inputs["valid"], inputs["test"], inputs["user_map"].num_rows,
        inputs["item_map"].num_rows, _features(family, inputs))
    tags, hashes = run_tags(context, lake, family)
    space = config.to_space()
    settings = config.to_settings(device.device, release_rating_range(lake))
    tuned = tune_and_track(
        mlflow, context.log, name=context.asset_key.path[-1], data=data, family=family,
        space=space, settings=settings, tags=tags,
        best_config_path=lake.path("tuning", family, "best_config.json"),
        params=split_params(inputs["split_report"]),
        id_maps={"user_map": inputs["user_map"], "item_map": inputs["item_map"]},
        eval_config=evaluation.eval_config(),
        study_file=_study_file(lake, family, hashes["train"], settings, space))
    context.add_output_metadata({**tuning_metadata(tuned), "train_sha256": hashes["train"]})
    return tuned.final.result.model


tune_assets = [tuned_model]

tune_job = dg.define_asset_job(
    "tune_job",
    selection=dg.AssetSelection.groups(GROUP),
    description="Optuna search over one model family's hyperparameters on the validation "
                "split (a nested MLflow run per trial), then train, test and register the best.",
)
