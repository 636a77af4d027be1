"""Three classic course-notebook setups on ml-latest-small, as named presets a reader can check.

Presets:
  * ``course``: the 200 most-rated movies, users with at least 100 ratings among them
    (``FilterConfig(top_n_items=200, min_user_ratings=100)``: 200 movies, 63 users, 8,329
    ratings); an 80/20 random split, then 15 % of train for validation (one seeded random
    split with ratios 0.68/0.12/0.20), seed 42; the "embeddings + two linear layers" MLP
    (``MLPConfig(hidden=(64,))``: Linear → ReLU → Linear).
  * ``deepfm_lab``: a random 80/20 split of all of ml-latest-small, seed 1 (10 % of train, i.e.
    8 % of the rows, held out for early stopping: ratios 0.72/0.08/0.20); DeepFM over user,
    item, genres and release-year decade. The lab's bar: test MSE below 0.8.
  * ``two_tower_concat``: the two-tower concat MLP (user and item embeddings concatenated,
    then a 3-layer MLP) with a 70/15/15 random split, seed 42.

Each reports test RMSE and MSE over every test rating (one mean over ratings, not a mean of
per-batch means), the best epoch, and wall times. Data is read with the project's own readers
(``data.movielens`` → ``data.clean`` → ``data.filter`` → ``data.encode`` → ``data.split``); the
device is chosen once (CUDA when present, else CPU), so the same command runs on a GPU box.

Usage:  .venv/bin/python bench/course_setups.py [--presets course,deepfm_lab,two_tower_concat]
            [--release data_lake/raw/ml-latest-small] [--device auto] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import torch

from recsys_pipeline.data.clean import clean_table
from recsys_pipeline.data.encode import encode_ids
from recsys_pipeline.data.filter import FilterConfig, filter_ratings
from recsys_pipeline.data.item_features import item_side_features
from recsys_pipeline.data.movielens import detect_release, read_table
from recsys_pipeline.data.split import SplitConfig, split_ratings
from recsys_pipeline.evaluation.rating import predict
from recsys_pipeline.models.deepfm import DeepFMConfig
from recsys_pipeline.models.mlp import MLPConfig
from recsys_pipeline.training.device import cpu_name, pick_device, synchronize
from recsys_pipeline.training.experiment import ExperimentData, ItemFeatures, run_experiment
from recsys_pipeline.training.loop import TrainConfig

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_RELEASE = ROOT / "data_lake" / "raw" / "ml-latest-small"


@dataclass(frozen=True)
class Preset:
    """One setup: which ratings, how split, which model, how trained."""

    description: str
    filter: FilterConfig | None
    split: SplitConfig
    model: Any
    train: TrainConfig
    side_features: bool = False


PRESETS: dict[str, Preset] = {
    "course": Preset(
        "200 most-rated movies, users with >= 100 of them; 80/20 then 15% valid; "
        "embeddings + two linear layers",
        FilterConfig(top_n_items=200, min_user_ratings=100),
        SplitConfig(method="random", ratios=(0.68, 0.12, 0.20), seed=42),
        MLPConfig(user_dim=32, item_dim=32, hidden=(64,), dropout=0.2, seed=42),
        TrainConfig(epochs=60, batch_size=128, lr=2e-3, weight_decay=1e-5, patience=5,
                    seed=42)),
    "deepfm_lab": Preset(
        "all of ml-latest-small, random 80/20 (8% of rows for early stopping), seed 1; "
        "DeepFM with genres + year",
        None,
        SplitConfig(method="random", ratios=(0.72, 0.08, 0.20), seed=1),
        DeepFMConfig(embedding_dim=16, hidden=(64, 32), dropout=0.2, seed=1),
        TrainConfig(epochs=30, batch_size=1024, lr=2e-3, weight_decay=1e-5, patience=3,
                    seed=1),
        side_features=True),
    "two_tower_concat": Preset(
        "all of ml-latest-small, random 70/15/15, seed 42; two-tower concat MLP",
        None,
        SplitConfig(method="random", ratios=(0.70, 0.15, 0.15), seed=42),
        MLPConfig(user_dim=32, item_dim=32, hidden=(128, 64, 32), dropout=0.3, seed=42),
        TrainConfig(epochs=30, batch_size=1024, lr=2e-3, weight_decay=1e-5, patience=3,
                    seed=42)),
}


def machine_line(device: torch.device) -> str:
    """One line naming the machine: GPU or CPU model, CPU count, torch version and threads."""
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name()
    return (f"machine: {name}, {os.cpu_count()} CPUs, torch {torch.__version__} "
            f"({torch.get_num_threads()} threads), device {device}")


def markdown_table(rows: list[dict[str, Any]], head: tuple[str, ...]) -> str:
    """``rows`` as a markdown table with columns ``head`` (values through ``str``)."""
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(str(row[k]) for k in head) + " |" for row in rows]
    return "\n".join(lines)


def load_tables(release_path: Path) -> dict[str, pa.Table]:
    """Clean ratings, movies and tags of a release, through the project's readers."""
    release = detect_release(release_path)
    return {name: clean_table(name, read_table(release, name))[0]
            for name in ("ratings", "movies", "tags")}


