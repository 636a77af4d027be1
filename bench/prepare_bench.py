"""Time the prepared-data chain: filter -> encode -> every split (+ validation) -> sequences -> CSR.

Two inputs:

* synthetic ml-25m-shaped ratings (default 25,000,000 rows; ~162.5k users and ~59k items at
  that size, users scaled linearly and items by the square root for other ``--rows``):
  long-tailed item popularity ``p(rank) ~ (rank + c)^-2.2`` (top item ~75k ratings, median
  item ~6), log-normal user activity, unique (user, item) pairs, half-star ratings with the
  ml-25m histogram, per-user activity windows of timestamps, rows ordered by (user, item)
  like ratings.csv. Generated once, in a child process (so its memory is not counted), and
  cached as ``bench/.cache/synthetic_<rows>_<seed>.parquet``;
* ``--movielens path/to/ratings.csv``: a real MovieLens CSV (userId, movieId, rating, timestamp).

Usage::

    .venv/bin/python bench/prepare_bench.py --rows 25000000
    .venv/bin/python bench/prepare_bench.py --movielens data_lake/raw/ml-latest-small/ratings.csv

Prints seconds per step, the total, and the peak RSS of this process (``ru_maxrss``).
"""

from __future__ import annotations

import argparse
import platform
import resource
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from recsys_pipeline import schema
from recsys_pipeline.data import lake
from recsys_pipeline.data.encode import encode_ids
from recsys_pipeline.data.filter import FilterConfig, filter_ratings
from recsys_pipeline.data.sessions import SessionConfig, build_sessions
from recsys_pipeline.data.sparse import SparseConfig, build_matrices
from recsys_pipeline.data.split import SplitConfig, split_ratings
from recsys_pipeline.data.validate_splits import validate_splits

CACHE = Path(__file__).resolve().parent / ".cache"
ML25M_ROWS, ML25M_USERS, ML25M_ITEMS = 25_000_095, 162_541, 59_047
HALF_STARS = np.arange(1, 11, dtype=np.float32) / 2
# share of each half star 0.5 .. 5.0 in ml-25m
STAR_SHARE = np.array([1.6, 3.2, 1.6, 6.6, 4.9, 19.6, 12.4, 26.6, 8.7, 14.8])
T_FIRST, T_LAST = 789_652_009, 1_574_327_703  # first and last ml-25m timestamps

FILTER = FilterConfig(min_user_ratings=10, min_item_ratings=10, k_core=True)
SPLITS = {
    "random": SplitConfig("random", drop_cold_start=True),
    "global_temporal": SplitConfig("global_temporal", drop_cold_start=True),
    "user_temporal": SplitConfig("user_temporal", drop_cold_start=True),
    "strong_generalization": SplitConfig("strong_generalization", drop_cold_start=True),
}


def synthetic_ratings(n_rows: int, seed: int) -> pa.Table:
    """ml-25m-shaped synthetic ratings (see the module docstring), ``schema.RATINGS_SCHEMA``."""
    rng = np.random.default_rng(seed)
    scale = n_rows / ML25M_ROWS
    n_users = max(10, round(ML25M_USERS * scale))
    n_items = max(10, round(ML25M_ITEMS * scale**0.5))
    item_cdf = np.cumsum(1.0 / (np.arange(n_items) + 400 * n_items / ML25M_ITEMS) ** 2.2)
    activity = 20 + rng.lognormal(np.log(50), 1.3, n_users)
    user_cdf = np.cumsum(activity)

    def draw(m: int) -> np.ndarray:
        user = np.searchsorted(user_cdf, rng.random(m) * user_cdf[-1])
        item = np.searchsorted(item_cdf, rng.random(m) * item_cdf[-1])
        return user.astype(np.int64) * n_items + item

    keys = np.unique(draw(int(n_rows * 1.1)))
    while len(keys) < n_rows:  # duplicates removed: top up until enough distinct pairs
        keys = np.unique(np.concatenate([keys, draw(int((n_rows - len(keys)) * 1.2) + 100)]))
    keys = keys[np.sort(rng.permutation(len(keys))[:n_rows])]  # sorted: (user, item) order
    user, rank = keys // n_items, keys % n_items
    # popularity rank -> a sparse movie id, unrelated to popularity (ids go up to ~209k)
    item_ids = np.sort(rng.choice(np.arange(1, int(n_items * 3.55) + 1), n_items, replace=False))
    item_id = rng.permutation(item_ids)[rank]
    order = np.lexsort((item_id, user))  # ratings.csv order: userId, then movieId
    user, item_id = user[order], item_id[order]
    start = rng.integers(T_FIRST, T_LAST, n_users)
    span = np.minimum(rng.exponential(180 * 86_400, n_users), T_LAST - start)
    ts = start[user] + (rng.random(n_rows) * span[user]).astype(np.int64)
    rating = HALF_STARS[
        np.searchsorted(np.cumsum(STAR_SHARE / STAR_SHARE.sum()), rng.random(n_rows))
    ]
    return pa.Table.from_arrays(
        [
            pa.array((user + 1).astype(np.int32)),
            pa.array(item_id.astype(np.int32)),
            pa.array(rating),
            pa.array(ts).cast(schema.TIMESTAMP_TYPE),
        ],
        schema=schema.RATINGS_SCHEMA,
    )


