"""Rating prediction on ml-latest-small: our five rating models beside scikit-surprise, one split.

Protocol (one run, one split, every model):
  * Ratings are read with the project's readers (``data.movielens`` → ``data.clean`` →
    ``data.encode``) and split once by ``data.split`` (``method="random"``, seed ``--seed``)
    with ratios 0.81/0.09/0.10: a random 90/10 train/test split whose 90 % is cut again 90/10
    into fit and validation parts (one seeded shuffle of row labels with exact sizes, which is
    the same as splitting twice).
  * Selection: each model's small grid (``GRIDS``, ``SURPRISE_GRIDS``) is fitted on the 81 %
    and scored by RMSE on the 9 %. Our gradient-trained models early-stop on that RMSE; the
    chosen candidate keeps its best epoch. Surprise has no early stopping, so its epoch count
    is a grid value. A one-candidate grid (surprise defaults) skips this step.
  * Refit: the chosen candidate is refitted on the whole 90 % (fit + validation rows) for the
    chosen number of epochs (no early stopping, last weights kept) and scored once on the 10 %
    test rows. Surprise fits exactly the same 90 % rows and predicts the same test rows.
  * Metrics over every test rating: RMSE, MAE and three FCP figures on the same predictions:
    ``fcp`` is ours (``evaluation.rating.fcp``, pooled: Σ_u n_c / Σ_u (n_c + n_d), Koren 2010),
    ``fcp_surprise`` is ``surprise.accuracy.fcp`` and ``fcp_user`` ours with
    ``average="user"`` (mean over users of n_c/(n_c + n_d)). Both count a pair with
    ``r_ui > r_uj`` as concordant iff ``r̂_ui > r̂_uj`` (a tied prediction is discordant), but
    Surprise averages differently: mean(n_c over users with n_c > 0) divided by itself plus
    mean(n_d over users with n_d > 0). That equals the pooled figure when every user with a
    comparable pair has both n_c > 0 and n_d > 0, and differs otherwise: here it comes out
    0.015-0.026 below the pooled figure (seeds 42 and 1). (``evaluation.rating.fcp`` calls
    ``average="user"`` Surprise's definition. It is not: Surprise never takes a per-user
    ratio.)
  * ``fit_s`` is the time of the refit on the 90 %: ours, the training passes of ``fit`` (its
    per-epoch ``samples_per_s``) or the closed-form fit; surprise, ``algo.fit``. The JSON also
    has ``fit_wall_s``, ``run_experiment``'s whole ``train_seconds`` (with the per-epoch
    validation passes). ``tune_s`` is the wall time of the grid. Surprise runs single-threaded
    on the CPU. SVD++ is the slow one (30-100 s per fit on 81-91k ratings on a shared 2-core
    box), so its grid has two candidates; the whole run takes 5-9 minutes there.

Surprise comes from ``bench/requirements-bench.txt`` (scikit-surprise 1.1.5 installs from its
manylinux wheel for CPython 3.11 and imports and runs with numpy 2.4.6, so it goes into the
project's ``.venv``; no separate environment is needed):

    .venv/bin/pip install -r bench/requirements-bench.txt

Usage:  .venv/bin/python bench/rating_bench.py [--seed 42] [--device auto] [--threads 0]
            [--models bias,mf,mlp,neumf,deepfm,surprise_baseline,...] [--no-surprise]
            [--release data_lake/raw/ml-latest-small] [--json FILE]
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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import torch
from course_setups import DEFAULT_RELEASE, load_tables, machine_line, markdown_table

from recsys_pipeline.data.encode import encode_ids
from recsys_pipeline.data.item_features import item_side_features
from recsys_pipeline.data.split import SplitConfig, split_ratings
from recsys_pipeline.evaluation.rating import fcp, mae, predict, rmse
from recsys_pipeline.models.bias import BiasConfig
from recsys_pipeline.models.deepfm import DeepFMConfig
from recsys_pipeline.models.mf import MFConfig
from recsys_pipeline.models.mlp import MLPConfig
from recsys_pipeline.models.neumf import NeuMFConfig
from recsys_pipeline.schema import ITEM_IDX, RATING, USER_IDX
from recsys_pipeline.training.data import RatingData
from recsys_pipeline.training.device import pick_device
from recsys_pipeline.training.experiment import (
    MODEL_CLASSES,
    EvalConfig,
    ExperimentData,
    ItemFeatures,
    build_model,
    run_experiment,
)
from recsys_pipeline.training.loop import TrainConfig, fit

SPLIT_RATIOS = (0.81, 0.09, 0.10)  # 90/10 train/test, then 90/10 of train for validation


def _adam(lr: float, wd: float, epochs: int = 60, patience: int = 3) -> TrainConfig:
    return TrainConfig(epochs=epochs, batch_size=4096, lr=lr, weight_decay=wd, patience=patience)


@dataclass(frozen=True)
class Candidate:
    """One grid point: a model config and, for gradient-trained models, the loop options."""

    model: Any
    train: TrainConfig | None = None


# small grids around what worked in exploratory runs on this data (weight decay matters most)
GRIDS: dict[str, list[Candidate]] = {
    "bias": [Candidate(BiasConfig(damping_user=d, damping_item=d)) for d in (1.0, 3.0, 5.0, 10.0)],
    "mf": [Candidate(MFConfig(n_factors=k, l2=l2), _adam(1e-2, wd, epochs=100, patience=4))
           for k, l2, wd in ((64, 0.1, 0.0), (64, 0.05, 1e-4), (64, 0.08, 1e-4),
                             (128, 0.05, 1e-4))],
    "mlp": [Candidate(MLPConfig(user_dim=d, item_dim=d, hidden=h, dropout=p), _adam(3e-3, wd))
            for d, h, p, wd in ((32, (64, 32), 0.2, 3e-4), (32, (64, 32), 0.2, 1e-3),
                                (64, (128, 64), 0.3, 3e-4), (64, (128, 64), 0.3, 1e-3))],
    "neumf": [Candidate(NeuMFConfig(gmf_dim=g, mlp_dim=m, hidden=h, dropout=0.3),
                        _adam(3e-3, wd))
              for g, m, h, wd in ((16, 32, (64, 32, 16), 3e-4), (16, 32, (64, 32, 16), 1e-3),
                                  (32, 64, (128, 64, 32), 1e-3))],
    "deepfm": [Candidate(DeepFMConfig(embedding_dim=k, hidden=h, dropout=p), _adam(3e-3, wd))
               for k, h, p, wd in ((32, (64, 32), 0.2, 3e-4), (64, (64, 32), 0.2, 3e-4),
                                   (64, (64, 32), 0.2, 1e-3), (128, (128, 64), 0.3, 1e-3))],
}
# (surprise class, constructor kwargs); random_state is added for SVD / SVD++
SURPRISE_GRIDS: dict[str, list[tuple[str, dict[str, Any]]]] = {
    "surprise_baseline": [("BaselineOnly", {"bsl_options": {"method": "als", "reg_i": ri,
                                                            "reg_u": ru, "n_epochs": 10}})
                          for ri, ru in ((10, 15), (5, 10), (20, 25))],
    "surprise_svd_default": [("SVD", {})],
    "surprise_svd": [("SVD", {"n_factors": k, "n_epochs": e, "lr_all": 0.005, "reg_all": r})
                     for k, e, r in ((50, 30, 0.05), (100, 40, 0.05), (100, 40, 0.1),
                                     (150, 60, 0.1))],
    "surprise_svdpp": [("SVDpp", {"cache_ratings": True}),
                       ("SVDpp", {"cache_ratings": True, "n_epochs": 30, "reg_all": 0.05})],
}
LABELS = {"bias": "bias (ALS)", "mf": "MF (biased)", "mlp": "MLP", "neumf": "NeuMF",
          "deepfm": "DeepFM (+genres, year)", "surprise_baseline": "surprise BaselineOnly",
          "surprise_svd_default": "surprise SVD (defaults)", "surprise_svd": "surprise SVD",
          "surprise_svdpp": "surprise SVD++"}


@dataclass(frozen=True)
class BenchData:
    """The split as tables (fit 81 %, valid 9 %, test 10 %) plus sizes and DeepFM features."""

    fit: pa.Table
    valid: pa.Table
    test: pa.Table
    n_users: int
    n_items: int
    features: ItemFeatures
    rating_scale: tuple[float, float]

    @property
    def full(self) -> pa.Table:
        """The 90 % the final models are refitted on."""
        return pa.concat_tables([self.fit, self.valid])

    def rating_data(self, table: pa.Table) -> RatingData:
        return RatingData.from_table(table, n_users=self.n_users, n_items=self.n_items)


def load_data(release: Path, seed: int) -> BenchData:
    """Read, clean, encode and split ml-latest-small; genres + year for DeepFM."""
    tables = load_tables(release)
    encoded, maps = encode_ids(tables["ratings"], tables["movies"])
    splits = split_ratings(encoded, SplitConfig(method="random", ratios=SPLIT_RATIOS, seed=seed))
    side = item_side_features(maps.items, tables["movies"])
    ratings = encoded.column(RATING).to_numpy()
    return BenchData(splits.train, splits.valid, splits.test, maps.n_users, maps.n_items,
                     ItemFeatures.from_arrays(side.genres, side.years),
                     (float(ratings.min()), float(ratings.max())))


def describe(config: Any) -> str:
    """The fields of a config dataclass that differ from its defaults (seed and device aside)."""
    default = type(config)()
    return " ".join(f"{f.name}={getattr(config, f.name)}" for f in dataclasses.fields(config)
                    if f.name not in ("seed", "device")
                    and getattr(config, f.name) != getattr(default, f.name))


def score(users: np.ndarray, ratings: np.ndarray, pred: np.ndarray,
          surprise_fcp: Any | None) -> dict[str, float | None]:
    """RMSE, MAE and the three FCP figures of one model's test predictions."""
    u, r, p = (torch.from_numpy(np.array(a)) for a in (users, ratings, pred))
    out: dict[str, float | None] = {"rmse": rmse(p, r), "mae": mae(p, r), "fcp": fcp(u, p, r),
                                    "fcp_surprise": None, "fcp_user": fcp(u, p, r, "user")}
    if surprise_fcp is not None:
        rows = [(a, 0, b, c, None) for a, b, c in zip(users.tolist(), ratings.tolist(),
                                                      pred.tolist(), strict=True)]
        out["fcp_surprise"] = float(surprise_fcp(rows, verbose=False))
    return out