def build_data(tables: dict[str, pa.Table], preset: Preset) -> ExperimentData:
    """Filter → encode → split → ``ExperimentData`` (with side features when asked)."""
    ratings = tables["ratings"]
    if preset.filter is not None:
        ratings, _ = filter_ratings(ratings, preset.filter)
    encoded, maps = encode_ids(ratings, tables["movies"])
    splits = split_ratings(encoded, preset.split)
    features = None
    if preset.side_features:
        side = item_side_features(maps.items, tables["movies"])
        features = ItemFeatures.from_arrays(side.genres, side.years)
    return ExperimentData.from_tables(splits.train, splits.valid, splits.test, maps.n_users,
                                      maps.n_items, features)


def run_preset(name: str, tables: dict[str, pa.Table], device: str,
               log: Callable[[str], None] = print) -> dict[str, Any]:
    """Train and score one preset; returns its figures."""
    preset = PRESETS[name]
    t0 = time.perf_counter()
    data = build_data(tables, preset)
    train = TrainConfig(**{**preset.train.__dict__, "device": device})
    result = run_experiment(data, preset.model, train)
    test = data.test.to(pick_device(device))
    errors = predict(result.model, test).double() - test.ratings.double()  # [n_test]
    synchronize(test.device)
    mse = float(errors.pow(2).mean())  # one mean over every test rating
    wall = time.perf_counter() - t0
    log(f"[{name}] test RMSE {mse ** 0.5:.4f}  MSE {mse:.4f}  (best epoch {result.best_epoch}"
        f" of {len(result.history)}; train {result.train_seconds:.1f} s, total {wall:.1f} s)")
    return {"preset": name, "description": preset.description, "users": data.n_users,
            "items": data.n_items, "train": len(data.train), "valid": len(data.valid),
            "test": len(data.test), "test_rmse": round(mse ** 0.5, 4), "test_mse": round(mse, 4),
            "test_mae": round(result.test["mae"], 4), "best_epoch": result.best_epoch,
            "epochs_run": len(result.history), "train_seconds": round(result.train_seconds, 1),
            "wall_seconds": round(wall, 1), "device": result.device}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--presets", default=",".join(PRESETS))
    ap.add_argument("--release", type=Path, default=DEFAULT_RELEASE)
    ap.add_argument("--device", default="auto", help="auto (CUDA if present), cpu or cuda")
    ap.add_argument("--json", type=Path, help="also write the figures to this file")
    args = ap.parse_args()
    print(machine_line(pick_device(args.device)))
    tables = load_tables(args.release)
    rows = [run_preset(p, tables, args.device) for p in args.presets.split(",")]
    head = ("preset", "users", "items", "train", "test", "test_rmse", "test_mse", "best_epoch",
            "train_seconds", "wall_seconds")
    print("\n" + markdown_table(rows, head))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
