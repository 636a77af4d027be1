"""The ranking core imports without dagster, mlflow, duckdb or pandas (the GPU box)."""

from __future__ import annotations

from recsys_pipeline_tests.light_imports import heavy_imports

MODULES = [
    "recsys_pipeline.models.ranking_base", "recsys_pipeline.models.autoencoder",
    "recsys_pipeline.models.multvae", "recsys_pipeline.models.ease",
    "recsys_pipeline.models.gru4rec", "recsys_pipeline.models.sasrec",
    "recsys_pipeline.models.two_tower", "recsys_pipeline.models.cooccurrence",
    "recsys_pipeline.training.ranking_loop", "recsys_pipeline.training.ranking_data",
    "recsys_pipeline.evaluation.strong", "recsys_pipeline.evaluation.nextitem",
]


def test_ranking_core_imports_stay_light() -> None:
    assert heavy_imports(MODULES) == []
