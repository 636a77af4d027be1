"""The benchmarks the GPU figures come from still run, end to end, on tiny inputs.

The H100 is lent to some sessions only, so these scripts must work unchanged on the day one
is: each runs here as a subprocess (``--device cpu``, small sizes, seconds each) and its
report is checked for every model it should time. No figure is asserted: timings belong in
bench/README.md, not in tests.
"""

from __future__ import annotations

import importlib
import json
import math
import subprocess
import sys
from importlib.util import find_spec
from pathlib import Path

import pytest

from recsys_pipeline_tests.conftest import EMBEDDED, ROOT, write_tiny_release

BENCH = ROOT / "bench"
TWO_TOWER_GRID = 5
PEERS = {"ALS (implicit)": 8, "BM25 kNN (implicit)": 3}  # grid sizes


def _run(script: str, *args: str) -> str:
    proc = subprocess.run([sys.executable, str(BENCH / script), "--device", "cpu", *args],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"{script} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout


def test_ranking_bench_trains_and_scores_every_model(tmp_path: Path) -> None:
    # 300 users: room for the 100 validation and 100 test users of strong generalization
    release = write_tiny_release(tmp_path / "tiny", n_users=300, n_items=120, per_user=25)
    out = tmp_path / "ranking.json"
    _run("ranking_bench.py", "--data", str(release), "--epochs-scale", "0.05",
         "--json", str(out))
    rows = json.loads(out.read_text())["rows"]
    by_model = {(r["task"], r["model"]): r for r in rows}
    # the peer library's rows where it is installed (bench/requirements-bench.txt)
    peers = {(t, m) for t in ("strong", "topk") for m in PEERS} if find_spec("implicit") else set()
    assert set(by_model) == peers | {
        ("strong", m) for m in ("popularity", "EASE", "Mult-VAE", "Mult-DAE", "AutoEncoder")
    } | {("next", m) for m in ("popularity", "co-occurrence", "co-occurrence +pop", "GRU4Rec",
                               "SASRec")} | {
        ("topk", m) for m in ("popularity", "EASE", "two-tower")}
    grid_sizes = {("strong", "EASE"): 5, ("strong", "Mult-VAE"): 2, ("strong", "Mult-DAE"): 4,
                  ("strong", "AutoEncoder"): 3, ("next", "GRU4Rec"): 5, ("next", "SASRec"): 3,
                  ("topk", "EASE"): 4, ("topk", "two-tower"): TWO_TOWER_GRID,
                  **{peer: PEERS[peer[1]] for peer in peers}}
    for (task, model), row in by_model.items():
        metric = "ndcg@100" if task == "strong" else "ndcg@10"
        assert 0.0 < row["test"][metric] <= 1.0, (model, row["test"])
        if task == "strong":  # 100 held out; one can lose every positive to the filters
            assert 90 <= row["test"]["n_users"] <= 100, model
        elif task == "next":
            assert row["test"]["n_rows"] == 300, model  # one last item per user
            assert set(row["test"]) >= {f"{m}@{k}" for m in ("hr", "ndcg", "map", "mrr")
                                        for k in (1, 5, 10, 20)}
        else:  # users with a test rating >= 4
            assert 0 < row["test"]["n_users"] <= 300, model
            assert set(row["test"]) >= {f"{m}@{k}" for m in ("recall", "ndcg", "coverage")
                                        for k in (10, 20, 100)}
        if (task, model) in grid_sizes:
            assert len(row["grid"]) == grid_sizes[task, model], model
            # the picked point is the grid's best on validation
            assert row["valid"] == max(g["valid"] for g in row["grid"]), model
        if model in ("Mult-VAE", "Mult-DAE", "AutoEncoder", "GRU4Rec", "SASRec", "two-tower"):
            assert 1 <= row["best_epoch"] <= row["epochs"]
            assert row["samples_per_s"] > 0 and row["epoch_seconds"] > 0, model


def test_ranking_scale_bench_times_every_trained_model(tmp_path: Path) -> None:
    out = tmp_path / "scale.json"
    _run("ranking_scale_bench.py", "--rows", "20000", "--steps", "2", "--score-users", "64",
         "--json", str(out))
    report = json.loads(out.read_text())
    assert report["device"] == "cpu"
    steps = {r["step"]: r for r in report["rows"]}
    for model in ("Mult-VAE", "autoencoder", "GRU4Rec", "SASRec", "two-tower"):
        timed = [r for name, r in steps.items() if name.startswith(f"{model}: ")
                 and "steps" in name]
        assert len(timed) == 1, (model, sorted(steps))
        assert timed[0]["samples_per_s"] > 0 and timed[0]["epoch_seconds"] is not None
        assert f"{model}: validation" in steps
    assert "EASE: fit (float64)" in steps


def test_mf_speed_bench_all_models_score_on_the_training_device(tmp_path: Path) -> None:
    out = tmp_path / "speed.json"
    _run("mf_speed_bench.py", "--all-models", "--rows", "20000", "--users", "300", "--items",
         "200", "--valid-rows", "2000", "--batch-size", "4096", "--json", str(out))
    rows = {r["model"]: r for r in json.loads(out.read_text())["rows"]}
    assert set(rows) == {"bias", "popularity", "mf", "mlp", "neumf", "deepfm"}
    for model, row in rows.items():
        assert row["device"] == "cpu" and row["score_on_device"] is True, model
        assert row["samples_per_s"] > 0, model
        if model != "popularity":  # the others predict ratings
            assert math.isfinite(row["valid_rmse"]) and 0 < row["valid_rmse"] < 2, model


def test_serving_bench_runs_on_the_embedded_release() -> None:
    if not (EMBEDDED / "ratings.csv").is_file():
        pytest.skip(f"embedded release missing at {EMBEDDED}")
    out = _run("serving_bench.py", "--synthetic-users", "500", "--synthetic-items", "300",
               "--repeats", "1", "--seen-per-user", "10")
    assert "ml-latest-small top-100: 610 users x 9724 items" in out
    assert "fold-in MF (closed form), 20 ratings" in out
    assert "result (500, 100)" in out


def test_ranking_scale_bench_times_the_full_presets_models(monkeypatch: pytest.MonkeyPatch
                                                           ) -> None:
    """The scale bench writes the full preset's shapes out (no dagster on the GPU machine):
    each must be what ``RANKING_PRESETS["full"]`` builds through the assets' own configs."""
    from recsys_pipeline.assets.ranking_configs import (
        RANKING_PRESETS,
        AutoEncoderModelConfig,
        EASEModelConfig,
        GRU4RecModelConfig,
        MultVAEModelConfig,
        SASRecModelConfig,
        TwoTowerModelConfig,
    )

    monkeypatch.syspath_prepend(str(BENCH))
    scale_bench = importlib.import_module("ranking_scale_bench")
    full = RANKING_PRESETS["full"]["ops"]
    shapes = scale_bench.full_preset("ce")
    for name, asset, cls in (("Mult-VAE", "multvae", MultVAEModelConfig),
                             ("autoencoder", "autoencoder", AutoEncoderModelConfig),
                             ("GRU4Rec", "gru4rec", GRU4RecModelConfig),
                             ("SASRec", "sasrec", SASRecModelConfig),
                             ("two-tower", "two_tower", TwoTowerModelConfig)):
        preset = cls(**full[f"models__{asset}_model"]["config"])
        assert shapes[name] == (preset.to_core(), preset.batch_size, preset.lr), name
    ease = EASEModelConfig(**full["models__ease_model"]["config"])
    assert scale_bench.FULL_EASE_L2 == ease.l2
