"""Train stage: one asset per model family, each one MLflow run, stored as state_dict + JSON.

Every asset reads the prepared splits (``prepared/splits/{train,valid,test}``) and id maps,
trains and evaluates through ``tracking.train_and_track`` (core:
``training.experiment.run_experiment``), and is stored by ``ModelIOManager`` at
``<lake>/models/<asset>/``. Config defaults are sized for ``make demo`` on a 2-core CPU
(ml-latest-small: about a minute per neural model); ``TRAIN_PRESETS["full"]`` trains longer.
"""

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Any

import dagster as dg
from torch import nn

from recsys_pipeline.assets.prepare import PREFIX as PREPARED
from recsys_pipeline.assets.prepare import split_key
from recsys_pipeline.data.item_features import item_side_features
from recsys_pipeline.data.lake import file_sha256
from recsys_pipeline.data.raw_watch import ingested_rating_scale, ingested_release_name
from recsys_pipeline.data.validate import Finding
from recsys_pipeline.metadata import findings_result, markdown_table, png_markdown
from recsys_pipeline.model_io import DeviceResource, EvaluationResource
from recsys_pipeline.models.autoencoder_rating import AutoEncoderRatingConfig
from recsys_pipeline.models.base import RatingModel, with_rating_range
from recsys_pipeline.models.bias import BiasConfig
from recsys_pipeline.models.deepfm import DeepFMConfig
from recsys_pipeline.models.mf import MFConfig
from recsys_pipeline.models.mlp import MLPConfig
from recsys_pipeline.models.neumf import NeuMFConfig
from recsys_pipeline.models.popularity import PopularityConfig
from recsys_pipeline.resources import LakeResource
from recsys_pipeline.tracking import (
    SPLIT_TAGS,
    TAG_ASSET,
    TAG_DAGSTER_RUN,
    TAG_FAMILY,
    TAG_RELEASE,
    MlflowResource,
    TrackedRun,
    train_and_track,
)
from recsys_pipeline.training.experiment import (
    MODEL_CLASSES,
    ExperimentData,
    ItemFeatures,
    non_finite_parameters,
)
from recsys_pipeline.training.loop import TrainConfig

GROUP = "train"
PREFIX = "models"
MODEL_IO = "model_io_manager"
EVALUATED_SPLITS = ("train", "valid", "test")
DATA_INS = {
    **{name: dg.AssetIn(key=split_key(name)) for name in EVALUATED_SPLITS},
    "split_report": dg.AssetIn(key=split_key("report")),
    "user_map": dg.AssetIn(key=[PREPARED, "user_map"]),
    "item_map": dg.AssetIn(key=[PREPARED, "item_map"]),
}
SIDE_INS = {"movies": dg.AssetIn(key=["clean", "movies"]),
            "tags": dg.AssetIn(key=["clean", "tags"])}
KINDS = {"pytorch", "mlflow"}


def split_params(report: dict[str, Any]) -> dict[str, Any]:
    """The split's and the filters' configs (``prepared/splits/report.json``) as
    ``data.split.*`` and ``data.filter.*`` run params."""
    return {**{f"data.split.{k}": v for k, v in report.get("config", {}).items()},
            **{f"data.filter.{k}": v for k, v in report.get("filter", {}).items()}}


def split_hashes(lake: LakeResource) -> dict[str, str]:
    """SHA-256 of the split Parquet files on the lake (the data the runs are tagged with)."""
    return {name: file_sha256(lake.path(*split_key(name).path[:-1], f"{name}.parquet"))
            for name in EVALUATED_SPLITS}


class _LoopConfig(dg.Config):
    """Options of the training loop, shared by the gradient-trained models."""

    epochs: int = 15  # most passes over train (early stopping usually ends sooner)
    batch_size: int = 1024  # rows per gradient step
    lr: float = 2e-3  # Adam learning rate
    weight_decay: float = 0.0  # Adam L2 weight decay
    patience: int | None = 3  # stop after this many epochs without a better valid RMSE
    seed: int = 0  # seeds the weights, the shuffles and dropout
    # save a checkpoint after every epoch (data_lake/checkpoints/); a run that died resumes
    # from it when re-executed with the same config and data; removed once training ends
    checkpoint: bool = False

    def loop(self, device: str) -> TrainConfig:
        return TrainConfig(epochs=self.epochs, batch_size=self.batch_size, lr=self.lr,
                           weight_decay=self.weight_decay, patience=self.patience,
                           seed=self.seed, device=device)


