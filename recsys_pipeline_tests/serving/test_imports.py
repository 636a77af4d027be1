"""Serving core imports without dagster, mlflow, duckdb or pandas (the GPU box has none)."""

from __future__ import annotations

from recsys_pipeline_tests.light_imports import HEAVY, heavy_imports

MODULES = [f"recsys_pipeline.serving.{m}" for m in (
    "tables", "recommend", "check_user", "similar", "fold_in", "new_user", "projection",
    "onnx_export", "id_scorer", "ranking_serving", "ranking_fold_in", "retrieval")]


def test_serving_imports_only_core_libraries() -> None:
    assert heavy_imports(MODULES, {*HEAVY, "sklearn", "matplotlib", "onnx"}) == []
