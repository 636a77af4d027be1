"""Fixtures for export tests: the planted serving world, small ranking models, a tiny lake
built from the world (no pipeline run), and MLflow stores that never leave tmp."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DO_NOT_TRACK", "true")

from recsys_pipeline.data.encode import save_id_maps  # noqa: E402
from recsys_pipeline.data.lake import write_parquet  # noqa: E402
from recsys_pipeline_tests.serving.planted import World, make_world  # noqa: E402

MLFLOW_ENV = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "MLFLOW_EXPERIMENT_NAME",
              "MLFLOW_EXPERIMENT_ID", "MLFLOW_RUN_ID")
LAKE_MODELS = ("mf", "deepfm", "bias")


@pytest.fixture(autouse=True)
def _no_mlflow_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for key in MLFLOW_ENV:
        monkeypatch.delenv(key, raising=False)
    yield
    assert "MLFLOW_TRACKING_URI" not in os.environ  # the code under test restored it


@pytest.fixture(scope="session")
def world() -> World:
    return make_world()


@pytest.fixture(scope="session")
def fold_in_history() -> sp.csr_matrix:
    """Binary rows of 12 users × 9 item columns (every user has at least one item)."""
    rng = np.random.default_rng(5)
    dense = (rng.random((12, 9)) < 0.35).astype(np.float32)
    dense[np.arange(12), np.arange(12) % 9] = 1.0
    return sp.csr_matrix(dense)


@pytest.fixture(scope="session")
def ranking_models(fold_in_history: sp.csr_matrix) -> dict:
    """Untrained but seeded ranking models with a stored history (shapes are what matters)."""
    from recsys_pipeline.models.autoencoder import AutoEncoderConfig, AutoEncoderModel
    from recsys_pipeline.models.ease import EASEConfig, EASEModel
    from recsys_pipeline.models.multvae import MultVAEConfig, MultVAEModel
    from recsys_pipeline.models.two_tower import TwoTowerConfig, TwoTowerModel

    n_users, n_items = fold_in_history.shape
    models = {"ease": EASEModel.fit(fold_in_history, EASEConfig(), device="cpu"),
              "autoencoder": AutoEncoderModel(n_users, n_items, AutoEncoderConfig()),
              "multvae": MultVAEModel(n_users, n_items, MultVAEConfig()),
              "two_tower": TwoTowerModel(n_users, n_items, TwoTowerConfig())}
    for name in ("autoencoder", "multvae"):
        models[name].set_history(fold_in_history)
    return {k: m.eval() for k, m in models.items()}


@pytest.fixture(scope="session")
def migrated_mlflow_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty, fully migrated MLflow SQLite database (made once per session)."""
    from mlflow.tracking import MlflowClient

    path = tmp_path_factory.mktemp("mlflow_template") / "mlflow.db"
    MlflowClient(f"sqlite:///{path}").search_experiments()
    return path


@pytest.fixture
def world_lake(tmp_lake: Path, world: World, migrated_mlflow_db: Path) -> Path:
    """A lake holding what serving reads (movies, id maps, train split, three model folders)
    and a fresh MLflow store, built from the planted world."""
    write_parquet(world.movies, tmp_lake / "clean" / "movies.parquet")
    save_id_maps(world.maps, tmp_lake / "prepared")
    write_parquet(world.train, tmp_lake / "prepared" / "splits" / "train.parquet")
    for family in LAKE_MODELS:
        world.models[family].save(tmp_lake / "models" / f"{family}_model")
    (tmp_lake / "mlflow").mkdir()
    shutil.copy(migrated_mlflow_db, tmp_lake / "mlflow" / "mlflow.db")
    return tmp_lake


@pytest.fixture
def tracker(world_lake: Path):
    from recsys_pipeline.resources import LakeResource
    from recsys_pipeline.tracking import MlflowResource

    return MlflowResource(lake=LakeResource(root=str(world_lake)))
