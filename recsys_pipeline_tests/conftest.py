"""Shared fixtures: a seeded rng, a tmp lake with its resources, the embedded release, a
tiny synthetic release in the ml-latest CSV layout, planted rating data, the ranking tests'
planted blocks and cycle (``ranking.planted``), a cpu/cuda device,
and single-threaded torch."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from recsys_pipeline_tests.models.planted import Planted, make_planted
from recsys_pipeline_tests.ranking.planted import Blocks, Cycle, make_blocks, make_cycle

ROOT = Path(__file__).resolve().parents[1]
EMBEDDED = ROOT / "data_lake" / "raw" / "ml-latest-small"


@pytest.fixture(scope="session", autouse=True)
def _one_torch_thread() -> Iterator[None]:
    # tiny tensors: thread start-up costs more than it saves, and two xdist workers on two
    # cores must not each start a thread per core
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def planted() -> Planted:
    return make_planted()


@pytest.fixture(scope="session")
def blocks() -> Blocks:
    return make_blocks()


@pytest.fixture(scope="session")
def cycle() -> Cycle:
    return make_cycle()


@pytest.fixture(params=["cpu", "cuda"])
def device(request: pytest.FixtureRequest) -> torch.device:
    if request.param == "cuda" and not torch.cuda.is_available():
        pytest.skip("CUDA not available on this machine")
    return torch.device(request.param)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


@pytest.fixture
def tmp_lake(tmp_path: Path) -> Path:
    lake = tmp_path / "lake"
    (lake / "raw").mkdir(parents=True)
    return lake


@pytest.fixture
def lake_resources(tmp_lake: Path, monkeypatch: pytest.MonkeyPatch) -> dict:
    """Every resource of the project, pointed at the tmp lake (MLflow store included)."""
    from recsys_pipeline.assets.ranking import ranking_resources
    from recsys_pipeline.model_io import build_train_resources
    from recsys_pipeline.resources import build_resources

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_REGISTRY_URI", raising=False)
    return {**build_resources(str(tmp_lake)), **build_train_resources(str(tmp_lake)),
            **ranking_resources(str(tmp_lake))}


@pytest.fixture
def embedded_release() -> Path:
    if not (EMBEDDED / "ratings.csv").is_file():
        pytest.skip(f"embedded release missing at {EMBEDDED}")
    return EMBEDDED


def write_tiny_release(folder: Path, n_users: int = 30, n_items: int = 40,
                       per_user: int = 25, seed: int = 7) -> Path:
    """An ml-latest-layout release: every user rates ``per_user`` distinct items (half stars),
    items have titles with years and genres; deterministic for a seed."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    lines = ["userId,movieId,rating,timestamp"]
    t0 = 1_000_000_000
    for u in range(1, n_users + 1):
        items = rng.choice(n_items, size=per_user, replace=False) + 1
        stars = rng.integers(1, 11, size=per_user) / 2
        times = t0 + np.sort(rng.integers(0, 10_000_000, size=per_user))
        lines += [f"{u},{i},{s:.1f},{t}" for i, s, t in zip(items, stars, times, strict=True)]
    (folder / "ratings.csv").write_text("\n".join(lines) + "\n")
    genres = ["Action", "Comedy", "Drama", "Sci-Fi"]
    movie_lines = ["movieId,title,genres"] + [
        f'{i},"Movie {i}, The ({1980 + i})",{genres[i % 4]}|{genres[(i + 1) % 4]}'
        for i in range(1, n_items + 1)
    ]
    (folder / "movies.csv").write_text("\n".join(movie_lines) + "\n")
    return folder


@pytest.fixture
def tiny_release(tmp_lake: Path) -> Path:
    return write_tiny_release(tmp_lake / "raw" / "tiny")