def _config_text(c: Candidate) -> str:
    text = describe(c.model)
    if c.train is not None:
        text += f"; lr={c.train.lr} wd={c.train.weight_decay} bs={c.train.batch_size}"
    return text


# --- our models -------------------------------------------------------------------------------
def _valid_trial(c: Candidate, data: BenchData, device: str) -> dict[str, Any]:
    """Fit one candidate on the 81 %; its valid RMSE (and best epoch when gradient-trained)."""
    fit_part, valid = data.rating_data(data.fit), data.rating_data(data.valid)
    t0 = time.perf_counter()
    cls = MODEL_CLASSES[type(c.model)]
    if cls.trainable:
        model = build_model(c.model, data.n_users, data.n_items, data.features)
        fitted = fit(model, fit_part, valid, dataclasses.replace(c.train, device=device))
        value, epoch = fitted.best_metric, fitted.best_epoch
    else:
        dev = pick_device(device)
        model = cls.fit(fit_part.to(dev), data.n_users, data.n_items, c.model)
        value, epoch = rmse(predict(model, valid.to(dev)), valid.ratings.to(dev)), 1
    return {"valid_rmse": value, "epochs": epoch, "seconds": time.perf_counter() - t0}


def run_ours(name: str, data: BenchData, device: str, seed: int,
             surprise_fcp: Any | None) -> dict[str, Any]:
    """Grid on 81/9, refit the chosen candidate on the 90 %, score on test."""
    grid = [Candidate(dataclasses.replace(c.model, seed=seed) if hasattr(c.model, "seed")
                      else c.model,
                      None if c.train is None else dataclasses.replace(c.train, seed=seed))
            for c in GRIDS[name]]
    trials = [_valid_trial(c, data, device) for c in grid]
    best = min(range(len(grid)), key=lambda j: trials[j]["valid_rmse"])
    chosen = grid[best]
    train = None
    if chosen.train is not None:  # fixed epochs, no early stop, keep the last weights
        train = dataclasses.replace(chosen.train, epochs=trials[best]["epochs"], patience=None,
                                    restore_best=False, device=device)
    # the validation rows are inside the refit's training rows: their metrics go unused
    exp = ExperimentData.from_tables(data.full, data.valid, data.test, data.n_users,
                                     data.n_items, data.features)
    result = run_experiment(exp, chosen.model, train or TrainConfig(device=device),
                            EvalConfig(ks=(10,)))
    test = exp.test.to(result.device)
    pred = predict(result.model, test).cpu().numpy()
    # pure fitting time, like surprise's algo.fit: the training passes of each epoch (or the
    # closed-form fit), without run_experiment's per-epoch validation and set-up
    fit_s = sum(len(exp.train) / h["samples_per_s"] for h in result.history)
    return {"model": LABELS[name], "key": name, "config": _config_text(chosen),
            "candidates": len(grid),
            "valid_rmse": trials[best]["valid_rmse"],
            "epochs": trials[best]["epochs"] if chosen.train is not None else None,
            **score(exp.test.users.numpy(), exp.test.ratings.numpy(), pred, surprise_fcp),
            "ndcg@10": result.test.get("ndcg@10"), "fit_s": fit_s,
            "fit_wall_s": result.train_seconds, "tune_s": sum(t["seconds"] for t in trials),
            "device": result.device,
            "trials": [{"config": _config_text(c), **t} for c, t in zip(grid, trials,
                                                                        strict=True)]}