class BiasModelConfig(dg.Config):
    """Damped user/item biases, fitted in closed form."""

    damping_user: float = BiasConfig.damping_user  # shrinks biases of light users to 0
    damping_item: float = BiasConfig.damping_item  # shrinks biases of rarely rated items to 0
    iterations: int = BiasConfig.iterations  # alternating least-squares sweeps

    def to_core(self) -> BiasConfig:
        return BiasConfig(self.damping_user, self.damping_item, self.iterations)


class PopularityModelConfig(dg.Config):
    """Most-rated items first, for every user (a ranking baseline)."""

    min_rating: float | None = None  # count only ratings >= this (None: every rating)

    def to_core(self) -> PopularityConfig:
        return PopularityConfig(self.min_rating)


class MFModelConfig(_LoopConfig):
    """Biased matrix factorisation."""

    n_factors: int = MFConfig.n_factors  # latent dimension
    l2: float = 0.1  # per-sample L2 on the factors and biases a batch touches
    lr: float = 5e-3  # Adam learning rate

    def to_core(self) -> MFConfig:
        return MFConfig(n_factors=self.n_factors, l2=self.l2, seed=self.seed)


class MLPModelConfig(_LoopConfig):
    """Concatenated user/item embeddings through an MLP."""

    embedding_dim: int = MLPConfig.user_dim  # user and item embedding width
    hidden: list[int] = list(MLPConfig.hidden)  # hidden layer widths
    dropout: float = 0.3  # after each hidden layer

    def to_core(self) -> MLPConfig:
        return MLPConfig(user_dim=self.embedding_dim, item_dim=self.embedding_dim,
                         hidden=tuple(self.hidden), dropout=self.dropout, seed=self.seed)


class NeuMFModelConfig(_LoopConfig):
    """GMF + MLP branches fused by one output layer."""

    gmf_dim: int = NeuMFConfig.gmf_dim  # GMF embedding width
    mlp_dim: int = NeuMFConfig.mlp_dim  # MLP-branch embedding width (each of user, item)
    hidden: list[int] = list(NeuMFConfig.hidden)  # MLP-branch hidden widths
    dropout: float = 0.3  # after each hidden layer

    def to_core(self) -> NeuMFConfig:
        return NeuMFConfig(gmf_dim=self.gmf_dim, mlp_dim=self.mlp_dim, hidden=tuple(self.hidden),
                           dropout=self.dropout, seed=self.seed)


class DeepFMModelConfig(_LoopConfig):
    """DeepFM over user, item, genres, release-year bucket and popular tags."""

    embedding_dim: int = DeepFMConfig.embedding_dim  # width of every field embedding
    hidden: list[int] = list(DeepFMConfig.hidden)  # deep-part hidden widths
    dropout: float = DeepFMConfig.dropout  # after each hidden layer
    use_genres: bool = True  # genre multi-hot field
    year_bucket_width: int = 10  # release-year buckets of this many years (0: no year field)
    max_tags: int = 50  # tag field over the tags on most items (0: no tag field)

    def to_core(self) -> DeepFMConfig:
        return DeepFMConfig(embedding_dim=self.embedding_dim, hidden=tuple(self.hidden),
                            dropout=self.dropout, seed=self.seed)


class AutoEncoderRatingModelConfig(_LoopConfig):
    """DeepRecommender-style user autoencoder on the users' train rating rows (masked MSE on
    observed ratings, clamped to the rating scale, early-stopped on valid RMSE)."""

    epochs: int = 20  # most passes over the users (early stopping usually ends sooner)
    batch_size: int = 32  # user rows per gradient step (610 users in ml-latest-small)
    lr: float = 1e-3  # Adam learning rate
    hidden: list[int] = [256, 128]  # encoder widths, the last one the code (decoder mirrors)
    activation: str = "selu"  # selu (the paper's), elu, relu or tanh
    dropout: float = 0.8  # on the code layer (the paper's 0.8)
    constrained: bool = False  # tie the decoder's weights to the encoder's (transposed)
    refeed: bool = False  # dense re-feeding: also fit f(f(x)) = f(x) on every item

    def to_core(self) -> AutoEncoderRatingConfig:  # the core config checks every field
        return AutoEncoderRatingConfig(
            hidden=tuple(self.hidden), activation=self.activation, dropout=self.dropout,
            constrained=self.constrained, refeed=self.refeed, unobserved_weight=0.0,
            clamp=True, seed=self.seed)


