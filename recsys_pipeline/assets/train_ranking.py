"""Train stage, ranking side: one asset per ranking model, one MLflow run each.

* fold-in models (``autoencoder_model``, ``multvae_model``, ``ease_model``): strong
  generalization on ``prepared/strong_generalization_matrix``, plus the per-user split
  (``prepared/user_item_matrix``) of the held-out test users;
* next-item models (``gru4rec_model``, ``sasrec_model``, ``cooccurrence_model``):
  ``prepared/session_sequences``;
* ``two_tower_model``: full-catalogue top-K on the rating splits with genre/year item features.

Protocols: ``training.ranking_experiment``. Models are stored by ``ranking_model_io_manager``
(``<lake>/models/<asset>/{config.json,state_dict.pt}``). Config defaults are demo-sized
(all seven together: about 30 s of training on ml-latest-small on a 2-core CPU).
"""

from typing import Any

import dagster as dg

from recsys_pipeline import schema
from recsys_pipeline.assets.prepare import PREFIX as PREPARED
from recsys_pipeline.assets.prepare import split_key
from recsys_pipeline.assets.ranking_data import ITEMS_KEY, MATRIX_KEY
from recsys_pipeline.assets.train import GROUP, KINDS, PREFIX, split_params
from recsys_pipeline.data.item_features import item_side_features
from recsys_pipeline.data.lake import file_sha256
from recsys_pipeline.metadata import markdown_table
from recsys_pipeline.model_io import DeviceResource
from recsys_pipeline.models.autoencoder import AutoEncoderConfig, AutoEncoderModel
from recsys_pipeline.models.cooccurrence import CooccurrenceConfig, CooccurrenceModel
from recsys_pipeline.models.deepfm import year_buckets
from recsys_pipeline.models.ease import EASEConfig, EASEModel
from recsys_pipeline.models.gru4rec import GRU4RecConfig, GRU4RecModel
from recsys_pipeline.models.multvae import MultVAEConfig, MultVAEModel
from recsys_pipeline.models.sasrec import SASRecConfig, SASRecModel
from recsys_pipeline.models.two_tower import TwoTowerConfig, TwoTowerModel
from recsys_pipeline.resources import LakeResource
from recsys_pipeline.tracking import TAG_ASSET, TAG_DAGSTER_RUN, TAG_FAMILY, MlflowResource
from recsys_pipeline.tracking_ranking import (
    TAG_PROTOCOL,
    TAG_RANKING_TRAIN_SHA,
    TAG_RANKING_VALID_SHA,
    TrackedRanking,
    train_and_track_ranking,
)
from recsys_pipeline.tracking_rescore import NextItemValidation, TopKValidation
from recsys_pipeline.training.ranking_experiment import run_fold_in, run_next_item, run_topk
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
            "split_report": dg.AssetIn(key=split_key("report"))}
TOPK_INS = {"user_split": dg.AssetIn(key=[PREPARED, "user_item_matrix"]),
            "item_map": dg.AssetIn(key=[PREPARED, "item_map"]),
            "movies": dg.AssetIn(key=["clean", "movies"]),
            "split_report": dg.AssetIn(key=split_key("report"))}
SHOWN = ("recall@20", "ndcg@10", "ndcg@100", "hr@10", "mrr@10", "recall@10")


class _RankingLoopConfig(dg.Config):
    """Options of the ranking loop (early stop on the validation NDCG@10)."""

    epochs: int = 20  # most passes over the training data
    batch_size: int = 64  # user rows / sequences / pairs per gradient step
    lr: float = 1e-3  # Adam learning rate
    weight_decay: float = 0.0  # Adam weight decay
    patience: int | None = 3  # stop after this many validations without a better NDCG@10
    eval_every: int = 1  # validate every this many epochs
    seed: int = 0  # seeds the weights, shuffles and dropout

    def loop(self, device: str, grad_clip: float | None = None) -> RankingTrainConfig:
        return RankingTrainConfig(epochs=self.epochs, batch_size=self.batch_size, lr=self.lr,
                                  weight_decay=self.weight_decay, patience=self.patience,
                                  eval_every=self.eval_every, monitor="valid_ndcg@10",
                                  seed=self.seed, device=device, grad_clip=grad_clip)


