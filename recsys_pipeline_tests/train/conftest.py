"""Fixtures for train-stage tests (shared with the tuning tests: ``mlflow_fixtures``)."""

from recsys_pipeline_tests.mlflow_fixtures import (  # noqa: F401 (pytest finds them here)
    _no_mlflow_env,
    lake,
    migrated_mlflow_db,
    mlflow_lake,
    planted_data,
    prepared_lake,
    tracker,
)
