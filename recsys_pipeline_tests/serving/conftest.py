"""Fixtures for serving tests: one planted world with a trained model of every family."""

from __future__ import annotations

import pytest

from recsys_pipeline_tests.serving.planted import World, make_world


@pytest.fixture(scope="session")
def world() -> World:
    return make_world()