class AutoEncoderModelConfig(_RankingLoopConfig):
    """DeepRec-style autoencoder on binary rows (implicit mode: unobserved entries weighted)."""

    epochs: int = 5  # most passes over the training rows
    hidden: list[int] = [256, 64]  # encoder widths; the last is the code
    dropout: float = 0.5  # dropout on the code
    unobserved_weight: float = 0.1  # weight of unobserved entries as zero targets
    constrained: bool = False  # tie the decoder weights to the encoder's (transposed)
    refeed: bool = False  # dense re-feeding: also fit f(f(x)) to f(x)

    def to_core(self) -> AutoEncoderConfig:
        return AutoEncoderConfig(hidden=tuple(self.hidden), dropout=self.dropout,
                                 unobserved_weight=self.unobserved_weight,
                                 constrained=self.constrained, refeed=self.refeed, clamp=False,
                                 seed=self.seed)


class MultVAEModelConfig(_RankingLoopConfig):
    """Mult-VAE (Liang et al. 2018): multinomial likelihood, annealed KL."""

    epochs: int = 6  # most passes over the training rows
    lr: float = 3e-3  # Adam learning rate
    hidden: list[int] = [600]  # encoder hidden widths
    latent: int = 200  # latent dimension
    anneal_cap: float = 0.2  # largest KL weight β
    total_anneal_steps: int = 500  # steps for β to reach the cap
    dropout: float = 0.5  # dropout on the normalised input
    variational: bool = True  # False: Mult-DAE (no sampling, no KL term)

    def to_core(self) -> MultVAEConfig:
        return MultVAEConfig(hidden=tuple(self.hidden), latent=self.latent,
                             dropout=self.dropout, anneal_cap=self.anneal_cap,
                             total_anneal_steps=self.total_anneal_steps, seed=self.seed,
                             variational=self.variational)


class EASEModelConfig(dg.Config):
    """EASE (Steck 2019), closed form."""

    l2: float = 200.0  # λ of ‖X − XB‖² + λ‖B‖²

    def to_core(self) -> EASEConfig:
        return EASEConfig(l2=self.l2)


class GRU4RecModelConfig(_RankingLoopConfig):
    """GRU4Rec: a GRU over the item sequence, softmax next-item loss (sampled or full)."""

    epochs: int = 20  # most passes over the sequences
    batch_size: int = 16  # sequences per step (600 short rows: 64 gave too few steps)
    lr: float = 1e-2  # Adam learning rate
    patience: int | None = 5  # stop after this many validations without a better NDCG@10
    embedding_dim: int = 64  # item embedding width
    hidden: int = 100  # GRU width
    tied: bool = False  # input embeddings = output embeddings (needs embedding_dim = hidden)
    dropout: float = 0.2  # dropout on embeddings and outputs
    loss: str = "sampled"  # "sampled" (popularity-sampled softmax, fast) or "ce" (full)
    n_negatives: int = 256  # shared negatives per batch for "sampled"

    def to_core(self) -> GRU4RecConfig:
        return GRU4RecConfig(embedding_dim=self.embedding_dim, hidden=self.hidden,
                             tied=self.tied, dropout=self.dropout, loss=self.loss,
                             n_negatives=self.n_negatives, seed=self.seed)


class SASRecModelConfig(_RankingLoopConfig):
    """SASRec: causal pre-norm Transformer over the last ``max_len`` items."""

    epochs: int = 20  # most passes over the sequences
    batch_size: int = 16  # sequences per step (600 short rows: 64 gave too few steps)
    lr: float = 3e-3  # Adam learning rate
    patience: int | None = 5  # stop after this many validations without a better NDCG@10
    max_len: int = 50  # positions the model attends over
    dim: int = 64  # model width
    n_blocks: int = 2  # Transformer blocks
    dropout: float = 0.2  # dropout in the blocks
    loss: str = "sampled"  # "sampled" (popularity-sampled softmax, fast) or "ce" (full)
    n_negatives: int = 256  # shared negatives per batch for "sampled"

    def to_core(self) -> SASRecConfig:
        return SASRecConfig(max_len=self.max_len, dim=self.dim, n_blocks=self.n_blocks,
                            dropout=self.dropout, loss=self.loss,
                            n_negatives=self.n_negatives, seed=self.seed)


class CooccurrenceModelConfig(dg.Config):
    """Last-item co-occurrence counts (a next-item baseline), counted in one pass."""

    window: int = 1  # count pairs at most this many steps apart
    popularity_backoff: bool = True  # break ties (and empty rows) by popularity

    def to_core(self) -> CooccurrenceConfig:
        return CooccurrenceConfig(window=self.window, popularity_backoff=self.popularity_backoff)


