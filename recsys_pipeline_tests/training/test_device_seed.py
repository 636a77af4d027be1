"""Device choice and explicit random generators."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from recsys_pipeline.training.device import (
    available_memory,
    cgroup_available_memory,
    pick_device,
)
from recsys_pipeline.training.seed import (
    derive_seed,
    numpy_generator,
    scoped_global_rng,
    torch_generator,
)


def test_auto_picks_cuda_exactly_when_available() -> None:
    assert pick_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert pick_device("CPU") == torch.device("cpu")


def test_cuda_request_without_cuda_raises() -> None:
    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    with pytest.raises(ValueError, match="'cuda' requested but CUDA is not available"):
        pick_device("cuda")


def test_unknown_device_raises() -> None:
    with pytest.raises(ValueError, match="device='tpu' is not one of"):
        pick_device("tpu")


@pytest.mark.skipif(not Path("/proc/meminfo").is_file(), reason="reads Linux /proc/meminfo")
def test_available_memory_reads_meminfo() -> None:
    line = next(x for x in Path("/proc/meminfo").read_text().splitlines()
                if x.startswith("MemTotal:"))
    free = available_memory(torch.device("cpu"))
    assert isinstance(free, int) and 0 < free <= int(line.split()[1]) * 1024


def test_cgroup_limit_minus_working_set(tmp_path: Path) -> None:
    v2 = tmp_path / "v2"
    v2.mkdir()
    (v2 / "memory.max").write_text("8589934592\n")  # 8 GiB
    (v2 / "memory.current").write_text(str(3 * 2**30))
    (v2 / "memory.stat").write_text(f"anon 123\ninactive_file {2**30}\nactive_file 5\n")
    assert cgroup_available_memory(v2) == 8 * 2**30 - (3 * 2**30 - 2**30)  # cache reclaimable
    (v2 / "memory.max").write_text("max\n")
    assert cgroup_available_memory(v2) is None  # unlimited
    v1 = tmp_path / "v1" / "memory"
    v1.mkdir(parents=True)
    (v1 / "memory.limit_in_bytes").write_text(str(4 * 2**30))
    (v1 / "memory.usage_in_bytes").write_text(str(5 * 2**30))  # over the limit: nothing left
    (v1 / "memory.stat").write_text("total_inactive_file 0\n")
    assert cgroup_available_memory(tmp_path / "v1") == 0
    (v1 / "memory.limit_in_bytes").write_text("9223372036854771712")  # v1's "unlimited"
    assert cgroup_available_memory(tmp_path / "v1") is None
    assert cgroup_available_memory(tmp_path / "missing") is None


def test_derived_streams_are_reproducible_and_distinct() -> None:
    assert derive_seed(5, 1) == derive_seed(5, 1)
    assert len({derive_seed(5), derive_seed(5, 1), derive_seed(5, 2), derive_seed(6, 1)}) == 4
    a = torch.randperm(50, generator=torch_generator(5, 1))
    assert torch.equal(a, torch.randperm(50, generator=torch_generator(5, 1)))
    assert not torch.equal(a, torch.randperm(50, generator=torch_generator(5, 2)))
    assert np.array_equal(numpy_generator(5).integers(0, 100, 10),
                          numpy_generator(5).integers(0, 100, 10))


def test_scoped_global_rng_is_reproducible_and_does_not_leak() -> None:
    before = torch.get_rng_state()
    cpu = torch.device("cpu")
    with scoped_global_rng(cpu, seed=3):
        first = torch.rand(4)
    with scoped_global_rng(cpu, seed=3):
        second = torch.rand(4)
    assert torch.equal(first, second)
    assert torch.equal(torch.get_rng_state(), before)


def test_fits_run_with_deterministic_algorithms_and_restore_the_setting(planted) -> None:
    from recsys_pipeline.models.mf import MFConfig, MFModel
    from recsys_pipeline.training.loop import TrainConfig, fit

    assert not torch.are_deterministic_algorithms_enabled()
    seen = []
    model = MFModel(planted.n_users, planted.n_items, MFConfig(n_factors=4))
    fit(model, planted.train, planted.valid, TrainConfig(epochs=2, batch_size=256, device="cpu"),
        on_epoch=lambda e, m: seen.append((torch.are_deterministic_algorithms_enabled(),
                                           torch.is_deterministic_algorithms_warn_only_enabled())))
    assert seen == [(True, True), (True, True)]
    assert not torch.are_deterministic_algorithms_enabled()
    with scoped_global_rng(torch.device("cpu"), seed=1):
        assert torch.are_deterministic_algorithms_enabled()
    assert not torch.are_deterministic_algorithms_enabled()
