"""Training throughput: biased MF on 25M synthetic ratings, and every rating model on one device.

Default mode: our ``MFModel`` trained by ``training.loop.fit`` (the code the pipeline runs) for
``--epochs`` epochs over ``--rows`` synthetic ratings (default 25,000,000 ratings, 162,541
users and 59,047 items: the size of ml-25m). The ratings are generated with numpy from a seeded
planted model (long-tailed user and item activity, ``μ + b_u + b_i + p_u·q_i + noise`` rounded
to half stars in [0.5, 5]) and moved to the device once, before timing, as ``fit`` expects.
The epoch time is ``fit``'s own: the shuffled pass over all rows, ending with a host sync
(``samples_per_s = rows / train seconds``); the per-epoch validation pass over ``--valid-rows``
rows is timed apart. A short untimed warm-up fit (two batches) comes first, so the figure
excludes one-off start-up cost (CUDA context, kernel loading). On CUDA, ``--amp auto`` also
runs the same epoch under bf16 autocast (``TrainConfig(amp=True)``); ``--amp all`` adds fp16
with a grad scaler. On the CPU the loop ignores AMP, so only fp32 runs.

``--all-models``: each of the six models of ``training.experiment.MODEL_CLASSES`` (bias and
popularity fitted in closed form, MF, MLP, NeuMF and DeepFM with synthetic genres and years for
one epoch of ``fit``) on a smaller synthetic set (``--rows`` defaults to 2,000,000 over 20,000
users and 10,000 items there). It reports the device every model's weights ended on, whether
``score`` and ``score_all`` ran there, samples/s and the valid RMSE after the epoch: the check
that every model trains on CUDA. (Popularity's "samples/s" is its counting pass.)

On a CPU the step time hardly depends on the batch: the models' ``nn.Embedding`` tables get
dense gradients, so every Adam step reads and writes all (162,541 + 59,047) × 65 MF parameters
and their moments. Larger batches therefore give more samples/s there (and fewer updates per
epoch). On a machine shared with other jobs, ``--threads 1`` avoids oversubscribed OpenMP
threads and can be much faster than the default.

Usage:  .venv/bin/python bench/mf_speed_bench.py [--rows 25000000] [--batch-size 65536]
            [--factors 64] [--epochs 1] [--device auto] [--amp auto|off|bf16|fp16|all]
            [--threads 0] [--json FILE]
        .venv/bin/python bench/mf_speed_bench.py --all-models [--rows 2000000] [--json FILE]
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import logging
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from course_setups import machine_line, markdown_table

from recsys_pipeline.evaluation.rating import predict, rmse
from recsys_pipeline.models.bias import BiasConfig
from recsys_pipeline.models.deepfm import DeepFMConfig
from recsys_pipeline.models.mf import MFConfig
from recsys_pipeline.models.mlp import MLPConfig
from recsys_pipeline.models.neumf import NeuMFConfig
from recsys_pipeline.models.popularity import PopularityConfig
from recsys_pipeline.training.data import RatingData
from recsys_pipeline.training.device import model_device, pick_device, synchronize
from recsys_pipeline.training.experiment import (
    MODEL_CLASSES,
    ItemFeatures,
    build_model,
)
from recsys_pipeline.training.loop import TrainConfig, fit

# ml-25m: 25,000,095 ratings by 162,541 users of 59,047 items
FULL_SIZE = (25_000_000, 162_541, 59_047)
SMALL_SIZE = (2_000_000, 20_000, 10_000)
CHUNK = 1 << 21  # rows per chunk when computing planted ratings (bounds temporary memory)


def synthetic_ratings(n_rows: int, n_users: int, n_items: int, seed: int,
                      rank: int = 8) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Seeded ratings ``clip(round2(μ + b_u + b_i + p_u·q_i + ε))`` on a long-tailed sample.

    Users and items are drawn with Zipf-like weights ``1 / rank^s`` (s = 0.5 for users, 0.9 for
    items) over a random order of ids, so activity is skewed as in MovieLens but popular ids
    are scattered through the embedding tables.

    Returns:
        ``(user_idx int32, item_idx int32, rating float32)``, each of length ``n_rows``.
    """
    rng = np.random.default_rng(seed)

    def draw(n: int, s: float) -> np.ndarray:
        weights = 1.0 / np.arange(1, n + 1) ** s
        ids = rng.choice(n, size=n_rows, p=weights / weights.sum())
        return rng.permutation(n).astype(np.int32)[ids]

    users, items = draw(n_users, 0.5), draw(n_items, 0.9)
    b_u = rng.normal(0, 0.4, n_users).astype(np.float32)
    b_i = rng.normal(0, 0.5, n_items).astype(np.float32)
    p = rng.normal(0, 0.35, (n_users, rank)).astype(np.float32)
    q = rng.normal(0, 0.35, (n_items, rank)).astype(np.float32)
    ratings = np.empty(n_rows, np.float32)
    for s in range(0, n_rows, CHUNK):
        u, i = users[s:s + CHUNK], items[s:s + CHUNK]
        raw = 3.5 + b_u[u] + b_i[i] + np.einsum("nk,nk->n", p[u], q[i])
        raw += rng.normal(0, 0.5, u.shape[0]).astype(np.float32)
        ratings[s:s + CHUNK] = np.clip(np.round(raw * 2) / 2, 0.5, 5.0)
    return users, items, ratings


