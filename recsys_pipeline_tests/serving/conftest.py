"""Fixtures for serving tests: one planted world with a trained model of every family."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch

from recsys_pipeline_tests.serving.planted import World, make_world


@pytest.fixture(scope="session", autouse=True)
def _one_torch_thread() -> Iterator[None]:
    # tiny tensors: thread start-up costs more than it saves
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def world() -> World:
    return make_world()
