"""Ranking models at ml-25m scale: build, fit and evaluate each one; time and peak memory.

Input: the synthetic ml-25m-shaped ratings of ``bench/prepare_bench.py`` (25,000,000 rows,
generated once and cached), or ``--movielens path/to/ratings.csv`` (a real release). The data
is built as the assets build it, with their default settings: the strong-generalization
matrices (ratings >= 4, items with >= 5 users, 100 + 100 held-out users), the
``user_temporal`` split (cold-start rows dropped), its per-user matrices and the session
sequences (each user's last 50 items).

Per model (the shapes of ``RANKING_PRESETS["full"]``, core configs; two-tower without item
features, the synthetic data has no movies table):

* EASE and co-occurrence: the closed-form fit;
* Mult-VAE, the autoencoder, GRU4Rec, SASRec, two-tower: ``--steps`` optimizer steps of the
  ranking loop (second of two epochs over that many batches, so start-up is not counted) →
  samples/s and the epoch time it implies; ``--full-epoch`` trains one real epoch instead;
* every model: one pass of its validation (the cost the ranking loop pays per validated
  epoch); EASE also scores ``--score-users`` users over the whole catalogue (serving's
  work), with its sparse-row product and with the dense one.

Peak memory is per step: process RSS (``VmHWM``, reset before each step) on CPU, torch's peak
allocation on CUDA. Usage::

    .venv/bin/python bench/ranking_scale_bench.py                     # CPU, 2 threads
    .venv/bin/python bench/ranking_scale_bench.py --device cuda --full-epoch

Nothing else changes on a GPU.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import scipy.sparse as sp
import torch
from prepare_bench import cached_synthetic, read_movielens_csv

from recsys_pipeline.data.encode import encode_ids
from recsys_pipeline.data.sessions import SessionConfig, build_sessions
from recsys_pipeline.data.sparse import SparseConfig, build_matrices
from recsys_pipeline.data.split import SplitConfig, split_ratings
from recsys_pipeline.evaluation.nextitem import evaluate_next_item
from recsys_pipeline.evaluation.strong import evaluate_fold_in
from recsys_pipeline.evaluation.topk import evaluate_topk
from recsys_pipeline.models import ease as ease_module
from recsys_pipeline.models.autoencoder import AutoEncoderConfig, AutoEncoderModel
from recsys_pipeline.models.cooccurrence import CooccurrenceModel
from recsys_pipeline.models.ease import EASEConfig, EASEModel
from recsys_pipeline.models.gru4rec import GRU4RecConfig, GRU4RecModel
from recsys_pipeline.models.multvae import MultVAEConfig, MultVAEModel
from recsys_pipeline.models.sasrec import SASRecConfig, SASRecModel
from recsys_pipeline.models.two_tower import TwoTowerConfig, TwoTowerModel
from recsys_pipeline.training.data import RatingData
from recsys_pipeline.training.device import cpu_name, pick_device, synchronize
from recsys_pipeline.training.ranking_data import (
    CSRTensors,
    TensorBatches,
    pairs_from_csr,
    training_sequences,
)
from recsys_pipeline.training.ranking_experiment import (
    StrongGenSpec,
    strong_generalization_data,
)
from recsys_pipeline.training.ranking_loop import RankingTrainConfig, fit_ranking

KS_STRONG, KS_NEXT, KS_TOPK = (20, 50, 100), (1, 5, 10, 20), (10, 20)


@dataclass
class Row:
    step: str
    seconds: float
    peak_gib: float
    detail: str = ""
    samples_per_s: float | None = None
    epoch_seconds: float | None = None  # measured (--full-epoch) or samples / samples_per_s


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    else:
        Path("/proc/self/clear_refs").write_text("5")  # VmHWM := current RSS (Linux)


def peak_gib(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 2**20
    return float("nan")


def measure(rows: list[Row], step: str, fn: Callable[[], Any], device: torch.device,
            detail: str = "") -> Any:
    reset_peak(device)
    synchronize(device)
    t0 = time.perf_counter()
    out = fn()
    synchronize(device)
    row = Row(step, time.perf_counter() - t0, peak_gib(device), detail)
    rows.append(row)
    print(f"  {step:<34} {row.seconds:8.1f} s  peak {row.peak_gib:6.2f} GiB  {detail}",
          flush=True)
    return out


def train_speed(rows: list[Row], name: str, model: torch.nn.Module, data: Any,
                subset: Callable[[int], Any], batch_size: int, lr: float,
                args: argparse.Namespace, device: torch.device) -> None:
    """Samples/s of the ranking loop on ``model`` (see the module docstring)."""
    n = len(data)
    if args.full_epoch:
        config = RankingTrainConfig(epochs=1, batch_size=batch_size, lr=lr, patience=None,
                                    monitor="train_loss", mode="min", device=str(device),
                                    restore_best=False, grad_clip=5.0)
        result = measure(rows, f"{name}: one epoch", lambda: fit_ranking(
            model, data, None, config), device, f"{n:,} samples, batch {batch_size}")
    else:
        part = subset(min(n, args.steps * batch_size))
        config = RankingTrainConfig(epochs=2, batch_size=batch_size, lr=lr, patience=None,
                                    monitor="train_loss", mode="min", device=str(device),
                                    restore_best=False, grad_clip=5.0)
        result = measure(rows, f"{name}: 2 × {args.steps} steps", lambda: fit_ranking(
            model, part, None, config), device, f"batch {batch_size}")
    last = result.history[-1]
    rows[-1].samples_per_s = last["samples_per_s"]
    rows[-1].epoch_seconds = last["epoch_train_seconds"] if args.full_epoch else n / last[
        "samples_per_s"]
    print(f"  {'':<34} {last['samples_per_s']:10,.0f} samples/s, epoch of {n:,}: "
          f"{rows[-1].epoch_seconds:,.0f} s{'' if args.full_epoch else ' (implied)'}",
          flush=True)


def csr_rows(matrix: sp.csr_matrix) -> Callable[[int], CSRTensors]:
    """The first ``k`` non-empty rows, in the full row space (the model's history shape)."""
    def subset(k: int) -> CSRTensors:
        keep = np.zeros(matrix.shape[0], np.float32)
        keep[np.flatnonzero(matrix.getnnz(1) > 0)[:k]] = 1.0
        return CSRTensors.from_scipy(sp.csr_matrix(sp.diags(keep) @ matrix)).nonempty()
    return subset


def first(batches: TensorBatches) -> Callable[[int], TensorBatches]:
    return lambda k: TensorBatches(*batches.batch(torch.arange(k)))


def run(args: argparse.Namespace, device: torch.device) -> list[Row]:
    rows: list[Row] = []
    if args.movielens:
        ratings = measure(rows, "read ratings.csv", lambda: read_movielens_csv(args.movielens),
                          device)
    else:
        path = cached_synthetic(args.rows, 0)
        ratings = measure(rows, "read synthetic Parquet", lambda: pq.read_table(path), device)
    encoded, maps = measure(rows, "encode ids", lambda: encode_ids(ratings), device)
    strong = measure(rows, "strong-generalization matrices", lambda: strong_generalization_data(
        encoded, maps.n_users, StrongGenSpec()), device)
    splits = measure(rows, "user_temporal split", lambda: split_ratings(
        encoded, SplitConfig("user_temporal", drop_cold_start=True)), device)
    per_user = measure(rows, "per-user matrices", lambda: build_matrices(
        splits, maps.n_users, maps.n_items, SparseConfig()), device)
    sessions = measure(rows, "session sequences (50 items)", lambda: build_sessions(
        splits, maps.n_users, maps.n_items, SessionConfig(max_len=50)), device)
    n_columns, n_vocab = strong.columns.size, sessions.vocab.size
    print(f"{maps.n_users:,} users, {maps.n_items:,} items; strong generalization "
          f"{strong.report['rows_train']:,} train positives over {n_columns:,} items; "
          f"{sessions.train.tokens.shape[0]:,} sequences, vocabulary {n_vocab:,}", flush=True)

    if args.only in (None, "strong"):
        fold_in_models(rows, strong, args, device)
    if args.only in (None, "next"):
        next_item_models(rows, sessions, args, device)
    if args.only in (None, "topk"):
        two_tower(rows, per_user, args, device)
    return rows


# The full preset's settings (``RANKING_PRESETS["full"]`` in ``assets.ranking_configs``),
# written out because that module needs dagster, which the GPU machine lacks;
# recsys_pipeline_tests/test_bench_scripts.py checks that the two agree.
FULL_EASE_L2 = 200.0


def full_preset(loss: str = "ce") -> dict[str, tuple[Any, int, float]]:
    """Core config, batch size and learning rate of each trained model (``loss``: the
    sequence models' softmax, ``--loss``)."""
    return {
        "Mult-VAE": (MultVAEConfig(hidden=(), latent=200, total_anneal_steps=2000), 64, 1e-3),
        "autoencoder": (AutoEncoderConfig(hidden=(512, 128), dropout=0.5, unobserved_weight=0.2,
                                          constrained=True, refeed=True, clamp=False),
                        128, 1e-3),
        "GRU4Rec": (GRU4RecConfig(embedding_dim=64, hidden=128, dropout=0.4, loss=loss),
                    64, 1e-2),
        "SASRec": (SASRecConfig(max_len=50, dim=128, n_blocks=2, dropout=0.4, loss=loss),
                   16, 3e-3),
        "two-tower": (TwoTowerConfig(dim=128, temperature=0.2), 1024, 5e-3),
    }


def fold_in_models(rows: list[Row], strong: Any, args: argparse.Namespace,
                   device: torch.device) -> None:
    mats, n_columns = strong.matrices, strong.columns.size
    vf, vh = mats.fold_in_pair("valid")
    train_rows = mats.binary["train"]
    n_users = train_rows.shape[0]
    train_csr = CSRTensors.from_scipy(train_rows).nonempty()

    def fold_in_eval(model: torch.nn.Module, name: str) -> None:
        measure(rows, f"{name}: validation", lambda: evaluate_fold_in(
            model, vf, vh, KS_STRONG), device, f"{vf.getnnz(1).astype(bool).sum()} users")

    float64 = not args.ease_float32
    ease = measure(rows, f"EASE: fit (float{64 if float64 else 32})", lambda: EASEModel.fit(
        train_rows, EASEConfig(l2=FULL_EASE_L2, float64=float64), device=device), device,
        f"{n_columns:,}² solve")
    fold_in_eval(ease, "EASE")
    users = torch.arange(min(args.score_users, n_users))
    measure(rows, f"EASE: score {users.numel():,} users", lambda: ease.score_all(users), device,
            "sparse rows" if device.type == "cpu" else "dense product")
    if device.type == "cpu":  # the dense product it replaces there, for comparison
        sparse_scoring, ease_module.SPARSE_SCORING = ease_module.SPARSE_SCORING, 0.0
        measure(rows, f"EASE: score {users.numel():,} users", lambda: ease.score_all(users),
                device, "dense product")
        ease_module.SPARSE_SCORING = sparse_scoring
    ease = None  # free the n_items² matrix before the next models
    for name, cls in (("Mult-VAE", MultVAEModel), ("autoencoder", AutoEncoderModel)):
        config, batch, lr = full_preset(args.loss)[name]
        model = cls(n_users, n_columns, config)
        train_speed(rows, name, model, train_csr, csr_rows(train_rows), batch, lr, args,
                    device)
        fold_in_eval(model, name)
        del model


def next_item_models(rows: list[Row], sessions: Any, args: argparse.Namespace,
                     device: torch.device) -> None:
    valid, n_vocab = sessions.valid, sessions.vocab.size
    sequences = training_sequences(sessions.train)

    def next_eval(model: torch.nn.Module, name: str) -> None:
        measure(rows, f"{name}: validation", lambda: evaluate_next_item(
            model, valid.tokens, valid.targets, KS_NEXT), device, f"{len(valid.targets):,} "
            "users")

    co = measure(rows, "co-occurrence: fit", lambda: CooccurrenceModel.fit(
        sessions.train.tokens, n_vocab), device)
    next_eval(co, "co-occurrence")
    del co
    for name, cls in (("GRU4Rec", GRU4RecModel), ("SASRec", SASRecModel)):
        config, batch, lr = full_preset(args.loss)[name]
        model = cls(n_vocab, config)
        train_speed(rows, name, model, sequences, first(sequences), batch, lr, args, device)
        next_eval(model, name)
        del model


def two_tower(rows: list[Row], per_user: Any, args: argparse.Namespace,
              device: torch.device) -> None:
    train = per_user.explicit["train"]
    pairs = pairs_from_csr(sp.csr_matrix((train >= 4.0).astype(np.float32)))
    # ordered by user: the steps' subset is a random sample, as in an epoch
    pairs = TensorBatches(*pairs.batch(torch.randperm(len(pairs),
                                                      generator=torch.Generator().manual_seed(0))))
    config, batch, lr = full_preset()["two-tower"]
    tower = TwoTowerModel(*train.shape, config)
    train_speed(rows, "two-tower", tower, pairs, first(pairs), batch, lr, args, device)
    exclude, valid_pairs = RatingData.from_csr(train), RatingData.from_csr(
        per_user.explicit["valid"])

    def topk() -> dict[str, float]:
        with torch.no_grad():
            return evaluate_topk(tower, valid_pairs, exclude, KS_TOPK, relevance_threshold=4.0)

    measure(rows, "two-tower: validation", topk, device,
            f"{np.unique(valid_pairs.users.numpy()).size:,} users")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=25_000_000, help="synthetic rows")
    parser.add_argument("--movielens", type=Path, help="a real ratings.csv instead")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--threads", type=int, default=2, help="CPU torch threads")
    parser.add_argument("--steps", type=int, default=20, help="timed steps per model")
    parser.add_argument("--full-epoch", action="store_true",
                        help="train one real epoch per model instead of --steps steps")
    parser.add_argument("--loss", choices=("ce", "sampled"), default="ce",
                        help="GRU4Rec / SASRec loss (the full softmax is the default)")
    parser.add_argument("--score-users", type=int, default=2048,
                        help="EASE: users scored over the whole catalogue (sparse vs dense)")
    parser.add_argument("--ease-float32", action="store_true",
                        help="solve EASE in float32 (the asset's float64: false)")
    parser.add_argument("--only", choices=("strong", "next", "topk"),
                        help="one protocol's models (the data is built in full all the same)")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args()
    device = pick_device(args.device)
    torch.set_num_threads(args.threads)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name()
    print(f"device {device} ({name}), torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads", flush=True)
    t0 = time.perf_counter()
    rows = run(args, device)
    total = time.perf_counter() - t0
    print(f"total {total:.0f} s")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"device": str(device), "name": name,
                                         "torch": torch.__version__, "total_seconds": total,
                                         "args": {k: str(v) for k, v in vars(args).items()},
                                         "rows": [asdict(r) for r in rows]}, indent=2))


if __name__ == "__main__":
    main()