def _metadata(tracked: TrackedRun, hashes: dict[str, str]) -> dict[str, object]:
    """What a model is judged by in the UI: its MLflow run, scores, curve and data hash."""
    result = tracked.result
    keys = [k for k in ("rmse", "mae", "fcp", "ndcg@10", "recall@10", "hit_rate@10",
                        "coverage@10") if k in result.test]
    rows = [{"metric": k, "valid": round(result.valid[k], 4), "test": round(result.test[k], 4)}
            for k in keys]
    meta: dict[str, object] = {
        "mlflow_run_id": tracked.run_id,
        "mlflow_model_uri": tracked.model_uri,
        "registered_version": tracked.registered_version or "",
        "champion": tracked.champion,
        "champion_reason": tracked.champion_reason,
        "best_epoch": result.best_epoch,
        "epochs_run": len(result.history),
        "train_seconds": round(result.train_seconds, 2),
        "device": result.device,
        "metrics": dg.MetadataValue.md(markdown_table(rows)),
        **{f"test_{k.replace('@', '_at_')}": round(result.test[k], 4) for k in keys},
        "train_sha256": hashes["train"],
    }
    if tracked.gate is not None:
        meta.update(tracked.gate.metadata())
    if tracked.learning_curve is not None:
        meta["learning_curve"] = png_markdown(tracked.learning_curve, "learning curve")
    return meta


def run_tags(context: dg.AssetExecutionContext, lake: LakeResource, family: str
             ) -> tuple[dict[str, str], dict[str, str]]:
    """The tags of a rating model's run (Dagster run and asset, family, the ingested release
    the champion gate compares, the splits' SHA-256) and those hashes by split."""
    hashes = split_hashes(lake)
    tags = {TAG_DAGSTER_RUN: context.run_id, TAG_ASSET: context.asset_key.to_user_string(),
            TAG_FAMILY: family, TAG_RELEASE: ingested_release_name(lake.raw_dir()),
            **{SPLIT_TAGS[name]: h for name, h in hashes.items()}}
    return tags, hashes


def release_rating_range(lake: LakeResource) -> tuple[float, float] | None:
    """``(rating_min, rating_max)`` of the ingested release (1..5 for ml-1m and ml-100k,
    where the configs' 0.5 would let predictions fall below 1); None before any ingest."""
    scale = ingested_rating_scale(lake.raw_dir())
    return None if scale is None else scale[:2]


def on_release_scale(model_config: Any, lake: LakeResource) -> Any:
    """``model_config`` with the ingested release's rating range (:func:`release_rating_range`;
    unchanged for a config without one, e.g. popularity)."""
    return with_rating_range(model_config, release_rating_range(lake))


def checkpoint_file(lake: LakeResource, context: dg.AssetExecutionContext, data_sha256: str,
                    *configs: object) -> Path:
    """``<lake>/checkpoints/<asset>-<hash>.pt``, the hash over the training data's SHA-256
    and the model's and loop's configs: a checkpoint is only ever resumed by the same
    training on the same data (another config starts afresh instead of failing)."""
    key = json.dumps([data_sha256, *(dataclasses.asdict(c) for c in configs)],
                     sort_keys=True, default=str)
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    return Path(lake.path("checkpoints", f"{context.asset_key.path[-1]}-{digest}.pt"))


def with_checkpoint(context: dg.AssetExecutionContext, lake: LakeResource, data_sha256: str,
                    loop: Any, model_config: object) -> Any:
    """``loop`` (a ``TrainConfig`` or ``RankingTrainConfig``) saving a checkpoint after every
    epoch to :func:`checkpoint_file`, which it resumes when a run that died left one."""
    ckpt = checkpoint_file(lake, context, data_sha256, model_config, loop)
    ckpt.parent.mkdir(parents=True, exist_ok=True)
    if ckpt.is_file():
        context.log.info(f"resuming from checkpoint {ckpt}")
    return dataclasses.replace(loop, checkpoint_path=str(ckpt))


def remove_checkpoints(context: dg.AssetExecutionContext, lake: LakeResource,
                       loop: Any) -> None:
    """After a training with ``checkpoint_path`` ended: its checkpoint, and any left by
    other settings of the same asset, go."""
    if loop is None or not loop.checkpoint_path:
        return
    for stale in Path(lake.path("checkpoints")).glob(f"{context.asset_key.path[-1]}-*.pt"):
        stale.unlink(missing_ok=True)