def _rows(data: RatingData, start: int, stop: int) -> RatingData:
    """Rows ``[start, stop)`` as views (no copy)."""
    return RatingData(data.users[start:stop], data.items[start:stop], data.ratings[start:stop])


def make_data(n_rows: int, n_valid: int, n_users: int, n_items: int, seed: int,
              device: torch.device) -> tuple[RatingData, RatingData, dict[str, float]]:
    """Train and valid ``RatingData`` on ``device`` plus generation / transfer seconds."""
    t0 = time.perf_counter()
    users, items, ratings = synthetic_ratings(n_rows + n_valid, n_users, n_items, seed)
    t1 = time.perf_counter()
    data = RatingData.from_arrays(users, items, ratings, n_users=n_users, n_items=n_items,
                                  device=device)
    synchronize(device)
    t2 = time.perf_counter()
    prep = {"generate_s": t1 - t0, "to_device_s": t2 - t1}
    return _rows(data, 0, n_rows), _rows(data, n_rows, n_rows + n_valid), prep


def amp_variants(choice: str, device: torch.device) -> list[str | None]:
    """Precisions to time: None is fp32; AMP only where the loop applies it (CUDA)."""
    if device.type != "cuda" or choice == "off":
        return [None]
    return {"auto": [None, "bf16"], "all": [None, "bf16", "fp16"]}.get(choice, [choice])


