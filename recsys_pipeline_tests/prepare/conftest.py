"""Fixtures for the prepared-data stage: tiny hand-built frames and the shipped ml-latest-small."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pytest

from recsys_pipeline import schema

ML_SMALL = Path(__file__).resolve().parents[2] / "data_lake/raw/ml-latest-small/ratings.csv"


@pytest.fixture
def rng() -> np.random.Generator:
    """A seeded generator, so every test run sees the same data."""
    return np.random.default_rng(20240601)


@pytest.fixture(scope="session")
def ml_small_ratings() -> pa.Table:
    """ml-latest-small ratings.csv read straight with pyarrow into ``schema.RATINGS_SCHEMA``."""
    if not ML_SMALL.is_file():
        pytest.skip(f"{ML_SMALL} not present (the shipped ml-latest-small is missing)")
    raw = pacsv.read_csv(ML_SMALL)
    return pa.Table.from_arrays(
        [
            raw.column("userId").cast(pa.int32()),
            raw.column("movieId").cast(pa.int32()),
            raw.column("rating").cast(pa.float32()),
            raw.column("timestamp").cast(pa.int64()).cast(schema.TIMESTAMP_TYPE),
        ],
        schema=schema.RATINGS_SCHEMA,
    )
