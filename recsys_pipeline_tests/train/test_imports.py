"""The train-stage core imports without dagster, mlflow, duckdb or pandas (the GPU box)."""

from __future__ import annotations

import subprocess
import sys

CORE = ["recsys_pipeline.training.experiment", "recsys_pipeline.evaluation.selection",
        "recsys_pipeline.models.export", "recsys_pipeline.data.item_features"]


def test_train_core_imports_stay_light() -> None:
    code = ("import sys\n" + "".join(f"import {m}\n" for m in CORE)
            + "print(sorted({'dagster', 'mlflow', 'duckdb', 'pandas', 'matplotlib'}"
              " & {m.split('.')[0] for m in sys.modules}))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