def _peak_gib(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    return torch.cuda.max_memory_allocated(device) / 2**30


def _reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def time_fit(config: Any, train: RatingData, valid: RatingData, tc: TrainConfig,
             n_users: int, n_items: int, features: ItemFeatures | None = None) -> dict[str, Any]:
    """Warm up on two batches, then ``fit`` a fresh model; per-epoch figures from its history."""
    warm = _rows(train, 0, min(len(train), 2 * tc.batch_size))
    fit(build_model(config, n_users, n_items, features), warm, valid,
        dataclasses.replace(tc, epochs=1))
    _reset_peak(train.device)
    model = build_model(config, n_users, n_items, features)
    result = fit(model, train, valid, tc)
    last = result.history[-1]
    rows = [{"epoch": int(h["epoch"]), "train_s": len(train) / h["samples_per_s"],
             "samples_per_s": h["samples_per_s"], "valid_s": h["seconds"] - len(train)
             / h["samples_per_s"], "train_loss": h["train_loss"], "valid_rmse": h["valid_rmse"]}
            for h in result.history]
    return {"model": model, "device": str(model_device(model)), "epochs": rows,
            "epoch_s": rows[-1]["train_s"], "samples_per_s": last["samples_per_s"],
            "train_loss": last["train_loss"], "valid_rmse": last["valid_rmse"],
            "peak_gib": _peak_gib(train.device),
            "params": sum(p.numel() for p in model.parameters())}


def run_mf(args: argparse.Namespace, device: torch.device) -> list[dict[str, Any]]:
    """Default mode: biased MF over the big synthetic set, once per precision."""
    train, valid, prep = make_data(args.rows, args.valid_rows, args.users, args.items,
                                   args.seed, device)
    print(f"data: {len(train):,} train + {len(valid):,} valid ratings, {args.users:,} users, "
          f"{args.items:,} items (generated {prep['generate_s']:.1f} s, to {device} "
          f"{prep['to_device_s']:.1f} s)", flush=True)
    rows = []
    for amp in amp_variants(args.amp, device):
        tc = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                         patience=None, restore_best=False, amp=amp is not None,
                         amp_dtype=amp or "bf16", seed=args.seed, device=str(device))
        out = time_fit(MFConfig(n_factors=args.factors, seed=args.seed), train, valid, tc,
                       args.users, args.items)
        del out["model"]
        rows.append({"model": "MF", "precision": amp or "fp32", "rows": len(train),
                     "batch_size": args.batch_size, "factors": args.factors, **prep, **out})
        for e in out["epochs"]:
            print(f"[MF {amp or 'fp32'}] epoch {e['epoch']}: {e['train_s']:.1f} s, "
                  f"{e['samples_per_s']:,.0f} samples/s, train_loss {e['train_loss']:.4f}, "
                  f"valid RMSE {e['valid_rmse']:.4f}", flush=True)
    return rows


def synthetic_features(n_items: int, seed: int, n_genres: int = 20) -> ItemFeatures:
    """Seeded genre multi-hot (1-3 genres per item) and release years for DeepFM."""
    rng = np.random.default_rng([seed, 1])
    genres = (rng.random((n_items, n_genres)) < 2.0 / n_genres).astype(np.float32)
    years = rng.integers(1920, 2020, n_items).astype(np.float64)
    return ItemFeatures.from_arrays(genres, years)


ALL_MODELS: dict[str, Any] = {"bias": BiasConfig(), "popularity": PopularityConfig(),
                              "mf": MFConfig(), "mlp": MLPConfig(), "neumf": NeuMFConfig(),
                              "deepfm": DeepFMConfig()}


def _closed_form(config: Any, train: RatingData, valid: RatingData, n_users: int,
                 n_items: int) -> dict[str, Any]:
    """Fit bias / popularity on the device; its one "epoch" is the closed-form fit."""
    cls = MODEL_CLASSES[type(config)]
    synchronize(train.device)
    _reset_peak(train.device)
    t0 = time.perf_counter()
    model = cls.fit(train, n_users, n_items, config)
    synchronize(train.device)
    seconds = time.perf_counter() - t0
    valid_rmse = (rmse(predict(model, valid), valid.ratings) if model.predicts_ratings
                  else math.nan)
    return {"model": model, "device": str(model_device(model)), "epoch_s": seconds,
            "samples_per_s": len(train) / seconds, "train_loss": math.nan,
            "valid_rmse": valid_rmse, "peak_gib": _peak_gib(train.device),
            "params": sum(b.numel() for b in model.buffers())}


def _runs_on_device(model: Any, valid: RatingData) -> bool:
    """``score`` and ``score_all`` run where the data is and return finite values there."""
    users = valid.users[:256]
    with torch.no_grad():
        pair, grid = model.score(users, valid.items[:256]), model.score_all(users[:16])
    return (pair.device == grid.device == valid.device and grid.shape[1] == model.n_items
            and bool(torch.isfinite(pair).all()) and bool(torch.isfinite(grid).all()))