def cached_synthetic(n_rows: int, seed: int) -> Path:
    """Path of the cached synthetic table, generating it in a child process if missing."""
    path = CACHE / f"synthetic_{n_rows}_{seed}.parquet"
    if not path.is_file():
        print(f"generating {n_rows:,} synthetic rows -> {path} (once)", flush=True)
        cmd = [
            sys.executable,
            __file__,
            "--generate-only",
            "--rows",
            str(n_rows),
            "--seed",
            str(seed),
        ]
        subprocess.run(cmd, check=True)
    return path


def read_movielens_csv(path: Path) -> pa.Table:
    """A MovieLens ratings.csv (userId, movieId, rating, timestamp) in ``RATINGS_SCHEMA``."""
    raw = pacsv.read_csv(path)
    return pa.Table.from_arrays(
        [
            raw.column("userId").cast(pa.int32()),
            raw.column("movieId").cast(pa.int32()),
            raw.column("rating").cast(pa.float32()),
            raw.column("timestamp").cast(pa.int64()).cast(schema.TIMESTAMP_TYPE),
        ],
        schema=schema.RATINGS_SCHEMA,
    )


class Timer:
    """Runs steps, recording wall seconds per step name."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    def __call__(self, name: str, fn: Callable[..., Any], *args: Any) -> Any:
        start = time.perf_counter()
        out = fn(*args)
        self.seconds[name] = time.perf_counter() - start
        print(f"  {name:<32} {self.seconds[name]:7.2f} s", flush=True)
        return out


def run_chain(ratings: pa.Table, timer: Timer) -> dict[str, Any]:
    """Filter, encode, split four ways (validating each), then sequences and CSR matrices."""
    filtered, _ = timer("filter", filter_ratings, ratings, FILTER)
    encoded, maps = timer("encode", encode_ids, filtered)
    del filtered
    kept = {}
    for name, config in SPLITS.items():
        splits = timer(f"split {name}", split_ratings, encoded, config)
        problems = timer(f"validate {name}", validate_splits, encoded, splits, config)
        if problems:
            raise RuntimeError(f"{name} split failed validation: {problems}")
        if name in ("user_temporal", "strong_generalization"):
            kept[name] = splits
    sessions = timer(
        "sequences (user_temporal)", build_sessions, kept["user_temporal"], maps.n_users,
        maps.n_items, SessionConfig(max_len=200),
    )  # fmt: skip
    for name, splits in kept.items():
        timer(
            f"csr ({name})", build_matrices, splits, maps.n_users, maps.n_items, SparseConfig(4.0)
        )
    return {
        "filtered_rows": encoded.num_rows,
        "users": maps.n_users,
        "items": maps.n_items,
        "train_sequences": sessions.report["train_sequences"],
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=25_000_000, help="synthetic rows")
    parser.add_argument("--seed", type=int, default=0, help="synthetic data seed")
    parser.add_argument("--movielens", type=Path, help="time on this ratings.csv instead")
    parser.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    parser.add_argument("--generate-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.generate_only:
        table = synthetic_ratings(args.rows, args.seed)
        lake.write_parquet(table, CACHE / f"synthetic_{args.rows}_{args.seed}.parquet")
        return
    timer = Timer()
    if args.movielens:
        source = str(args.movielens)
        ratings = timer("load csv", read_movielens_csv, args.movielens)
    else:
        path = cached_synthetic(args.rows, args.seed)
        source = str(path)
        ratings = timer("load parquet", pq.read_table, path)
    load = next(iter(timer.seconds.values()))
    print(f"{ratings.num_rows:,} rows from {source}", flush=True)
    counts = run_chain(ratings, timer)
    total = sum(timer.seconds.values()) - load
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"  {'total (excluding load)':<32} {total:7.2f} s")
    print(f"  {'peak RSS':<32} {peak_mb:7.0f} MB")
    print(f"  {counts}")
    if args.json:
        result = {
            "source": source, "rows": ratings.num_rows, "steps_s": timer.seconds,
            "total_s": total, "peak_rss_mb": peak_mb, "counts": counts,
            "machine": platform.processor() or platform.machine(), "python": sys.version.split()[0],
        }  # fmt: skip
        lake.write_json(result, args.json)


if __name__ == "__main__":
    main()
