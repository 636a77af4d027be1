"""Explicit random generators built from a config seed (no reliance on global ``manual_seed``).

Every random draw in training and data code takes a generator built here. Sub-streams are
derived from ``(seed, *keys)`` through ``numpy.random.SeedSequence`` so that, for example, the
shuffling stream and the dropout stream of one run are independent but both reproducible.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch


def derive_seed(seed: int, *keys: int) -> int:
    """A 63-bit seed for the sub-stream ``keys`` of ``seed``.

    Args:
        seed: The config seed (any non-negative int).
        *keys: Stream identifiers (small non-negative ints), e.g. ``derive_seed(seed, 1)``.

    Returns:
        A non-negative int below 2**63, usable by ``torch.Generator.manual_seed``.
    """
    if seed < 0 or any(k < 0 for k in keys):
        raise ValueError(f"seed and keys must be non-negative, got seed={seed}, keys={keys}")
    state = np.random.SeedSequence([seed, *keys]).generate_state(1, dtype=np.uint64)[0]
    return int(state >> np.uint64(1))


def torch_generator(
    seed: int, *keys: int, device: torch.device | str = "cpu"
) -> torch.Generator:
    """A ``torch.Generator`` on ``device`` seeded from ``(seed, *keys)``.

    Args:
        seed: The config seed.
        *keys: Optional sub-stream identifiers.
        device: Where the generator draws (``torch.randperm(..., device=d, generator=g)`` needs
            a generator on ``d``).

    Returns:
        A freshly seeded generator.
    """
    gen = torch.Generator(device=torch.device(device))
    gen.manual_seed(derive_seed(seed, *keys))
    return gen


def numpy_generator(seed: int, *keys: int) -> np.random.Generator:
    """A ``numpy.random.Generator`` (PCG64) seeded from ``(seed, *keys)``.

    Args:
        seed: The config seed.
        *keys: Optional sub-stream identifiers.

    Returns:
        A freshly seeded generator.
    """
    return np.random.default_rng(np.random.SeedSequence([seed, *keys]))


def global_rng_state(device: torch.device) -> dict[str, torch.Tensor]:
    """The torch global RNG state(s) that modules such as ``nn.Dropout`` draw from.

    Args:
        device: The training device; its CUDA state is included when it is a CUDA device.

    Returns:
        ``{"cpu": ByteTensor}`` plus ``{"cuda": ByteTensor}`` on CUDA (checkpoint-safe tensors).
    """
    state = {"cpu": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


@contextmanager
def scoped_global_rng(
    device: torch.device, seed: int, state: dict[str, torch.Tensor] | None = None
) -> Iterator[None]:
    """Fork the torch global RNG, set it from a saved ``state`` or ``seed``, restore on exit;
    run the body with deterministic algorithms (:func:`deterministic_algorithms`).

    ``nn.Dropout`` and friends take no ``generator`` argument, so a reproducible fit has to set
    the global stream; forking keeps that change from leaking to the caller.

    Args:
        device: The training device (its CUDA stream is forked and set too).
        seed: Streams missing from ``state`` start from ``derive_seed(seed, 0)``.
        state: A dict from :func:`global_rng_state`, e.g. restored from a checkpoint.

    Yields:
        Nothing; the body runs with the set streams.
    """
    state = state or {}
    cuda_devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda_devices), deterministic_algorithms():
        cpu_state = state.get("cpu")
        if cpu_state is None:
            cpu_state = torch_generator(seed, 0).get_state()
        torch.set_rng_state(cpu_state.cpu())
        if device.type == "cuda":
            cuda_state = state.get("cuda")
            if cuda_state is None:
                cuda_state = torch_generator(seed, 0, device=device).get_state()
            torch.cuda.set_rng_state(cuda_state.cpu(), device)
        yield


@contextmanager
def deterministic_algorithms() -> Iterator[None]:
    """Run the body with ``torch.use_deterministic_algorithms(True, warn_only=True)``, then
    restore the caller's setting.

    With several CPU threads some backward kernels (e.g. GRU4Rec's embedding gradients)
    otherwise sum in a thread-dependent order, so two fits of the same seed drift apart;
    ``warn_only`` keeps an op without a deterministic kernel (some CUDA ops) from failing.

    Yields:
        Nothing.
    """
    enabled = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(enabled, warn_only=warn_only)