def _train(context: dg.AssetExecutionContext, model_config: object, loop: TrainConfig,
           inputs: dict, mlflow: MlflowResource, lake: LakeResource,
           evaluation: EvaluationResource, features: ItemFeatures | None = None,
           checkpoint: bool = False) -> RatingModel:
    """Train + evaluate + log one model in one MLflow run; attach its metadata."""
    data = ExperimentData.from_tables(
        inputs["train"], inputs["valid"], inputs["test"], inputs["user_map"].num_rows,
        inputs["item_map"].num_rows, features)
    tags, hashes = run_tags(context, lake, MODEL_CLASSES[type(model_config)].family)
    model_config = on_release_scale(model_config, lake)
    if checkpoint:
        loop = with_checkpoint(context, lake, hashes["train"], loop, model_config)
    tracked = train_and_track(
        mlflow, context.log, name=context.asset_key.path[-1], data=data,
        model_config=model_config, train_config=loop, eval_config=evaluation.eval_config(),
        tags=tags, params=split_params(inputs["split_report"]),
        id_maps={"user_map": inputs["user_map"], "item_map": inputs["item_map"]})
    remove_checkpoints(context, lake, loop)
    context.add_output_metadata(_metadata(tracked, hashes))
    return tracked.result.model


@dg.asset(key_prefix=PREFIX, group_name=GROUP, io_manager_key=MODEL_IO, ins=DATA_INS,
          kinds=KINDS)
def bias_model(context: dg.AssetExecutionContext, config: BiasModelConfig,
               mlflow: MlflowResource, lake: LakeResource, device: DeviceResource,
               evaluation: EvaluationResource, **inputs: object) -> RatingModel:
    """Baseline μ + b_u + b_i with damped biases (closed form), logged to MLflow."""
    return _train(context, config.to_core(), TrainConfig(device=device.device), inputs,
                  mlflow, lake, evaluation)


@dg.asset(key_prefix=PREFIX, group_name=GROUP, io_manager_key=MODEL_IO, ins=DATA_INS,
          kinds=KINDS)
def popularity_model(context: dg.AssetExecutionContext, config: PopularityModelConfig,
                     mlflow: MlflowResource, lake: LakeResource, device: DeviceResource,
                     evaluation: EvaluationResource, **inputs: object) -> RatingModel:
    """Most-rated-first ranking baseline (no rating predictions), logged to MLflow."""
    return _train(context, config.to_core(), TrainConfig(device=device.device), inputs,
                  mlflow, lake, evaluation)


@dg.asset(key_prefix=PREFIX, group_name=GROUP, io_manager_key=MODEL_IO, ins=DATA_INS,
          kinds=KINDS)
def mf_model(context: dg.AssetExecutionContext, config: MFModelConfig, mlflow: MlflowResource,
             lake: LakeResource, device: DeviceResource, evaluation: EvaluationResource,
             **inputs: object) -> RatingModel:
    """Biased matrix factorisation μ + b_u + b_i + p_u·q_i trained on MSE, logged to MLflow."""
    return _train(context, config.to_core(), config.loop(device.device), inputs, mlflow, lake,
                  evaluation, checkpoint=config.checkpoint)


@dg.asset(key_prefix=PREFIX, group_name=GROUP, io_manager_key=MODEL_IO, ins=DATA_INS,
          kinds=KINDS)
def mlp_model(context: dg.AssetExecutionContext, config: MLPModelConfig,
              mlflow: MlflowResource, lake: LakeResource, device: DeviceResource,
              evaluation: EvaluationResource, **inputs: object) -> RatingModel:
    """MLP over concatenated user and item embeddings trained on MSE, logged to MLflow."""
    return _train(context, config.to_core(), config.loop(device.device), inputs, mlflow, lake,
                  evaluation, checkpoint=config.checkpoint)


@dg.asset(key_prefix=PREFIX, group_name=GROUP, io_manager_key=MODEL_IO, ins=DATA_INS,
          kinds=KINDS)
