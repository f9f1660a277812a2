"""Benchmark: per-checkpoint wall time of a sweep against the reference pipeline, and prefetch overlap.

Part 1, on the same model and data in one run: the reference pipeline per checkpoint (for each
of the five datasets: one statement per forward in fp32 with a hook on every block, one
scikit-learn `LogisticRegression` per layer on the paper split, and nHSIC layer by layer in
NumPy) against `trusttrace run` (batched extraction, all-layer probes with 5 grouped folds and
baselines, batched nHSIC), over a local suite of Pythia-70m-shaped checkpoints (random weights).

Part 2: the same sweep where each checkpoint arrives through a simulated slow download
(a sleep), with and without prefetching the next checkpoint during compute (fp32).

    python bench/sweep.py                       # 200 rows per dataset, 2 checkpoints
    python bench/sweep.py --rows 400 --record   # append the results to bench/RESULTS.md
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import DEFAULT_DATA, machine_description, record_section, timed  # noqa: E402
from extract import model_config, reference_extract  # noqa: E402
from mi import reference_plane  # noqa: E402

from trusttrace.checkpoints import Checkpoint  # noqa: E402
from trusttrace.config import SweepConfig  # noqa: E402
from trusttrace.data import load_dataset  # noqa: E402
from trusttrace.probes import fit_probes  # noqa: E402
from trusttrace.splits import paper_split  # noqa: E402
from trusttrace.sweep import Sweep  # noqa: E402
from trusttrace.tiny import train_tokenizer  # noqa: E402

DATASETS = ("truthfulqa", "toxigen", "confaide", "stereoset", "sst2")
PYTHIA_VOCAB = 50304


def write_subsets(data_dir: str, rows: int, folder: Path) -> list[Path]:
    """The first `rows` statements of each study dataset as a CSV (groups kept)."""
    paths = []
    for name in DATASETS:
        dataset = load_dataset(name, data_dir=data_dir)
        path = folder / f"{name}.csv"
        dataset.subset(range(min(rows, len(dataset)))).to_frame().to_csv(path, index=False)
        paths.append(path)
    return paths


def make_suite(folder: Path, tokenizer, count: int) -> list[Path]:
    """`count` Pythia-70m-shaped checkpoints (vocabulary 50304) with different random weights."""
    paths = []
    for index in range(count):
        torch.manual_seed(index)
        model = AutoModelForCausalLM.from_config(model_config("pythia-70m", PYTHIA_VOCAB))
        path = folder / f"step_{index * 1000}"
        model.save_pretrained(path)
        tokenizer.save_pretrained(path)
        paths.append(path)
    return paths


def reference_checkpoint(path: Path, datasets) -> float:
    """Seconds the reference pipeline takes for one checkpoint over every dataset."""
    start = time.perf_counter()
    model = AutoModelForCausalLM.from_pretrained(path).float().eval()
    tokenizer = AutoTokenizer.from_pretrained(path)
    for dataset in datasets:
        acts = reference_extract(model, tokenizer, dataset.statements)
        fit_probes(acts, dataset.labels, split="paper", backend="sklearn")
        train = paper_split(len(dataset.labels))[0]
        z = acts.double()
        z = ((z - z.mean(1, keepdim=True)) / z.std(1, keepdim=True))[:, train].numpy()
        reference_plane(z, dataset.labels[train])
    return time.perf_counter() - start


def sweep_config(
    workspace: Path, suite: Path, datasets: list[Path], prefetch: bool, dtype: str = "float32", checkpoints="all"
) -> SweepConfig:
    return SweepConfig(
        workspace=workspace, suite=f"local:{suite}", datasets=[str(p) for p in datasets], dtype=dtype,
        device="cpu", stages=["extract", "probes", "mi"], prefetch=prefetch, checkpoints=checkpoints,
    )


def sweep_seconds(workspace: Path, suite: Path, datasets: list[Path], checkpoint: str, dtype: str) -> float:
    """Wall time of `trusttrace run` adding one checkpoint to a workspace (earlier ones are done)."""
    sweep = Sweep(sweep_config(workspace, suite, datasets, False, dtype, [checkpoint]), progress=False)
    _, seconds = timed(sweep.run)
    return seconds


def slow_sweep(workspace: Path, suite: Path, datasets: list[Path], delay: float, prefetch: bool) -> float:
    """Wall time of a sweep whose checkpoints each take `delay` seconds to 'download'."""
    folders = {p.name: p for p in sorted(suite.iterdir())}

    def fetch(checkpoint: Checkpoint) -> Path:
        time.sleep(delay)
        return folders[checkpoint.name]

    sweep = Sweep(sweep_config(workspace, suite, datasets, prefetch), fetcher=fetch, progress=False)
    sweep.checkpoints = [
        Checkpoint(c.name, "simulated/hub-model", "main", c.step, c.tokens) for c in sweep.checkpoints
    ]
    _, seconds = timed(sweep.run)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=200, help="statements per dataset (the first N)")
    parser.add_argument("--checkpoints", type=int, default=2)
    parser.add_argument("--data-dir", default=str(DEFAULT_DATA))
    parser.add_argument("--record", action="store_true", help="append the results to bench/RESULTS.md")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "data").mkdir()
        paths = write_subsets(args.data_dir, args.rows, root / "data")
        datasets = [load_dataset(p) for p in paths]
        tokenizer = train_tokenizer([s for d in datasets for s in d.statements], vocab_size=30000)
        suite = root / "suite"
        checkpoints = make_suite(suite, tokenizer, args.checkpoints)

        # Interleaved per checkpoint (reference, then trusttrace fp32 and bf16 resuming their
        # workspaces), so a change in the machine's load hits all three alike.
        reference, ours_fp32, ours_bf16 = [], [], []
        for path in checkpoints:
            reference.append(reference_checkpoint(path, datasets))
            ours_fp32.append(sweep_seconds(root / "ws", suite, paths, path.name, "float32"))
            ours_bf16.append(sweep_seconds(root / "ws-bf16", suite, paths, path.name, "bfloat16"))
        per_reference, ours, bf16 = (float(np.mean(times)) for times in (reference, ours_fp32, ours_bf16))

        delay = ours
        sequential = slow_sweep(root / "ws-seq", suite, paths, delay, prefetch=False)
        overlapped = slow_sweep(root / "ws-pre", suite, paths, delay, prefetch=True)

    n = sum(len(d) for d in datasets)
    lines = [
        f"- {len(checkpoints)} Pythia-70m-shaped checkpoints (random weights, vocabulary {PYTHIA_VOCAB}), five datasets x first {args.rows} rows "
        f"= {n} statements; trusttrace: default protocol (5 grouped folds + baselines), nHSIC; reference: paper split, "
        "one LogisticRegression per layer, per-layer NumPy nHSIC",
        "",
        "| pipeline | s per checkpoint | speed-up |",
        "|---|---|---|",
        f"| reference (1 statement/forward fp32, sklearn loop, per-layer nHSIC) | {per_reference:.1f} | 1.0x |",
        f"| trusttrace run, fp32 (extract + probes + mi) | {ours:.1f} | {per_reference / ours:.1f}x |",
        f"| trusttrace run, bf16 extraction | {bf16:.1f} | {per_reference / bf16:.1f}x |",
        "",
        "Per checkpoint, in the order run (s): reference " + ", ".join(f"{t:.1f}" for t in reference)
        + "; fp32 " + ", ".join(f"{t:.1f}" for t in ours_fp32) + "; bf16 " + ", ".join(f"{t:.1f}" for t in ours_bf16)
        + ". The first checkpoint also fits each dataset's baselines and splits, which later ones reuse.",
        "",
        f"Prefetch, with each checkpoint's download simulated as a {delay:.1f} s sleep (about the compute time):",
        "",
        "| sweep | wall s | sum of download and compute | larger of the two |",
        "|---|---|---|---|",
        f"| no prefetch | {sequential:.1f} | {len(checkpoints) * (delay + ours):.1f} | {delay + len(checkpoints) * max(delay, ours):.1f} |",
        f"| prefetch next checkpoint | {overlapped:.1f} | {len(checkpoints) * (delay + ours):.1f} | {delay + len(checkpoints) * max(delay, ours):.1f} |",
    ]
    text = "\n".join(lines)
    print(text)
    if args.record:
        record_section("sweep (pythia-70m shape, five datasets, cpu)", machine_description("cpu"), text)


if __name__ == "__main__":
    main()