# --- scikit-surprise ----------------------------------------------------------------------------
def import_surprise() -> Any:
    """The ``surprise`` module, or exit naming the requirements file that provides it."""
    try:
        import surprise
    except ImportError as err:
        sys.exit(f"scikit-surprise is not installed ({err}); install the benchmark extras with "
                 "'.venv/bin/pip install -r bench/requirements-bench.txt' or pass --no-surprise")
    return surprise


def _triples(table: pa.Table) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return tuple(table.column(c).to_numpy() for c in (USER_IDX, ITEM_IDX, RATING))


def _surprise_fit_predict(sp: Any, spec: tuple[str, dict[str, Any]], train: pa.Table,
                          target: pa.Table, data: BenchData, seed: int) -> tuple[np.ndarray, float]:
    """Fit a surprise algorithm on ``train`` (raw ids = our indices); predict ``target`` rows."""
    import pandas as pd

    cls_name, kwargs = spec
    extra = {"verbose": False} if cls_name == "BaselineOnly" else {"random_state": seed}
    u, i, r = _triples(train)
    frame = pd.DataFrame({"user": u, "item": i, "rating": r})
    trainset = sp.Dataset.load_from_df(frame, sp.Reader(rating_scale=data.rating_scale)) \
        .build_full_trainset()
    algo = getattr(sp, cls_name)(**kwargs, **extra)
    t0 = time.perf_counter()
    algo.fit(trainset)
    seconds = time.perf_counter() - t0
    tu, ti, tr = (a.tolist() for a in _triples(target))
    preds = algo.test(list(zip(tu, ti, tr, strict=True)))  # clipped to the rating scale
    return np.array([p.est for p in preds], dtype=np.float32), seconds


