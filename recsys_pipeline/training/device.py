"""Pick the torch device once: CUDA when present, else CPU."""

from __future__ import annotations

import logging
import platform
from pathlib import Path

import torch

logger = logging.getLogger(__name__)

DEVICE_CHOICES: tuple[str, ...] = ("auto", "cpu", "cuda")


def pick_device(preference: str = "auto") -> torch.device:
    """Resolve a device preference to a ``torch.device``.

    Args:
        preference: ``"auto"`` (CUDA when available, else CPU), ``"cpu"``, ``"cuda"`` or an
            indexed CUDA device such as ``"cuda:1"``.

    Returns:
        The device to keep model and epoch tensors on.

    Raises:
        ValueError: If the preference is unknown, or CUDA is requested but not available.
    """
    pref = preference.strip().lower()
    if pref == "auto":
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    elif pref == "cpu":
        device = torch.device("cpu")
    elif pref == "cuda" or pref.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise ValueError(
                f"device={preference!r} requested but CUDA is not available "
                f"(torch {torch.__version__}, built with CUDA {torch.version.cuda}); "
                "use device='auto' or 'cpu'"
            )
        device = torch.device(pref)
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(
                f"device={preference!r} requested but only {torch.cuda.device_count()} "
                "CUDA device(s) are visible"
            )
    else:
        raise ValueError(f"device={preference!r} is not one of {DEVICE_CHOICES} or 'cuda:N'")
    logger.debug("device preference %r -> %s", preference, device)
    return device


def synchronize(device: torch.device) -> None:
    """Wait for queued kernels on ``device`` (so wall-clock timings are honest); no-op on CPU."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def cpu_name() -> str:
    """The CPU model (``/proc/cpuinfo`` "model name" on Linux), else the platform's word."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def model_device(model: torch.nn.Module) -> torch.device:
    """The device of the model's first parameter or buffer (CPU for an empty model)."""
    for tensor in (*model.parameters(), *model.buffers()):
        return tensor.device
    return torch.device("cpu")


def available_memory(device: torch.device) -> int | None:
    """Bytes a new allocation can take on ``device``, or None where that is unknown.

    CUDA: the driver's free memory plus what torch's caching allocator holds unused. CPU:
    ``MemAvailable`` of ``/proc/meminfo`` (Linux; None elsewhere), or less where the process's
    memory cgroup (a container's limit) leaves less (:func:`cgroup_available_memory`).
    """
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device))
    known = [v for v in (_meminfo_available(), cgroup_available_memory()) if v is not None]
    return min(known) if known else None


def _meminfo_available() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


_CGROUP_FILES = (  # (limit, usage, reclaimable page-cache key of memory.stat): v2, then v1
    ("memory.max", "memory.current", "inactive_file"),
    ("memory/memory.limit_in_bytes", "memory/memory.usage_in_bytes", "total_inactive_file"),
)


def cgroup_available_memory(root: Path = Path("/sys/fs/cgroup")) -> int | None:
    """Limit minus working set (usage less inactive page cache) of the memory cgroup at
    ``root`` (v2 or v1); None without a cgroup limit or where the files cannot be read."""
    for limit_name, usage_name, cache_key in _CGROUP_FILES:
        try:
            limit = (root / limit_name).read_text().strip()
            if limit == "max" or int(limit) >= 2**60:  # unlimited
                continue
            usage = int((root / usage_name).read_text())
            stat_path = root / Path(usage_name).parent / "memory.stat"
            cache = 0
            for line in stat_path.read_text().splitlines() if stat_path.is_file() else ():
                key, _, value = line.partition(" ")
                if key == cache_key:
                    cache = int(value)
            return max(0, int(limit) - (usage - cache))
        except (OSError, ValueError):
            continue
    return None
