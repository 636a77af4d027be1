"""Train stage, ranking side: one asset per ranking model, one MLflow run each.

* fold-in models (``autoencoder_model``, ``multvae_model``, ``ease_model``): strong
  generalization on ``prepared/strong_generalization_matrix``, plus the per-user split
  (``prepared/user_item_matrix``) of the held-out test users;
* next-item models (``gru4rec_model``, ``sasrec_model``, ``cooccurrence_model``):
  ``prepared/session_sequences``;
* ``two_tower_model``: full-catalogue top-K on the rating splits with genre/year item features.

Protocols: ``training.ranking_experiment``. Models are stored by ``ranking_model_io_manager``
(``<lake>/models/<asset>/{config.json,state_dict.pt}``). Config defaults are demo-sized
(all seven together: about a minute of training on ml-latest-small on a 2-core CPU); the configs
and the run presets live in ``assets.ranking_configs``.
"""

import time
from collections.abc import Callable
from typing import Any

import dagster as dg
import pyarrow as pa

from recsys_pipeline import schema
from recsys_pipeline.assets.prepare import PREFIX as PREPARED
from recsys_pipeline.assets.prepare import SPLIT_INS, split_key, splits_from
from recsys_pipeline.assets.ranking_configs import (
    AutoEncoderModelConfig,
    CooccurrenceModelConfig,
    EASEModelConfig,
    GRU4RecModelConfig,
    MultVAEModelConfig,
    SASRecModelConfig,
    TwoTowerModelConfig,
)
from recsys_pipeline.assets.ranking_data import ITEMS_KEY, MATRIX_KEY
from recsys_pipeline.assets.train import (
    GROUP,
    KINDS,
    PREFIX,
    on_release_scale,
    remove_checkpoints,
    split_params,
    with_checkpoint,
)
from recsys_pipeline.data.item_features import item_side_features
from recsys_pipeline.data.lake import file_sha256
from recsys_pipeline.data.order import timestamps
from recsys_pipeline.data.sessions import seen_tokens
from recsys_pipeline.metadata import markdown_table
from recsys_pipeline.model_io import DeviceResource
from recsys_pipeline.models.autoencoder import AutoEncoderModel
from recsys_pipeline.models.cooccurrence import CooccurrenceModel, PopularityNext
from recsys_pipeline.models.deepfm import year_buckets
from recsys_pipeline.models.ease import EASEModel
from recsys_pipeline.models.gru4rec import GRU4RecModel
from recsys_pipeline.models.multvae import MultVAEModel
from recsys_pipeline.models.sasrec import SASRecModel
from recsys_pipeline.models.two_tower import TwoTowerModel, recent_items
from recsys_pipeline.resources import LakeResource
from recsys_pipeline.tracking import TAG_ASSET, TAG_DAGSTER_RUN, TAG_FAMILY, MlflowResource
from recsys_pipeline.tracking_ranking import (
    BASELINE_PREFIX,
    TAG_PROTOCOL,
    TAG_RANKING_TRAIN_SHA,
    TAG_RANKING_VALID_SHA,
    TrackedRanking,
    train_and_track_ranking,
)
from recsys_pipeline.tracking_rescore import NextItemValidation, TopKValidation
from recsys_pipeline.training.device import pick_device
from recsys_pipeline.training.ranking_experiment import (
    run_fold_in,
    run_next_item,
    run_topk,
    softmax_cost_warning,
)
from recsys_pipeline.training.ranking_loop import RankingTrainConfig

MODEL_IO = "ranking_model_io_manager"
STRONG, NEXT, TOPK = "strong_generalization", "next_item", "per_user_topk"
ENCODED_FILE = (PREPARED, "encoded_ratings.parquet")
VALID_FILES = {STRONG: (PREPARED, "strong_generalization_matrix", "valid_binary.npz"),
               NEXT: (PREPARED, "session_sequences", "valid.parquet"),
               TOPK: (PREPARED, "splits", "valid.parquet")}
STRONG_INS = {"strong": dg.AssetIn(key=MATRIX_KEY), "columns": dg.AssetIn(key=ITEMS_KEY),
              "user_split": dg.AssetIn(key=[PREPARED, "user_item_matrix"])}
NEXT_INS = {"sessions": dg.AssetIn(key=[PREPARED, "session_sequences"]),
            "item_map": dg.AssetIn(key=[PREPARED, "item_map"]),
            "split_report": dg.AssetIn(key=split_key("report")), **SPLIT_INS}
