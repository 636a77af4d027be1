"""The core packages must import without dagster, mlflow, duckdb or pandas (the GPU box)."""

from __future__ import annotations

import subprocess
import sys

MODULES = [
    "recsys_pipeline.models.base", "recsys_pipeline.models.bias", "recsys_pipeline.models.mf",
    "recsys_pipeline.models.popularity", "recsys_pipeline.models.mlp",
    "recsys_pipeline.models.neumf", "recsys_pipeline.models.deepfm",
    "recsys_pipeline.training.loop", "recsys_pipeline.evaluation.topk",
]


def test_core_imports_only_torch_numpy_pyarrow() -> None:
    code = (
        "import sys\n"
        + "".join(f"import {m}\n" for m in MODULES)
        + "heavy = {'dagster', 'mlflow', 'duckdb', 'pandas'}\n"
        "print(sorted(heavy & {m.split('.')[0] for m in sys.modules}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