def run_surprise(name: str, sp: Any, data: BenchData, seed: int) -> dict[str, Any]:
    """The same protocol for a surprise grid: select on 81/9, refit on the 90 %, score test."""
    grid = SURPRISE_GRIDS[name]
    trials = []
    if len(grid) > 1:
        valid_r = data.valid.column(RATING).to_numpy()
        for spec in grid:
            t0 = time.perf_counter()
            est, _ = _surprise_fit_predict(sp, spec, data.fit, data.valid, data, seed)
            trials.append({"valid_rmse": float(np.sqrt(np.mean((est - valid_r) ** 2.0))),
                           "seconds": time.perf_counter() - t0})
    best = min(range(len(grid)), key=lambda j: trials[j]["valid_rmse"]) if trials else 0
    est, seconds = _surprise_fit_predict(sp, grid[best], data.full, data.test, data, seed)
    users, _, ratings = _triples(data.test)
    out = score(users, ratings, est, sp.accuracy.fcp)
    cls_name, kwargs = grid[best]
    shown = {**kwargs, **kwargs.get("bsl_options", {})}
    config = " ".join(f"{k}={v}" for k, v in shown.items()
                      if k not in ("cache_ratings", "bsl_options", "method")) or "defaults"
    epochs = kwargs.get("n_epochs", kwargs.get("bsl_options", {}).get("n_epochs", 20))
    return {"model": LABELS[name], "key": name, "config": f"{cls_name} {config}",
            "candidates": len(grid), "valid_rmse": trials[best]["valid_rmse"] if trials else None,
            "epochs": epochs, **out, "ndcg@10": None, "fit_s": seconds,
            "tune_s": sum(t["seconds"] for t in trials), "device": "cpu",
            "trials": [{"config": str(s[1]), **t}
                       for s, t in zip(grid[:len(trials)], trials, strict=True)]}