TOPK_INS = {"user_split": dg.AssetIn(key=[PREPARED, "user_item_matrix"]),
            "item_map": dg.AssetIn(key=[PREPARED, "item_map"]),
            "movies": dg.AssetIn(key=["clean", "movies"]),
            "train": dg.AssetIn(key=split_key("train")),
            "split_report": dg.AssetIn(key=split_key("report"))}
SHOWN = ("recall@20", "ndcg@10", "ndcg@100", "hr@10", "mrr@10", "recall@10")


def _tags(context: dg.AssetExecutionContext, lake: LakeResource, family: str,
          protocol: str) -> dict[str, str]:
    return {TAG_DAGSTER_RUN: context.run_id, TAG_ASSET: context.asset_key.to_user_string(),
            TAG_FAMILY: family, TAG_PROTOCOL: protocol,
            TAG_RANKING_TRAIN_SHA: file_sha256(lake.path(*ENCODED_FILE)),
            TAG_RANKING_VALID_SHA: file_sha256(lake.path(*VALID_FILES[protocol]))}


def _loop(context: dg.AssetExecutionContext, lake: LakeResource, config: Any, device: str,
          model: Any, protocol: str, grad_clip: float | None = None) -> RankingTrainConfig:
    """The asset's training loop; with ``checkpoint: true`` it saves every epoch and resumes
    a run that died on the same data (the encoded ratings and the protocol's validation
    file) and settings."""
    loop = config.loop(device, grad_clip=grad_clip)
    if not config.checkpoint:
        return loop
    data = file_sha256(lake.path(*ENCODED_FILE)) + file_sha256(lake.path(*VALID_FILES[protocol]))
    return with_checkpoint(context, lake, data, loop, model.config)


def _track(context: dg.AssetExecutionContext, mlflow: MlflowResource, lake: LakeResource,
           model: Any, protocol: str, fit: Any, loop: RankingTrainConfig | None,
           params: dict[str, Any] | None = None, validation: Any = None) -> Any:
    """Train + evaluate ``model`` in one MLflow run; attach its metadata; return it.

    ``validation`` (fold-in models' validation matrices, sequence models'
    :class:`NextItemValidation`, two-tower's :class:`TopKValidation`) lets the champion gate
    re-score the champion on it after a data change."""
    tracked: TrackedRanking = train_and_track_ranking(
        mlflow, context.log, name=context.asset_key.path[-1], family=model.family,
        fit=fit, model_config=model.config, train_config=loop,
        tags=_tags(context, lake, model.family, protocol), params=params,
        validation=validation)
    remove_checkpoints(context, lake, loop)
    out = tracked.outcome
    rows = [{"metric": k, "valid": round(out.valid[k], 4), "test": round(out.test[k], 4)}
            for k in SHOWN if k in out.test]
    context.add_output_metadata({
        "mlflow_run_id": tracked.run_id, "protocol": protocol,
        "registered_version": tracked.registered_version or "",
        "champion": tracked.champion, "champion_reason": tracked.champion_reason,
        "best_epoch": out.best_epoch, "epochs_run": len(out.history),
        "train_seconds": round(out.train_seconds, 2),
        "metrics": dg.MetadataValue.md(markdown_table(rows)),
        **{f"test_{k.replace('@', '_at_')}": round(v, 4) for k, v in out.test.items()},
        **{k.replace("@", "_at_"): round(v, 4) for k, v in out.extra.items()},
        **(tracked.gate.metadata() if tracked.gate is not None else {})})
    return out.model


def _item_idx(columns: Any) -> Any:
    return columns.column("item_idx").to_numpy()


def _strong_params(columns: Any) -> dict[str, Any]:
    return {"data.n_columns": columns.num_rows, "eval.protocol": STRONG}


@dg.asset(key_prefix=PREFIX, group_name=GROUP, io_manager_key=MODEL_IO, ins=STRONG_INS,
          kinds=KINDS)
def autoencoder_model(context: dg.AssetExecutionContext, config: AutoEncoderModelConfig,
                      mlflow: MlflowResource, lake: LakeResource, device: DeviceResource,
                      strong: Any, columns: Any, user_split: Any) -> AutoEncoderModel:
    """Autoencoder on binary user rows, scored by folding in held-out users, logged to
    MLflow."""
    model = AutoEncoderModel(*strong.binary["train"].shape,
                             on_release_scale(config.to_core(), lake))  # its rating clamp
    loop = _loop(context, lake, config, device.device, model, STRONG)
    return _track(context, mlflow, lake, model, STRONG, lambda cb: run_fold_in(
        model, strong, _item_idx(columns), loop, cb, user_split), loop, _strong_params(columns),
        strong.fold_in_pair("valid"))


