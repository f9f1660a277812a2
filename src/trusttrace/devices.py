"""Which device work runs on: the default one, whether a named one is usable here, and where the float64 analysis (probes, mutual information) runs."""

from __future__ import annotations

from pathlib import Path

import torch

from trusttrace.errors import ModelError


# Where a container's cgroup v2 memory limit and use are read.
CGROUP = Path("/sys/fs/cgroup")


def default_device() -> str:
    """The first CUDA device when there is one, else the CPU."""
    return "cuda" if torch.cuda.is_available() else "cpu"


def free_memory(device: torch.device) -> int | None:
    """Bytes a new allocation can take on `device`, None where that cannot be known: on a GPU the
    free memory plus what torch's cache holds unused; on a Linux host MemAvailable, or less where
    a container's memory limit (cgroup v2) leaves less."""
    if device.type == "cuda":
        cached = torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
        return int(torch.cuda.mem_get_info(device)[0]) + cached
    if device.type != "cpu":
        return None
    try:
        with open("/proc/meminfo") as handle:
            fields = dict(line.split(":", 1) for line in handle)
        available = int(fields["MemAvailable"].split()[0]) * 1024
    except (OSError, KeyError, ValueError):
        return None
    headroom = _container_headroom()
    return available if headroom is None else min(available, headroom)


def _container_headroom() -> int | None:
    """Bytes left under this process's cgroup v2 memory limit; None without one."""
    try:
        limit = (CGROUP / "memory.max").read_text().strip()
        used = int((CGROUP / "memory.current").read_text())
    except (OSError, ValueError):
        return None
    return None if limit == "max" else max(int(limit) - used, 0)


def to_analysis_device(acts: torch.Tensor, device: str | torch.device | None) -> torch.Tensor:
    """`acts` on `device` (default: where they are), or on the CPU when that is Apple's MPS.

    Probes and MI compute in float64, which MPS lacks; a model may still run there.
    """
    target = torch.device(check_device(device)) if device is not None else acts.device
    return acts.to("cpu" if target.type == "mps" else target)


def check_device(device: str | None, option: str = "device") -> str | None:
    """`device` unchanged when torch can use it here (None: the default device), else a ModelError
    naming `option` (the CLI's --device, a config's device).

    Checked up front because torch's own errors come late, as tracebacks, or disguised as a
    model-loading failure.
    """
    if device is None:
        return None
    try:
        parsed = torch.device(device)
    except (RuntimeError, ValueError):
        raise ModelError(f"{option} {device!r}: not a device; expected cpu, cuda, cuda:N or mps") from None
    if parsed.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ModelError(f"{option} {device!r}: CUDA is not available here (torch {torch.__version__}); use cpu")
        if parsed.index is not None and parsed.index >= count:
            raise ModelError(f"{option} {device!r}: there are only {count} CUDA device(s) (cuda:0..cuda:{count - 1})")
    elif parsed.type == "mps":
        if not torch.backends.mps.is_available():
            raise ModelError(f"{option} {device!r}: MPS is not available here; use cpu")
    elif parsed.type != "cpu":
        raise ModelError(f"{option} {device!r}: unsupported device type {parsed.type!r}; expected cpu, cuda, cuda:N or mps")
    return device
