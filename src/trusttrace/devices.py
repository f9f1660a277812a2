"""Which device work runs on: the default one, and where the float64 analysis (probes, mutual information) runs."""

from __future__ import annotations

import torch


def default_device() -> str:
    """The first CUDA device when there is one, else the CPU."""
    return "cuda" if torch.cuda.is_available() else "cpu"


def to_analysis_device(acts: torch.Tensor, device: str | torch.device | None) -> torch.Tensor:
    """`acts` on `device` (default: where they are), or on the CPU when that is Apple's MPS.

    Probes and MI compute in float64, which MPS lacks; a model may still run there.
    """
    target = torch.device(device) if device is not None else acts.device
    return acts.to("cpu" if target.type == "mps" else target)
