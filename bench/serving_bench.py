"""Time the serving core: every user's top-K with seen items masked, and new-user fold-in.

Three cases (device auto: CUDA when present, else CPU; ``--device`` overrides):

* **ml-latest-small top-K**: the shipped release (610 users × 9,724 items, 100,836 ratings as
  the seen sets), an MF model (d=32), ``batch_top_k(k=100)`` for every user, then the
  Parquet-ready ``top_k_table``;
* **synthetic ml-25m-sized top-K**: 162,541 users × 59,047 items, MF d=64 (one matmul per user
  batch + ``torch.topk``), log-normal seen-set sizes averaging ``--seen-per-user`` (154 ≈
  ml-25m's 25M ratings) — timed end to end: scoring, masking, top-K and the copy of the
  ``[n_users, k]`` result to the CPU;
* **fold-in**: a new user with 20 ratings (copied from a random ml-latest-small user) folded
  into MF (closed-form ridge solve) and into an MLP (gradient steps), plus their top-100 list.

Scores do not change the work, so the models keep their seeded initial weights (no
training). Each timing is the median of ``--repeats`` runs after one warm-up run.

Usage::

    .venv/bin/python bench/serving_bench.py
    .venv/bin/python bench/serving_bench.py --device cuda --batch-size 8192
    .venv/bin/python bench/serving_bench.py --synthetic-users 20000   # a smaller synthetic case
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from recsys_pipeline import schema as S  # noqa: E402
from recsys_pipeline.data.encode import encode_ids  # noqa: E402
from recsys_pipeline.data.movielens import detect_release, read_table  # noqa: E402
from recsys_pipeline.evaluation.topk import ItemSets  # noqa: E402
from recsys_pipeline.models.mf import MFConfig, MFModel  # noqa: E402
from recsys_pipeline.models.mlp import MLPModel  # noqa: E402
from recsys_pipeline.serving.fold_in import fold_in  # noqa: E402
from recsys_pipeline.serving.recommend import batch_top_k, seen_items, top_k_table  # noqa: E402
from recsys_pipeline.training.device import cpu_name, pick_device, synchronize  # noqa: E402

RELEASE = ROOT / "data_lake" / "raw" / "ml-latest-small"
ML25M_USERS, ML25M_ITEMS = 162_541, 59_047


def timed(fn: Callable[[], Any], device: torch.device, repeats: int) -> tuple[float, Any]:
    """Median wall seconds of ``fn()`` over ``repeats`` runs after one warm-up run."""
    out = fn()
    times = []
    for _ in range(repeats):
        synchronize(device)
        t0 = time.perf_counter()
        out = fn()
        synchronize(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def small_case(args: argparse.Namespace, device: torch.device) -> tuple[Any, Any, Any]:
    release = detect_release(RELEASE)
    ratings = read_table(release, "ratings")
    encoded, maps = encode_ids(ratings, read_table(release, "movies"))
    seen = seen_items(encoded, maps.n_users)
    mf = MFModel(maps.n_users, maps.n_items, MFConfig(n_factors=32, l2=0.1)).to(device).eval()
    secs, top = timed(lambda: batch_top_k(mf, seen, args.k, args.batch_size, device), device,
                      args.repeats)
    table_secs, table = timed(lambda: top_k_table(top, maps), device, args.repeats)
    print(f"ml-latest-small top-{args.k}: {maps.n_users} users x {maps.n_items} items, "
          f"{encoded.num_rows} seen: batch_top_k {secs * 1000:.1f} ms, "
          f"top_k_table {table_secs * 1000:.1f} ms ({table.num_rows} rows)")
    return encoded, maps, seen


def synthetic_seen(n_users: int, n_items: int, mean: float, device: torch.device) -> ItemSets:
    gen = torch.Generator(device="cpu").manual_seed(0)
    # log-normal activity (sigma 1) with the requested mean, at least 10 ratings each
    sizes = torch.exp(torch.randn(n_users, generator=gen) + np.log(mean) - 0.5)
    sizes = sizes.clamp(10, n_items // 2).long()
    users = torch.repeat_interleave(torch.arange(n_users), sizes)
    items = torch.randint(n_items, (users.numel(),), generator=gen)
    return ItemSets.from_pairs(users, items, n_users).to(device)


def synthetic_case(args: argparse.Namespace, device: torch.device) -> None:
    n_users, n_items = args.synthetic_users, args.synthetic_items
    t0 = time.perf_counter()
    seen = synthetic_seen(n_users, n_items, args.seen_per_user, device)
    mf = MFModel(n_users, n_items, MFConfig(n_factors=args.dim)).to(device).eval()
    setup = time.perf_counter() - t0
    secs, top = timed(lambda: batch_top_k(mf, seen, args.k, args.batch_size, device), device,
                      args.repeats)
    print(f"synthetic top-{args.k}: {n_users} users x {n_items} items, d={args.dim}, "
          f"{seen.indices.numel()} seen (setup {setup:.1f} s): batch_top_k {secs:.3f} s "
          f"end to end ({n_users / secs:,.0f} users/s), result {tuple(top.item_idx.shape)}")


def fold_in_case(args: argparse.Namespace, encoded: Any, maps: Any, device: torch.device,
                 movies: Any) -> None:
    rng = np.random.default_rng(0)
    users = encoded.column(S.USER_IDX).to_numpy()
    user = rng.choice(np.flatnonzero(np.bincount(users) >= 20))
    rows = rng.choice(np.flatnonzero(users == user), size=20, replace=False)
    mine = encoded.take(rows).select([S.ITEM_ID, S.RATING])
    mf = MFModel(maps.n_users, maps.n_items, MFConfig(n_factors=32, l2=0.1)).to(device).eval()
    mlp = MLPModel(maps.n_users, maps.n_items).to(device).eval()
    for name, model in (("MF (closed form)", mf), ("MLP (150 Adam steps)", mlp)):
        fit_secs, folded = timed(lambda m=model: fold_in(m, mine, maps), device, args.repeats)
        rec_secs, table = timed(lambda f=folded: f.recommend(maps, movies, 100), device,
                                args.repeats)
        print(f"fold-in {name}, 20 ratings: fold_in {fit_secs * 1000:.2f} ms, "
              f"recommend top-100 {rec_secs * 1000:.2f} ms ({table.num_rows} rows)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--k", type=int, default=100, help="list length")
    parser.add_argument("--batch-size", type=int, default=None,
                        help="users per batch (default: 2^26 (CPU) or 2^28 (GPU) cells / n_items)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs after a warm-up")
    parser.add_argument("--synthetic-users", type=int, default=ML25M_USERS)
    parser.add_argument("--synthetic-items", type=int, default=ML25M_ITEMS)
    parser.add_argument("--dim", type=int, default=64, help="synthetic MF factors")
    parser.add_argument("--seen-per-user", type=float, default=154.0)
    parser.add_argument("--skip-synthetic", action="store_true")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else "-"
    print(f"device {device} ({gpu}); CPU {cpu_name()}, {torch.get_num_threads()} torch threads;"
          f" torch {torch.__version__}; python {platform.python_version()}")
    encoded, maps, _ = small_case(args, device)
    fold_in_case(args, encoded, maps, device, read_table(detect_release(RELEASE), "movies"))
    if not args.skip_synthetic:
        synthetic_case(args, device)


if __name__ == "__main__":
    main()