class TwoTowerModelConfig(_RankingLoopConfig):
    """Two-tower retrieval, in-batch softmax with log-Q correction, genre + year item tower."""

    epochs: int = 3  # most passes over the positive pairs
    batch_size: int = 1024  # pairs per step (the in-batch negatives)
    lr: float = 5e-3  # Adam learning rate
    dim: int = 64  # tower output width
    temperature: float = 0.1  # logit temperature
    year_bucket_width: int = 10  # release-year buckets of this many years

    def to_core(self) -> TwoTowerConfig:
        return TwoTowerConfig(dim=self.dim, temperature=self.temperature, seed=self.seed)


def _tags(context: dg.AssetExecutionContext, lake: LakeResource, family: str,
          protocol: str) -> dict[str, str]:
    return {TAG_DAGSTER_RUN: context.run_id, TAG_ASSET: context.asset_key.to_user_string(),
            TAG_FAMILY: family, TAG_PROTOCOL: protocol,
            TAG_RANKING_TRAIN_SHA: file_sha256(lake.path(*ENCODED_FILE)),
            TAG_RANKING_VALID_SHA: file_sha256(lake.path(*VALID_FILES[protocol]))}


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
    model = AutoEncoderModel(*strong.binary["train"].shape, config.to_core())
    loop = config.loop(device.device)
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
    loop = config.loop(device.device)
    return _track(context, mlflow, lake, model, STRONG, lambda cb: run_fold_in(
        model, strong, _item_idx(columns), loop, cb, user_split), loop, _strong_params(columns),
        strong.fold_in_pair("valid"))


@dg.asset(key_prefix=PREFIX, group_name=GROUP, io_manager_key=MODEL_IO, ins=STRONG_INS,
          kinds=KINDS)
def ease_model(context: dg.AssetExecutionContext, config: EASEModelConfig,
               mlflow: MlflowResource, lake: LakeResource, device: DeviceResource,
               strong: Any, columns: Any, user_split: Any) -> EASEModel:
    """EASE item-item model in closed form, scored by folding in held-out users, logged to
    MLflow."""
    def fit(_on_epoch: Any) -> Any:
        model = EASEModel.fit(strong.binary["train"], config.to_core(), device=device.device)
        return run_fold_in(model, strong, _item_idx(columns), None, None, user_split)

    return _track(context, mlflow, lake, EASEModel(1, 1, config.to_core()), STRONG, fit, None,
                  _strong_params(columns), strong.fold_in_pair("valid"))


def _split_method(split_report: dict[str, Any]) -> str:
    return str(split_report.get("config", {}).get("method", "unknown"))


def _track_next(context: dg.AssetExecutionContext, mlflow: MlflowResource,
                lake: LakeResource, model: Any, sessions: Any, item_map: Any,
                split_report: dict[str, Any], loop: RankingTrainConfig | None,
                fit: Any = None) -> Any:
    """``_track`` for a next-item model: ``run_next_item`` (or ``fit``), the split's params,
    and the validation sequences with their tokens' original item ids for the gate."""
    item_ids = item_map.sort_by(schema.ITEM_IDX).column(schema.ITEM_ID).to_numpy()
    validation = NextItemValidation(sessions.valid.tokens, sessions.valid.targets,
                                    item_ids[sessions.vocab], _split_method(split_report))
    return _track(context, mlflow, lake, model, NEXT,
                  fit or (lambda cb: run_next_item(model, sessions, loop, cb)), loop,
                  split_params(split_report), validation)


@dg.asset(key_prefix=PREFIX, group_name=GROUP, io_manager_key=MODEL_IO, ins=NEXT_INS,
          kinds=KINDS)
def gru4rec_model(context: dg.AssetExecutionContext, config: GRU4RecModelConfig,
                  mlflow: MlflowResource, lake: LakeResource, device: DeviceResource,
                  sessions: Any, item_map: Any, split_report: Any) -> GRU4RecModel:
    """GRU4Rec next-item model on the users' chronological sequences, logged to MLflow."""
    model = GRU4RecModel(int(sessions.vocab.size), config.to_core())
    return _track_next(context, mlflow, lake, model, sessions, item_map, split_report,
                       config.loop(device.device, grad_clip=5.0))


@dg.asset(key_prefix=PREFIX, group_name=GROUP, io_manager_key=MODEL_IO, ins=NEXT_INS,
          kinds=KINDS)
def sasrec_model(context: dg.AssetExecutionContext, config: SASRecModelConfig,
                 mlflow: MlflowResource, lake: LakeResource, device: DeviceResource,
                 sessions: Any, item_map: Any, split_report: Any) -> SASRecModel:
    """SASRec next-item Transformer on the users' chronological sequences, logged to MLflow."""
    model = SASRecModel(int(sessions.vocab.size), config.to_core())
    return _track_next(context, mlflow, lake, model, sessions, item_map, split_report,
                       config.loop(device.device, grad_clip=5.0))


