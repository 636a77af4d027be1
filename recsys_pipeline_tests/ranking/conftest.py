"""Fixtures for the ranking tests: planted block and cycle data."""

from __future__ import annotations

import pytest

from recsys_pipeline_tests.ranking.planted import Blocks, Cycle, make_blocks, make_cycle


@pytest.fixture(scope="session")
def blocks() -> Blocks:
    return make_blocks()


@pytest.fixture(scope="session")
def cycle() -> Cycle:
    return make_cycle()
