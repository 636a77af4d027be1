"""The core packages must import without dagster, mlflow, duckdb or pandas (the GPU box)."""

from __future__ import annotations

from recsys_pipeline_tests.light_imports import heavy_imports

MODULES = [
    "recsys_pipeline.models.base", "recsys_pipeline.models.bias", "recsys_pipeline.models.mf",
    "recsys_pipeline.models.popularity", "recsys_pipeline.models.mlp",
    "recsys_pipeline.models.neumf", "recsys_pipeline.models.deepfm",
    "recsys_pipeline.training.loop", "recsys_pipeline.evaluation.topk",
    "recsys_pipeline.evaluation.rescore", "recsys_pipeline.tuning.study",
    "recsys_pipeline.tuning.space", "recsys_pipeline.data.new_users",
]


def test_core_imports_only_torch_numpy_pyarrow() -> None:
    assert heavy_imports(MODULES) == []
