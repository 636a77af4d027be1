"""Fixtures for model tests: planted data, a cpu/cuda device, single-threaded torch."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch

from recsys_pipeline_tests.models.planted import Planted, make_planted


@pytest.fixture(scope="session", autouse=True)
def _one_torch_thread() -> Iterator[None]:
    # tiny tensors: thread start-up costs more than it saves and makes timings erratic
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def planted() -> Planted:
    return make_planted()


@pytest.fixture(params=["cpu", "cuda"])
def device(request: pytest.FixtureRequest) -> torch.device:
    if request.param == "cuda" and not torch.cuda.is_available():
        pytest.skip("CUDA not available on this machine")
    return torch.device(request.param)
