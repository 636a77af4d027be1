"""Ingest benchmark: detect + read + clean + write Parquet, timed with peak RSS.

Cases:
  * ``small``: the embedded data_lake/raw/ml-latest-small (100,836 ratings);
  * ``25m``: a generated ml-25m-format release (ratings.csv with 25,000,095 rows, long-tailed
    user activity and item popularity, 162,541 users, 59,047 items; movies.csv), cached under
    bench/.cache/ so it is generated once.

Each case runs in a fresh subprocess, so its peak RSS is its own (not the generator's); after
the timed ingest it also times the read check ``raw/movielens_release`` runs before recording a
release (every table read once; not part of the peak RSS above). For
reference, the same run also times ``pandas.read_csv`` (C engine) of the same ratings.csv:
reading alone, no cleaning and no Parquet write.

Usage:  .venv/bin/python bench/ingest_bench.py [--cases small,25m] [--rows N] [--no-pandas]
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / "bench" / ".cache"
N_USERS, N_ITEMS, N_ROWS = 162_541, 59_047, 25_000_095
GENRES = ["Action", "Adventure", "Animation", "Children", "Comedy", "Crime", "Documentary",
          "Drama", "Fantasy", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller"]


def generate(folder: Path, n_rows: int, seed: int = 0) -> Path:
    """Write an ml-25m-format release (ratings.csv, movies.csv) with ``n_rows`` unique ratings."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    n_users = max(10, int(N_USERS * n_rows / N_ROWS))
    n_items = max(10, int(N_ITEMS * min(1.0, (n_rows / N_ROWS) ** 0.5)))
    # long tails: item popularity ~ 1/(rank + 20) (top item ~0.6% of ratings, as in ml-25m's
    # ~0.3%), user activity ~ lognormal(sigma 1.2); pairs drawn until n_rows are unique
    item_p = 1.0 / (np.arange(1, n_items + 1) + 20.0)
    item_p /= item_p.sum()
    activity = rng.lognormal(mean=0.0, sigma=1.2, size=n_users)
    user_p = activity / activity.sum()
    keys = np.empty(0, dtype=np.int64)
    while keys.size < n_rows:
        n_draw = int((n_rows - keys.size) * 1.1) + 1000
        users = rng.choice(n_users, size=n_draw, p=user_p).astype(np.int64)
        items = rng.choice(n_items, size=n_draw, p=item_p).astype(np.int64)
        keys = np.unique(np.concatenate([keys, (users << 32) | items]))
    keys = rng.permutation(keys)[:n_rows]
    users, items = keys >> 32, keys & 0xFFFFFFFF
    item_ids = rng.permutation(np.arange(1, 3 * n_items))[:n_items]  # sparse, unordered ids
    stars = rng.choice(np.arange(1, 11) / 2, size=n_rows,
                       p=[.01, .03, .02, .07, .05, .2, .13, .27, .08, .14])
    ratings = pa.table({
        "userId": users + 1,
        "movieId": item_ids[items],
        "rating": stars,
        "timestamp": rng.integers(789_652_009, 1_574_327_703, size=n_rows),
    })
    opts = pacsv.WriteOptions(quoting_style="none")
    pacsv.write_csv(ratings, folder / "ratings.csv", write_options=opts)
    genre_idx = rng.integers(0, len(GENRES), size=n_items)
    movies = pa.table({
        "movieId": item_ids,
        "title": [f"Movie {i} ({1900 + i % 120})" for i in range(n_items)],
        "genres": [GENRES[g] for g in genre_idx],
    })
    pacsv.write_csv(movies, folder / "movies.csv", write_options=pacsv.WriteOptions())
    return folder


def measure(release_path: str, lake: str) -> dict:
    """Ingest one release into ``lake`` (the timed part), in this process."""
    from recsys_pipeline.data.clean import clean_table
    from recsys_pipeline.data.lake import write_parquet
    from recsys_pipeline.data.movielens import detect_release, read_table

    t0 = time.perf_counter()
    release = detect_release(release_path)
    steps, rows = {}, {}
    for name in release.files:
        t = time.perf_counter()
        table, _ = clean_table(name, read_table(release, name))
        write_parquet(table, Path(lake) / "clean" / f"{name}.parquet")
        steps[name] = round(time.perf_counter() - t, 2)
        rows[name] = table.num_rows
    total = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2  # KiB -> GiB
    # what raw/movielens_release adds before it records a release: every table read once
    from recsys_pipeline.assets.ingest import _read_every_table

    t = time.perf_counter()
    _read_every_table(release, {"new_users": {}})
    check = time.perf_counter() - t
    return {"release": release.name, "seconds": round(total, 2), "steps": steps,
            "rows": rows, "peak_rss_gib": round(peak, 2),
            "release_asset_read_check_seconds": round(check, 2)}


def measure_pandas(csv_path: str) -> dict:
    import pandas as pd

    t = time.perf_counter()
    frame = pd.read_csv(csv_path, dtype={"userId": "int32", "movieId": "int32",
                                         "rating": "float32", "timestamp": "int64"})
    secs = time.perf_counter() - t
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2
    return {"rows": len(frame), "seconds": round(secs, 2), "peak_rss_gib": round(peak, 2)}


def _subprocess(*args: str) -> dict:
    out = subprocess.run([sys.executable, __file__, *args], check=True, capture_output=True,
                         text=True, cwd=ROOT)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cases", default="small,25m")
    ap.add_argument("--rows", type=int, default=N_ROWS, help="rows of the generated case")
    ap.add_argument("--no-pandas", action="store_true", help="skip the pandas reference")
    ap.add_argument("--measure", nargs=2, metavar=("RELEASE", "LAKE"), help=argparse.SUPPRESS)
    ap.add_argument("--measure-pandas", metavar="CSV", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.measure:
        print(json.dumps(measure(*args.measure)))
        return
    if args.measure_pandas:
        print(json.dumps(measure_pandas(args.measure_pandas)))
        return
    print(f"machine: {platform.processor() or platform.machine()}, "
          f"{__import__('os').cpu_count()} cores, python {platform.python_version()}")
    for case in args.cases.split(","):
        if case == "small":
            release = ROOT / "data_lake" / "raw" / "ml-latest-small"
        else:
            release = CACHE / f"ml-25m-synthetic-{args.rows}"
            if not (release / "ratings.csv").is_file():
                t = time.perf_counter()
                generate(release, args.rows)
                print(f"generated {release} in {time.perf_counter() - t:.1f} s")
        with tempfile.TemporaryDirectory(dir=CACHE if CACHE.is_dir() else None) as lake:
            result = _subprocess("--measure", str(release), lake)
        print(f"[{case}] ingest+clean+parquet: {json.dumps(result)}")
        if not args.no_pandas:
            ref = _subprocess("--measure-pandas", str(release / "ratings.csv"))
            print(f"[{case}] pandas.read_csv(ratings.csv) only: {json.dumps(ref)}")


if __name__ == "__main__":
    main()