@dg.asset(key_prefix=PREFIX, group_name=GROUP, io_manager_key=MODEL_IO, ins=STRONG_INS,
          kinds=KINDS)
def multvae_model(context: dg.AssetExecutionContext, config: MultVAEModelConfig,
                  mlflow: MlflowResource, lake: LakeResource, device: DeviceResource,
                  strong: Any, columns: Any, user_split: Any) -> MultVAEModel:
    """Mult-VAE on binary user rows, scored by folding in held-out users, logged to MLflow."""
    model = MultVAEModel(*strong.binary["train"].shape, config.to_core())
    loop = _loop(context, lake, config, device.device, model, STRONG)
    return _track(context, mlflow, lake, model, STRONG, lambda cb: run_fold_in(
        model, strong, _item_idx(columns), loop, cb, user_split), loop, _strong_params(columns),
        strong.fold_in_pair("valid"))


def _closed_form(fit_model: Callable[[], Any], evaluate: Callable[[Any], Any]) -> Any:
    """``evaluate(fit_model())`` with the fit's wall time as the outcome's ``train_seconds``
    (the ranking experiment times only the models it trains)."""
    t0 = time.perf_counter()
    model = fit_model()
    seconds = time.perf_counter() - t0
    outcome = evaluate(model)
    outcome.train_seconds = seconds
    return outcome


@dg.asset(key_prefix=PREFIX, group_name=GROUP, io_manager_key=MODEL_IO, ins=STRONG_INS,
          kinds=KINDS)
def ease_model(context: dg.AssetExecutionContext, config: EASEModelConfig,
               mlflow: MlflowResource, lake: LakeResource, device: DeviceResource,
               strong: Any, columns: Any, user_split: Any) -> EASEModel:
    """EASE item-item model in closed form, scored by folding in held-out users, logged to
    MLflow."""
    def fit(_on_epoch: Any) -> Any:
        return _closed_form(
            lambda: EASEModel.fit(strong.binary["train"], config.to_core(), device=device.device),
            lambda model: run_fold_in(model, strong, _item_idx(columns), None, None, user_split))

    return _track(context, mlflow, lake, EASEModel(1, 1, config.to_core()), STRONG, fit, None,
                  _strong_params(columns), strong.fold_in_pair("valid"))


def _split_method(split_report: dict[str, Any]) -> str:
    return str(split_report.get("config", {}).get("method", "unknown"))


def _seen(sessions: Any, split_tables: dict[str, pa.Table]) -> dict[str, Any]:
    """Each valid/test row's whole history before its target (``data.sessions.seen_tokens``),
    excluded from the ranking with the input tokens (which keep the last ``max_len`` only)."""
    splits = splits_from(split_tables)
    return {name: seen_tokens(splits, getattr(sessions, name), sessions.vocab, name)
            for name in ("valid", "test")}


def _track_next(context: dg.AssetExecutionContext, mlflow: MlflowResource,
                lake: LakeResource, model: Any, sessions: Any, item_map: Any,
                split_report: dict[str, Any], loop: RankingTrainConfig | None,
                fit: Any = None, seen: dict[str, Any] | None = None) -> Any:
    """``_track`` for a next-item model: ``run_next_item`` (or ``fit``), the split's params,
    and the validation sequences with their tokens' original item ids for the gate."""
    if loop is not None and (warning := softmax_cost_warning(model, pick_device(loop.device))):
        context.log.warning(warning)
    item_ids = item_map.sort_by(schema.ITEM_IDX).column(schema.ITEM_ID).to_numpy()
    validation = NextItemValidation(sessions.valid.tokens, sessions.valid.targets,
                                    item_ids[sessions.vocab], _split_method(split_report))
    return _track(context, mlflow, lake, model, NEXT,
                  fit or (lambda cb: run_next_item(model, sessions, loop, cb, seen=seen)), loop,
                  split_params(split_report), validation)


@dg.asset(key_prefix=PREFIX, group_name=GROUP, io_manager_key=MODEL_IO, ins=NEXT_INS,
          kinds=KINDS)
def gru4rec_model(context: dg.AssetExecutionContext, config: GRU4RecModelConfig,
                  mlflow: MlflowResource, lake: LakeResource, device: DeviceResource,
                  sessions: Any, item_map: Any, split_report: Any,
                  **split_tables: pa.Table) -> GRU4RecModel:
    """GRU4Rec next-item model on the users' chronological sequences, logged to MLflow."""
    model = GRU4RecModel(int(sessions.vocab.size), config.to_core())
    return _track_next(context, mlflow, lake, model, sessions, item_map, split_report,
                       _loop(context, lake, config, device.device, model, NEXT, 5.0),
                       seen=_seen(sessions, split_tables))