# --- report -----------------------------------------------------------------------------------
HEAD = ("model", "config", "valid_rmse", "epochs", "test_rmse", "test_mae", "fcp",
        "fcp_surprise", "fcp_user", "fit_s", "tune_s")


def _table_row(row: dict[str, Any]) -> dict[str, str]:
    def num(v: float | None, digits: int = 4) -> str:
        return "–" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{digits}f}"

    return {"model": row["model"], "config": row["config"], "epochs": str(row["epochs"] or "–"),
            "valid_rmse": num(row["valid_rmse"]), "test_rmse": num(row["rmse"]),
            "test_mae": num(row["mae"]), "fcp": num(row["fcp"]),
            "fcp_surprise": num(row["fcp_surprise"]), "fcp_user": num(row["fcp_user"]),
            "fit_s": num(row["fit_s"], 1), "tune_s": num(row["tune_s"], 1)}


def split_summary(data: BenchData) -> dict[str, int]:
    """Row counts and the test rows whose user or item never occurs in the 90 %."""
    full_u, full_i, _ = _triples(data.full)
    test_u, test_i, _ = _triples(data.test)
    cold = ~np.isin(test_u, full_u) | ~np.isin(test_i, full_i)
    return {"users": data.n_users, "items": data.n_items, "fit": data.fit.num_rows,
            "valid": data.valid.num_rows, "test": data.test.num_rows,
            "test_cold_rows": int(cold.sum())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", default=",".join([*GRIDS, *SURPRISE_GRIDS]))
    ap.add_argument("--no-surprise", action="store_true", help="skip the surprise models")
    ap.add_argument("--seed", type=int, default=42, help="split, init and shuffle seed")
    ap.add_argument("--release", type=Path, default=DEFAULT_RELEASE)
    ap.add_argument("--device", default="auto", help="auto (CUDA if present), cpu or cuda")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch default)")
    ap.add_argument("--json", type=Path, help="also write the figures to this file")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if args.threads:
        torch.set_num_threads(args.threads)
    names = [n for n in args.models.split(",") if not (args.no_surprise and n in SURPRISE_GRIDS)]
    unknown = sorted(set(names) - set(GRIDS) - set(SURPRISE_GRIDS))
    if unknown:
        raise SystemExit(f"--models: unknown {unknown}; known: {[*GRIDS, *SURPRISE_GRIDS]}")
    sp = None if args.no_surprise else import_surprise()
    header = machine_line(pick_device(args.device))
    print(f"{header}; load average {os.getloadavg()[0]:.2f}")
    t0 = time.perf_counter()
    data = load_data(args.release, args.seed)
    split = split_summary(data)
    print(f"split (seed {args.seed}): {split}")
    rows = []
    for name in names:
        if name in GRIDS:
            row = run_ours(name, data, args.device, args.seed, sp and sp.accuracy.fcp)
        else:
            row = run_surprise(name, sp, data, args.seed)
        print(f"[{name}] {row['config']}: valid RMSE {_table_row(row)['valid_rmse']}, test "
              f"RMSE {row['rmse']:.4f} MAE {row['mae']:.4f} (fit {row['fit_s']:.1f} s, "
              f"tune {row['tune_s']:.1f} s)", flush=True)
        rows.append(row)
    wall = time.perf_counter() - t0
    print(f"\ntotal {wall:.0f} s; load average {os.getloadavg()[0]:.2f}\n")
    print(markdown_table([_table_row(r) for r in rows], HEAD))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({
            "machine": header, "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "argv": sys.argv, "surprise": None if sp is None else sp.__version__,
            "split": {**split, "seed": args.seed, "ratios": SPLIT_RATIOS},
            "wall_seconds": wall, "rows": rows}, indent=2, default=str))


if __name__ == "__main__":
    main()