@dg.asset(key_prefix=PREFIX, group_name=GROUP, io_manager_key=MODEL_IO, ins=NEXT_INS,
          kinds=KINDS)
def cooccurrence_model(context: dg.AssetExecutionContext, config: CooccurrenceModelConfig,
                       mlflow: MlflowResource, lake: LakeResource, sessions: Any,
                       item_map: Any, split_report: Any) -> CooccurrenceModel:
    """Last-item co-occurrence next-item baseline (counted, not trained), logged to MLflow."""
    def fit(_on_epoch: Any) -> Any:
        model = CooccurrenceModel.fit(sessions.train.tokens, int(sessions.vocab.size),
                                      config.to_core())
        return run_next_item(model, sessions, None)

    return _track_next(context, mlflow, lake, CooccurrenceModel(1, config.to_core()),
                       sessions, item_map, split_report, None, fit)


@dg.asset(key_prefix=PREFIX, group_name=GROUP, io_manager_key=MODEL_IO, ins=TOPK_INS,
          kinds=KINDS)
def two_tower_model(context: dg.AssetExecutionContext, config: TwoTowerModelConfig,
                    mlflow: MlflowResource, lake: LakeResource, device: DeviceResource,
                    user_split: Any, item_map: Any, movies: Any,
                    split_report: dict[str, Any]) -> TwoTowerModel:
    """Two-tower retrieval (id + genres + year item tower), full-catalogue top-K on the
    per-user split, logged to MLflow."""
    side = item_side_features(item_map, movies)
    buckets, n_buckets = year_buckets(side.years, config.year_bucket_width)
    model = TwoTowerModel(*user_split.explicit["train"].shape, config.to_core(),
                          n_genres=side.genres.shape[1], n_year_buckets=n_buckets)
    model.set_item_features(side.genres if side.genres.shape[1] else None, buckets)
    loop = config.loop(device.device)
    validation = TopKValidation(user_split.explicit["train"], user_split.explicit["valid"],
                                _split_method(split_report))
    return _track(context, mlflow, lake, model, TOPK,
                  lambda cb: run_topk(model, user_split, loop, cb), loop,
                  {"data.n_genres": side.genres.shape[1], "data.n_year_buckets": n_buckets,
                   **split_params(split_report)}, validation)


ranking_model_assets = [autoencoder_model, multvae_model, ease_model, gru4rec_model,
                        sasrec_model, cooccurrence_model, two_tower_model]


# Run configs (``define_asset_job(..., config=RANKING_PRESETS["full"])``, or merged into
# ``TRAIN_PRESETS["full"]["ops"]``; the same dict as YAML under ``ops:``). The Config defaults
# above are the "demo" preset. "full" holds the settings bench/ranking_bench.py chose on the
# validation users / validation targets of ml-latest-small (bench/README.md, ranking section);
# fold-in early stopping needs longer patience there, validating every second epoch. The
# sequence models' lr and batch size were chosen on the assets' own validation targets (the
# session rows hold each user's last 50 items only, so an epoch is a few dozen steps).
_FOLD_IN_LONGER = {"epochs": 400, "patience": 20, "eval_every": 2}
_NEXT_LONGER = {"epochs": 60, "patience": 8}
RANKING_PRESETS: dict[str, dict] = {
    "demo": {"ops": {}},
    "full": {"ops": {
        "models__autoencoder_model": {"config": {
            **_FOLD_IN_LONGER, "batch_size": 128, "hidden": [512, 128], "dropout": 0.5,
            "unobserved_weight": 0.2, "constrained": True, "refeed": True}},
        "models__multvae_model": {"config": {
            **_FOLD_IN_LONGER, "batch_size": 64, "lr": 1e-3, "hidden": [], "latent": 200,
            "anneal_cap": 0.2, "total_anneal_steps": 2000}},
        "models__ease_model": {"config": {"l2": 200.0}},
        "models__gru4rec_model": {"config": {
            **_NEXT_LONGER, "batch_size": 64, "lr": 1e-2, "embedding_dim": 64, "hidden": 128,
            "dropout": 0.4, "loss": "sampled", "n_negatives": 512}},
        "models__sasrec_model": {"config": {
            **_NEXT_LONGER, "batch_size": 16, "lr": 3e-3, "max_len": 50, "dim": 64,
            "n_blocks": 2, "dropout": 0.2, "loss": "sampled", "n_negatives": 512}},
    }},
}
