"""Fixtures for the prepared-data stage: tiny hand-built frames and the shipped ml-latest-small."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from recsys_pipeline.data.movielens import detect_release, read_table

ML_SMALL = Path(__file__).resolve().parents[2] / "data_lake/raw/ml-latest-small/ratings.csv"


@pytest.fixture
def rng() -> np.random.Generator:
    """A seeded generator, so every test run sees the same data."""
    return np.random.default_rng(20240601)


@pytest.fixture(scope="session")
def ml_small_ratings() -> pa.Table:
    """ml-latest-small ratings.csv read by the project's reader (``schema.RATINGS_SCHEMA``)."""
    if not ML_SMALL.is_file():
        pytest.skip(f"{ML_SMALL} not present (the shipped ml-latest-small is missing)")
    return read_table(detect_release(ML_SMALL.parent), "ratings")
