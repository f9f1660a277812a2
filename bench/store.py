"""Benchmark: the activation store at an Amber-like size — disk, load time and peak memory.

Writes a synthetic set (`--layers` x `--rows` x `--hidden`, stored in `--dtype`) with
`ActivationStore.save_batches` in batches of 512 rows, as extraction streams them, then reads it
back in fresh processes so that each read's peak memory is its own:

- `all`: every layer, `store.load(record)` (a whole set at once, as a notebook reading a set does);
- `one`: one layer, `store.load(record, layers=[k])` (what building steering vectors reads);
- `probe`: `probe_record`, which fits the probes a chunk of layers at a time;
- `mi`: `mi_record` with the gaussian estimator on at most 500 rows (the estimator is cheap,
  so the time and memory are the store's and the standardisation's);
- `mi-nhsic`: `mi_record` with the reference's nHSIC on at most `--mi-rows` rows, where the
  estimator's m x m inversions (one per layer, and X's and Y's) are most of the time.

`--reads` picks some of them (default: the first four).

Peak memory is the process's peak resident size during the read (VmHWM, reset just before it)
less its resident size before it (Linux); pages of a shard mapped while it is read count too. There is no reference protocol to compare with here: the reference kept every
state of a dataset in one in-memory list. The point is how memory scales with the set.

    python bench/store.py                           # 33 x 4000 x 4096, bfloat16 (about 1.1 GB)
    python bench/store.py --dtype float32 --record  # the same in float32, appended to RESULTS.md
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine_description, record_section  # noqa: E402

from trusttrace.data import DatasetCard, TrustDataset  # noqa: E402
from trusttrace.extract import ActivationBatch  # noqa: E402
from trusttrace.store import ActivationStore  # noqa: E402

BATCH_ROWS = 512
READS = ("all", "one", "probe", "mi", "mi-nhsic")
DEFAULT_READS = READS[:4]


def synthetic_dataset(rows: int) -> TrustDataset:
    """`rows` distinct statements with balanced labels and 20 groups."""
    card = DatasetCard(
        name="bench", dimension="truthfulness", label_1="true", label_0="false", source="synthetic", licence="none",
        grouping="synthetic groups",
    )
    return TrustDataset(
        name="bench",
        statements=[f"statement {i}" for i in range(rows)],
        labels=np.arange(rows) % 2,
        groups=np.arange(rows) % 20,
        card=card,
        source="synthetic",
    )


def batches(layers: int, rows: int, hidden: int, dtype: torch.dtype, seed: int):
    """Random states with a label signal, in batches of BATCH_ROWS rows."""
    g = torch.Generator().manual_seed(seed)
    direction = torch.nn.functional.normalize(torch.randn(hidden, generator=g), dim=0)
    for start in range(0, rows, BATCH_ROWS):
        index = np.arange(start, min(rows, start + BATCH_ROWS))
        sign = torch.from_numpy(2.0 * (index % 2) - 1).float()
        states = torch.randn(layers, len(index), hidden, generator=g) + sign[None, :, None] * direction
        yield ActivationBatch(rows=index, states=states.to(dtype), truncated=0)


def write(root: Path, layers: int, rows: int, hidden: int, dtype: str, seed: int) -> dict:
    store = ActivationStore(root)
    dataset = synthetic_dataset(rows)
    provenance = {"model": "bench", "checkpoint": "bench", "layers": list(range(layers)), "dtype": dtype, "position": "last"}
    start = time.perf_counter()
    record = store.save_batches(batches(layers, rows, hidden, getattr(torch, dtype), seed), dataset, provenance)
    seconds = time.perf_counter() - start
    disk = sum(path.stat().st_size for path in record.path.iterdir())
    return {"key": record.key, "write_s": seconds, "disk_gb": disk / 1e9}


def memory_kb(field: str) -> int:
    """A memory figure of this process from /proc/self/status, in KiB: VmRSS (resident now) or
    VmHWM (the peak since the last reset)."""
    status = Path("/proc/self/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith(f"{field}:")))


def reset_peak() -> None:
    """Start VmHWM again from the current resident size (Linux 4.0+): importing torch and
    transformers peaks higher than most reads, which would otherwise hide them."""
    Path("/proc/self/clear_refs").write_text("5")


def read(root: Path, key: str, kind: str, mi_rows: int) -> dict:
    """One read in this process; its time and peak memory above the imports."""
    from trusttrace.analysis import mi_record, probe_record

    store = ActivationStore(root)
    record = store.get(key)
    reset_peak()
    base = memory_kb("VmRSS")
    start = time.perf_counter()
    if kind == "all":
        store.load(record)
    elif kind == "one":
        store.load(record, layers=[record.layers[len(record.layers) // 2]])
    elif kind == "probe":
        probe_record(store, record, split="grouped", folds=1, device="cpu")
    elif kind == "mi":
        mi_record(store, record, estimator="gaussian", folds=1, max_rows=500, device="cpu")
    else:
        mi_record(store, record, estimator="nhsic", folds=1, max_rows=mi_rows, device="cpu")
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "peak_gb": (memory_kb("VmHWM") - base) * 1024 / 1e9}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=33)
    parser.add_argument("--rows", type=int, default=4000)
    parser.add_argument("--hidden", type=int, default=4096)
    parser.add_argument("--dtype", choices=("bfloat16", "float32"), default="bfloat16")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--reads", nargs="+", choices=READS, default=list(DEFAULT_READS))
    parser.add_argument("--mi-rows", type=int, default=2000, help="rows of the mi-nhsic read (at least 3)")
    parser.add_argument("--record", action="store_true", help="append the table to bench/RESULTS.md")
    parser.add_argument("--read", nargs=3, metavar=("ROOT", "KEY", "KIND"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.mi_rows < 3:
        parser.error(f"--mi-rows {args.mi_rows}: the information plane needs at least 3 rows")
    if args.read:
        print(json.dumps(read(Path(args.read[0]), args.read[1], args.read[2], args.mi_rows)))
        return
    with tempfile.TemporaryDirectory() as folder:
        written = write(Path(folder), args.layers, args.rows, args.hidden, args.dtype, args.seed)
        set_gb = args.layers * args.rows * args.hidden * 4 / 1e9
        lines = [
            f"`python bench/store.py --layers {args.layers} --rows {args.rows} --hidden {args.hidden} --dtype {args.dtype} "
            f"--reads {' '.join(args.reads)}{f' --mi-rows {args.mi_rows}' if 'mi-nhsic' in args.reads else ''}`: "
            f"states of {args.dtype} batches, {set_gb:.2f} GB as float32 in memory, {written['disk_gb']:.2f} GB on disk, "
            f"written in {written['write_s']:.1f} s.",
            "",
            "| read | s | peak memory (GB) | peak / set as float32 |",
            "|---|---|---|---|",
        ]
        for kind in args.reads:
            command = [sys.executable, __file__, "--read", folder, written["key"], kind, "--mi-rows", str(args.mi_rows)]
            done = subprocess.run(command, capture_output=True, text=True)
            if done.returncode:
                sys.exit(f"the {kind} read failed:\n{done.stderr}")
            out = done.stdout
            result = json.loads(out.strip().splitlines()[-1])
            lines.append(f"| {kind} | {result['seconds']:.1f} | {result['peak_gb']:.2f} | {result['peak_gb'] / set_gb:.2f}x |")
            print(lines[-1], flush=True)
    body = "\n".join(lines)
    print(body)
    if args.record:
        record_section(f"store ({args.layers} x {args.rows} x {args.hidden}, {args.dtype}, cpu)", machine_description(), body)


if __name__ == "__main__":
    main()
