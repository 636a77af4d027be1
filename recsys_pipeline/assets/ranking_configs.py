"""Run configs of the ranking-model assets (``assets.train_ranking``) and their presets.

Each ``*ModelConfig`` is a Dagster ``Config`` whose defaults are demo-sized and whose
``to_core()`` builds the core model's frozen config; ``RANKING_PRESETS`` holds the "demo" and
"full" run configs.
"""

import dagster as dg

from recsys_pipeline.models.autoencoder import AutoEncoderConfig
from recsys_pipeline.models.cooccurrence import CooccurrenceConfig
from recsys_pipeline.models.ease import EASEConfig
from recsys_pipeline.models.gru4rec import GRU4RecConfig
from recsys_pipeline.models.multvae import MultVAEConfig
from recsys_pipeline.models.sasrec import SASRecConfig
from recsys_pipeline.models.two_tower import TwoTowerConfig
from recsys_pipeline.training.ranking_loop import RankingTrainConfig


class _RankingLoopConfig(dg.Config):
    """Options of the ranking loop (early stop on the validation NDCG@10)."""

    epochs: int = 20  # most passes over the training data
    batch_size: int = 64  # user rows / sequences / pairs per gradient step
    lr: float = 1e-3  # Adam learning rate
    weight_decay: float = 0.0  # Adam weight decay
    patience: int | None = 3  # stop after this many validations without a better NDCG@10
    eval_every: int = 1  # validate every this many epochs
    seed: int = 0  # seeds the weights, shuffles and dropout
    # save a checkpoint after every epoch (data_lake/checkpoints/); a run that died resumes
    # from it when re-executed with the same config and data; removed once training ends
    checkpoint: bool = False

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
    float64: bool = True  # solve in float64; false needs a third of the memory (big catalogues)

    def to_core(self) -> EASEConfig:
        return EASEConfig(l2=self.l2, float64=self.float64)


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
    loss: str = "ce"  # "ce" (full softmax) or "sampled" (popularity-sampled: big catalogues)
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
    dim: int = 128  # model width (128 over 64: higher validation NDCG@10, bench/README.md)
    n_blocks: int = 2  # Transformer blocks
    dropout: float = 0.4  # dropout in the blocks
    loss: str = "ce"  # "ce" (full softmax) or "sampled" (popularity-sampled: big catalogues)
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

    epochs: int = 10  # most passes over the positive pairs
    batch_size: int = 1024  # pairs per step (the in-batch negatives)
    lr: float = 5e-3  # Adam learning rate
    dim: int = 64  # tower output width
    temperature: float = 0.2  # logit temperature (0.2 over 0.1: bench/README.md, top-K)
    # user tower: user id plus the mean embedding of the user's last n_recent train-split
    # items by time (0: user id only)
    n_recent: int = 0
    tower_hidden: int = 0  # width of a ReLU layer on top of each tower (0: none)
    logq_correction: bool = True  # subtract log q (item share of training pairs) in training
    use_genres: bool = True  # item tower: genre multi-hot (false: no genre feature)
    year_bucket_width: int = 10  # release-year buckets of this many years (0: no year feature)

    def to_core(self) -> TwoTowerConfig:
        if self.year_bucket_width < 0:
            raise ValueError(f"two_tower_model: year_bucket_width={self.year_bucket_width} "
                             "must be >= 0 (0: no year feature)")
        return TwoTowerConfig(dim=self.dim, n_recent=self.n_recent,
                              tower_hidden=self.tower_hidden, temperature=self.temperature,
                              logq_correction=self.logq_correction, seed=self.seed)


# Run configs (``define_asset_job(..., config=RANKING_PRESETS["full"])``, or merged into
# ``TRAIN_PRESETS["full"]["ops"]``; the same dict as YAML under ``ops:``). The Config defaults
# above are the "demo" preset. "full" holds the settings bench/ranking_bench.py chose on the
# validation users / validation targets of ml-latest-small (bench/README.md, ranking section);
# fold-in early stopping needs longer patience there, validating every second epoch. The
# sequence models' lr and batch size were chosen on the assets' own validation targets (the
# session rows hold each user's last 50 items only, so an epoch is a few dozen steps); their
# loss is the full softmax, which scored higher on validation in the bench (2026-11-24).
# bench/ranking_scale_bench.py's ``full_preset`` repeats the trained models' shapes without
# dagster; recsys_pipeline_tests/test_bench_scripts.py fails when the two disagree.
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
            "dropout": 0.4, "loss": "ce"}},
        "models__sasrec_model": {"config": {
            **_NEXT_LONGER, "batch_size": 16, "lr": 3e-3, "max_len": 50, "dim": 128,
            "n_blocks": 2, "dropout": 0.4, "loss": "ce"}},
        "models__two_tower_model": {"config": {
            "epochs": 40, "patience": 5, "batch_size": 1024, "lr": 5e-3, "dim": 128,
            "temperature": 0.2}},
    }},
}
