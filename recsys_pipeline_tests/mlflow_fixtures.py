"""Fixtures shared by the train-stage and tuning tests: planted splits, a prepared tiny lake,
and MLflow stores that never leave tmp (imported by their conftest modules).

MLflow reads ``MLFLOW_TRACKING_URI`` / ``MLFLOW_REGISTRY_URI``; both are removed for every
test here (and telemetry is off), so nothing reaches a server, ``./mlruns`` or ``~/.mlflow``.
Creating a SQLite store runs MLflow's migrations (seconds), so one migrated database is made
per session and copied into each test's lake.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

# before mlflow is imported by any test module of this package
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DO_NOT_TRACK", "true")

from recsys_pipeline.training.data import RatingData  # noqa: E402
from recsys_pipeline.training.experiment import ExperimentData  # noqa: E402
from recsys_pipeline_tests.models.planted import Planted  # noqa: E402


@pytest.fixture(autouse=True)
def _no_mlflow_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for key in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "MLFLOW_EXPERIMENT_NAME",
                "MLFLOW_EXPERIMENT_ID", "MLFLOW_RUN_ID", "DAGSTER_HOME"):
        monkeypatch.delenv(key, raising=False)
    yield
    # the code under test must restore the environment it changed
    assert "MLFLOW_TRACKING_URI" not in os.environ


@pytest.fixture(scope="session")
def planted_data(planted: Planted) -> ExperimentData:
    """Planted 48 × 30 ratings: train, and the held-out 20 % halved into valid and test."""
    half = len(planted.valid) // 2
    held = planted.valid
    valid = RatingData(held.users[:half], held.items[:half], held.ratings[:half])
    test = RatingData(held.users[half:], held.items[half:], held.ratings[half:])
    return ExperimentData(planted.train, valid, test, planted.n_users, planted.n_items)


@pytest.fixture(scope="session")
def migrated_mlflow_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty, fully migrated MLflow SQLite database (made once per session)."""
    from mlflow.tracking import MlflowClient

    path = tmp_path_factory.mktemp("mlflow_template") / "mlflow.db"
    MlflowClient(f"sqlite:///{path}").search_experiments()  # creates + migrates
    return path


@pytest.fixture
def mlflow_lake(tmp_lake: Path, migrated_mlflow_db: Path) -> Path:
    """``tmp_lake`` with a fresh copy of the migrated store at ``mlflow/mlflow.db``."""
    (tmp_lake / "mlflow").mkdir(parents=True, exist_ok=True)
    shutil.copy(migrated_mlflow_db, tmp_lake / "mlflow" / "mlflow.db")
    return tmp_lake


@pytest.fixture
def tracker(mlflow_lake: Path):
    """An ``MlflowResource`` on the lake's default SQLite store."""
    from recsys_pipeline.resources import LakeResource
    from recsys_pipeline.tracking import MlflowResource

    return MlflowResource(lake=LakeResource(root=str(mlflow_lake)))


@pytest.fixture(scope="module")
def prepared_lake(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A lake with ingest + prepare materialized once per module from the tiny release."""
    import dagster as dg

    from recsys_pipeline.assets.ingest import ingest_assets
    from recsys_pipeline.assets.prepare import prepare_assets
    from recsys_pipeline.resources import build_resources
    from recsys_pipeline_tests.conftest import write_tiny_release

    lake = tmp_path_factory.mktemp("prepared") / "lake"
    release = write_tiny_release(lake / "raw" / "tiny")
    result = dg.materialize([*ingest_assets, *prepare_assets], resources=build_resources(
        str(lake)), run_config=dg.RunConfig(
        {"raw__movielens_release": {"config": {"path": str(release)}}}))
    assert result.success
    return lake


@pytest.fixture
def lake(prepared_lake: Path, mlflow_lake: Path) -> Path:
    """A private copy of the prepared lake, with a fresh MLflow store."""
    shutil.copytree(prepared_lake, mlflow_lake, dirs_exist_ok=True)
    return mlflow_lake