def run_all_models(args: argparse.Namespace, device: torch.device) -> list[dict[str, Any]]:
    """``--all-models``: every model of the registry, one epoch each (per precision)."""
    train, valid, prep = make_data(args.rows, args.valid_rows, args.users, args.items,
                                   args.seed, device)
    features = synthetic_features(args.items, args.seed)
    rows = []
    for name, config in ALL_MODELS.items():
        trainable = MODEL_CLASSES[type(config)].trainable
        for amp in amp_variants(args.amp, device) if trainable else [None]:
            if trainable:
                tc = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                                 patience=None, restore_best=False, amp=amp is not None,
                                 amp_dtype=amp or "bf16", seed=args.seed, device=str(device))
                out = time_fit(config, train, valid, tc, args.users, args.items, features)
            else:
                out = _closed_form(config, train, valid, args.users, args.items)
            ok = _runs_on_device(out.pop("model"), valid)
            rows.append({"model": name, "precision": amp or "fp32", "rows": len(train),
                         "batch_size": args.batch_size if trainable else None,
                         "score_on_device": ok, **prep, **out})
            print(f"[{name} {amp or 'fp32'}] on {out['device']}: {out['epoch_s']:.2f} s, "
                  f"{out['samples_per_s']:,.0f} samples/s, valid RMSE {out['valid_rmse']:.4f},"
                  f" score/score_all on device: {ok}", flush=True)
    return rows


def _table_row(row: dict[str, Any]) -> dict[str, str]:
    def num(v: float | None, fmt: str) -> str:
        return "–" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, fmt)

    return {"model": row["model"], "device": row["device"], "precision": row["precision"],
            "rows": f"{row['rows']:,}", "batch_size": num(row["batch_size"], ","),
            "epoch_s": num(row["epoch_s"], ".2f"), "samples_per_s": num(row["samples_per_s"],
                                                                          ",.0f"),
            "valid_rmse": num(row["valid_rmse"], ".4f"), "peak_gib": num(row["peak_gib"], ".2f"),
            "score_on_device": str(row.get("score_on_device", "–"))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--all-models", action="store_true", help="every model, smaller data")
    ap.add_argument("--rows", type=int, help="training ratings (default 25M; 2M --all-models)")
    ap.add_argument("--users", type=int, help="default 162,541 (20,000 with --all-models)")
    ap.add_argument("--items", type=int, help="default 59,047 (10,000 with --all-models)")
    ap.add_argument("--valid-rows", type=int, default=100_000, help="validation ratings")
    ap.add_argument("--batch-size", type=int, default=65536, help="rows per gradient step")
    ap.add_argument("--factors", type=int, default=64, help="MF latent dimension")
    ap.add_argument("--epochs", type=int, default=1, help="epochs to time (the last is shown)")
    ap.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate")
    ap.add_argument("--device", default="auto", help="auto (CUDA if present), cpu or cuda")
    ap.add_argument("--amp", default="auto", choices=("auto", "off", "bf16", "fp16", "all"),
                    help="CUDA only: auto = fp32 and bf16; all = fp32, bf16 and fp16")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path, help="also write the figures to this file")
    args = ap.parse_args()
    size = SMALL_SIZE if args.all_models else FULL_SIZE
    args.rows, args.users, args.items = (given or default for given, default in zip(
        (args.rows, args.users, args.items), size, strict=True))
    logging.basicConfig(level=logging.WARNING)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    header = machine_line(device)
    print(f"{header}; load average {os.getloadavg()[0]:.2f}", flush=True)
    rows = run_all_models(args, device) if args.all_models else run_mf(args, device)
    print(f"\nload average {os.getloadavg()[0]:.2f}\n")
    head = ("model", "device", "precision", "rows", "batch_size", "epoch_s", "samples_per_s",
            "valid_rmse", "peak_gib", "score_on_device")
    print(markdown_table([_table_row(r) for r in rows], head))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({
            "machine": header, "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "argv": sys.argv, "config": vars(args) | {"json": str(args.json)}, "rows": rows},
            indent=2, default=str))


if __name__ == "__main__":
    main()