def neumf_model(context: dg.AssetExecutionContext, config: NeuMFModelConfig,
                mlflow: MlflowResource, lake: LakeResource, device: DeviceResource,
                evaluation: EvaluationResource, **inputs: object) -> RatingModel:
    """NeuMF (GMF + MLP branches) trained on MSE, logged to MLflow."""
    return _train(context, config.to_core(), config.loop(device.device), inputs, mlflow, lake,
                  evaluation, checkpoint=config.checkpoint)


@dg.asset(key_prefix=PREFIX, group_name=GROUP, io_manager_key=MODEL_IO,
          ins={**DATA_INS, **SIDE_INS}, kinds=KINDS)
def deepfm_model(context: dg.AssetExecutionContext, config: DeepFMModelConfig,
                 mlflow: MlflowResource, lake: LakeResource, device: DeviceResource,
                 evaluation: EvaluationResource, **inputs: object) -> RatingModel:
    """DeepFM over user, item, genres, year bucket and top tags, trained on MSE, logged to
    MLflow."""
    side = item_side_features(inputs["item_map"], inputs["movies"], inputs["tags"],
                              config.max_tags)
    features = ItemFeatures.from_arrays(side.genres if config.use_genres else None,
                                        side.years if config.year_bucket_width else None,
                                        side.tags, max(config.year_bucket_width, 1))
    return _train(context, config.to_core(), config.loop(device.device), inputs, mlflow, lake,
                  evaluation, features, checkpoint=config.checkpoint)


@dg.asset(key_prefix=PREFIX, group_name=GROUP, io_manager_key=MODEL_IO, ins=DATA_INS,
          kinds=KINDS)
def autoencoder_rating_model(context: dg.AssetExecutionContext,
                             config: AutoEncoderRatingModelConfig, mlflow: MlflowResource,
                             lake: LakeResource, device: DeviceResource,
                             evaluation: EvaluationResource, **inputs: object) -> RatingModel:
    """DeepRecommender-style autoencoder (SELU, dropout on the code) predicting ratings from
    each user's train-split rating row, masked MSE on observed ratings, logged to MLflow as
    ``recsys-autoencoder_rating`` (selected by valid RMSE, apart from the ranking
    autoencoder's ``recsys-autoencoder``)."""
    return _train(context, config.to_core(), config.loop(device.device), inputs, mlflow, lake,
                  evaluation, checkpoint=config.checkpoint)


model_assets = [bias_model, popularity_model, mf_model, mlp_model, neumf_model, deepfm_model,
                autoencoder_rating_model]

_LONGER = {"epochs": 50, "patience": 5, "batch_size": 512}
# Run configs for bigger settings (``define_asset_job(..., config=TRAIN_PRESETS["full"])`` or
# the same dict as YAML under ``ops:``); the Config defaults above are the "demo" preset.
TRAIN_PRESETS: dict[str, dict] = {
    "demo": {"ops": {}},
    "full": {"ops": {
        "models__mf_model": {"config": {**_LONGER, "n_factors": 64, "lr": 2e-3}},
        "models__mlp_model": {"config": {**_LONGER, "embedding_dim": 64,
                                         "hidden": [128, 64], "weight_decay": 1e-5}},
        "models__neumf_model": {"config": {**_LONGER, "gmf_dim": 32, "mlp_dim": 64,
                                           "hidden": [128, 64, 32], "weight_decay": 1e-5}},
        "models__autoencoder_rating_model": {"config": {"epochs": 100, "patience": 10,
                                                        "hidden": [512, 256]}},
        "models__deepfm_model": {"config": {**_LONGER, "embedding_dim": 32,
                                            "hidden": [128, 64], "max_tags": 200,
                                            "weight_decay": 1e-5}},
    }},
}


def no_nan_weights_check(asset: dg.AssetsDefinition) -> dg.AssetChecksDefinition:
    """The blocking ``no_nan_weights`` check of a model asset (rating, ranking or tuned)."""

    @dg.asset_check(asset=asset, name="no_nan_weights", blocking=True,
                    description="Every weight and buffer of the stored model is finite.")
    def _check(model: nn.Module) -> dg.AssetCheckResult:
        bad = non_finite_parameters(model)
        findings = [Finding("no_nan_weights", n, f"tensor {name!r} holds {n} NaN/inf value(s)",
                            [{"tensor": name, "non_finite": n}]) for name, n in bad.items()]
        return findings_result(findings, tensors=len(model.state_dict()))

    return _check


train_assets = model_assets
train_checks = [no_nan_weights_check(asset) for asset in model_assets]