@dg.asset(key_prefix=PREFIX, group_name=GROUP, io_manager_key=MODEL_IO, ins=NEXT_INS,
          kinds=KINDS)
def sasrec_model(context: dg.AssetExecutionContext, config: SASRecModelConfig,
                 mlflow: MlflowResource, lake: LakeResource, device: DeviceResource,
                 sessions: Any, item_map: Any, split_report: Any,
                 **split_tables: pa.Table) -> SASRecModel:
    """SASRec next-item Transformer on the users' chronological sequences, logged to MLflow."""
    model = SASRecModel(int(sessions.vocab.size), config.to_core())
    return _track_next(context, mlflow, lake, model, sessions, item_map, split_report,
                       _loop(context, lake, config, device.device, model, NEXT, 5.0),
                       seen=_seen(sessions, split_tables))


@dg.asset(key_prefix=PREFIX, group_name=GROUP, io_manager_key=MODEL_IO, ins=NEXT_INS,
          kinds=KINDS)
def cooccurrence_model(context: dg.AssetExecutionContext, config: CooccurrenceModelConfig,
                       mlflow: MlflowResource, lake: LakeResource, sessions: Any,
                       item_map: Any, split_report: Any,
                       **split_tables: pa.Table) -> CooccurrenceModel:
    """Last-item co-occurrence next-item baseline (counted, not trained), logged to MLflow,
    with the popularity baseline (``PopularityNext``, counted from the same sequences) scored
    beside it on the same rows (``baseline_popularity_*`` metrics; its own leaderboard row)."""
    seen = _seen(sessions, split_tables)

    def fit(_on_epoch: Any) -> Any:
        outcome = _closed_form(
            lambda: CooccurrenceModel.fit(sessions.train.tokens, int(sessions.vocab.size),
                                          config.to_core()),
            lambda model: run_next_item(model, sessions, None, seen=seen))
        baseline = run_next_item(PopularityNext.of(outcome.model), sessions, None, seen=seen)
        outcome.extra.update({f"{BASELINE_PREFIX}{split}_{k}": v
                              for split in ("valid", "test")
                              for k, v in getattr(baseline, split).items() if k != "n_rows"})
        return outcome

    return _track_next(context, mlflow, lake, CooccurrenceModel(1, config.to_core()),
                       sessions, item_map, split_report, None, fit)


@dg.asset(key_prefix=PREFIX, group_name=GROUP, io_manager_key=MODEL_IO, ins=TOPK_INS,
          kinds=KINDS)
def two_tower_model(context: dg.AssetExecutionContext, config: TwoTowerModelConfig,
                    mlflow: MlflowResource, lake: LakeResource, device: DeviceResource,
                    user_split: Any, item_map: Any, movies: Any, train: pa.Table,
                    split_report: dict[str, Any]) -> TwoTowerModel:
    """Two-tower retrieval (id [+ genres] [+ year] item tower, user id [+ recent items] user
    tower), full-catalogue top-K on the per-user split, logged to MLflow."""
    core = config.to_core()
    side = item_side_features(item_map, movies)
    genres = side.genres if config.use_genres and side.genres.shape[1] else None
    buckets, n_buckets = (year_buckets(side.years, config.year_bucket_width)
                          if config.year_bucket_width else (None, 0))
    n_users, n_items = user_split.explicit["train"].shape
    model = TwoTowerModel(n_users, n_items, core,
                          n_genres=0 if genres is None else genres.shape[1],
                          n_year_buckets=n_buckets)
    model.set_item_features(genres, buckets)
    if core.n_recent:  # each user's last n_recent train-split items, newest last
        model.set_recent(recent_items(train.column(schema.USER_IDX).to_numpy(),
                                      train.column(schema.ITEM_IDX).to_numpy(),
                                      timestamps(train), n_users, n_items, core.n_recent))
    loop = _loop(context, lake, config, device.device, model, TOPK)
    validation = TopKValidation(user_split.explicit["train"], user_split.explicit["valid"],
                                _split_method(split_report))
    return _track(context, mlflow, lake, model, TOPK,
                  lambda cb: run_topk(model, user_split, loop, cb), loop,
                  {"data.n_genres": model.n_genres, "data.n_year_buckets": n_buckets,
                   **split_params(split_report)}, validation)


ranking_model_assets = [autoencoder_model, multvae_model, ease_model, gru4rec_model,
                        sasrec_model, cooccurrence_model, two_tower_model]
