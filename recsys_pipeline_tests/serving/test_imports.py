"""Serving core imports without dagster, mlflow, duckdb or pandas (the GPU box has none)."""

from __future__ import annotations

import subprocess
import sys

MODULES = [f"recsys_pipeline.serving.{m}" for m in (
    "tables", "recommend", "check_user", "similar", "fold_in", "new_user", "projection",
    "onnx_export", "id_scorer")]


def test_serving_imports_only_core_libraries() -> None:
    code = (
        "import sys\n"
        + "".join(f"import {m}\n" for m in MODULES)
        + "heavy = {'dagster', 'mlflow', 'duckdb', 'pandas', 'sklearn', 'matplotlib', 'onnx'}\n"
        "print(sorted(heavy & {m.split('.')[0] for m in sys.modules}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
