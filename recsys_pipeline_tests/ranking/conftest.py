"""Fixtures for the ranking tests: planted block and cycle data, single-threaded torch."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch

from recsys_pipeline_tests.ranking.planted import Blocks, Cycle, make_blocks, make_cycle


@pytest.fixture(scope="session", autouse=True)
def _one_torch_thread() -> Iterator[None]:
    # tiny tensors: thread start-up costs more than it saves
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def blocks() -> Blocks:
    return make_blocks()


@pytest.fixture(scope="session")
def cycle() -> Cycle:
    return make_cycle()
