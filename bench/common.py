"""Shared helpers of the benchmark scripts: data, machine description, RESULTS.md sections."""

from __future__ import annotations

import datetime as dt
import os
import platform
import time
from pathlib import Path

import torch

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "tracingllm"


def bench_statements(dataset: str, rows: int | None = None) -> list[str]:
    """The statements of a built-in dataset from $TRUSTTRACE_DATA or ../shared/datasets."""
    from trusttrace.data import load_dataset

    data_dir = os.environ.get("TRUSTTRACE_DATA") or str(DEFAULT_DATA)
    statements = load_dataset(dataset, data_dir=data_dir).statements
    return statements[:rows] if rows else statements


def timed(call, device: str | None = None):
    """(result, seconds) of one `call()`, synchronising the GPU around it when one is in use."""
    sync = torch.cuda.is_available() and (device is None or device.startswith("cuda"))
    if sync:
        torch.cuda.synchronize()
    start = time.perf_counter()
    result = call()
    if sync:
        torch.cuda.synchronize()
    return result, time.perf_counter() - start


def machine_description(device: str = "cpu") -> str:
    """CPU model and core count, or the GPU name, with the torch version."""
    if device.startswith("cuda"):
        hardware = torch.cuda.get_device_name(device)
    else:
        model = next(
            (line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name")),
            platform.processor() or platform.machine(),
        )
        hardware = f"{model}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads"
    return f"{hardware}; torch {torch.__version__}; Python {platform.python_version()}"


def record_section(title: str, machine: str, body: str) -> None:
    """Append a dated section to bench/RESULTS.md (never rewrites earlier sections)."""
    today = dt.date.today().isoformat()
    section = f"\n## {title} — {today}\n\nMachine: {machine}\n\n{body}\n"
    if not RESULTS.exists():
        RESULTS.write_text("# Benchmark results\n\nEach section is appended by a script in bench/ (see its --help).\n")
    with open(RESULTS, "a") as handle:
        handle.write(section)
