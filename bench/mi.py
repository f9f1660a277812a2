"""Benchmark: the batched nHSIC information plane against a per-layer NumPy computation of the
same formula (the reference estimator), on the same z-scored activations and rows.

The per-layer reference builds K, K_c = K H and R = K_c (K_c + ε m I)⁻¹ with explicit matrix
products for each layer in float64 (R_X and R_Y once, as a fair loop would); trusttrace computes
all layers' kernels in one batched step and R as I − ε m (K_c + ε m I)⁻¹. The table also shows
how far a float32 batched run drifts from float64.

    python bench/mi.py                                      # CPU: 6 layers x 1952 rows x 512
    python bench/mi.py --device cuda --layers 32 --rows 1952 --hidden 4096
    python bench/mi.py --record                             # append the table to bench/RESULTS.md
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import timed, machine_description, record_section  # noqa: E402

from trusttrace.info import information_plane  # noqa: E402
from trusttrace.splits import paper_split  # noqa: E402


def reference_operator(x: np.ndarray, sigma: float = 50.0, epsilon: float = 1e-5) -> np.ndarray:
    """R = K H (K H + ε m I)⁻¹ as the reference writes it, in NumPy float64."""
    m = len(x)
    squared = (x * x).sum(1)
    distances = np.abs(squared[:, None] + squared[None, :] - 2 * x @ x.T)
    centred = np.exp(-distances / (2 * sigma**2 * x.shape[1])) @ (np.eye(m) - np.ones((m, m)) / m)
    return centred @ np.linalg.inv(centred + epsilon * m * np.eye(m))


def reference_plane(states: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """I(X;T), I(T;Y) per layer, one layer at a time; X = layer 0."""
    r_x, r_y = reference_operator(states[0]), reference_operator(labels[:, None].astype(np.float64))
    i_xt, i_ty = [], []
    for layer in states:
        r_t = reference_operator(layer)
        i_xt.append(np.sum(r_x * r_t.T))
        i_ty.append(np.sum(r_y * r_t.T))
    return np.array(i_xt), np.array(i_ty)



def run(n_layers: int, rows: int, hidden: int, device: str, seed: int) -> dict:
    g = torch.Generator().manual_seed(seed)
    labels = (torch.rand(rows, generator=g) < 0.5).long().numpy()
    acts = torch.randn(n_layers, rows, hidden, generator=g) * torch.linspace(1, 20, n_layers)[:, None, None]
    acts += torch.as_tensor(labels, dtype=torch.float32)[None, :, None] * torch.linspace(0, 2, n_layers)[:, None, None]
    # warm-up: on a GPU the first call at full size loads kernels and libraries, so do one untimed
    warm = acts if device.startswith("cuda") else acts[:2, :50, :8]
    for dtype in (torch.float64, torch.float32):
        information_plane(warm, labels[: warm.shape[1]], device=device, dtype=dtype)
    ours, t_ours = timed(lambda: information_plane(acts, labels, device=device), device)
    ours32, t_ours32 = timed(lambda: information_plane(acts, labels, device=device, dtype=torch.float32), device)

    train = paper_split(rows)[0]
    z = acts.double()
    z = ((z - z.mean(1, keepdim=True)) / z.std(1, keepdim=True))[:, train].numpy()
    (i_xt, i_ty), t_ref = timed(lambda: reference_plane(z, labels[train]), "cpu")

    def drift(frame):
        return max(np.max(np.abs(frame["i_xt"] - i_xt) / np.abs(i_xt)), np.max(np.abs(frame["i_ty"] - i_ty) / np.abs(i_ty)))

    return {
        "shape": f"{n_layers} x {rows} ({len(train)} used) x {hidden}", "device": device,
        "batched_s": t_ours, "batched32_s": t_ours32, "reference_s": t_ref, "speedup": t_ref / t_ours,
        "rel_diff": drift(ours), "rel_diff32": drift(ours32),
    }


def markdown(results: list[dict]) -> str:
    lines = [
        "| layers x rows x hidden | device | batched float64 (s) | per-layer NumPy float64 (s) | speed-up | max rel. diff | batched float32 (s) | float32 max rel. diff |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r['shape']} | {r['device']} | {r['batched_s']:.2f} | {r['reference_s']:.2f} | {r['speedup']:.1f}x | "
            f"{r['rel_diff']:.1e} | {r['batched32_s']:.2f} | {r['rel_diff32']:.1e} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layers", type=int, nargs="+", default=[6], help="layer counts to run (default: 6)")
    parser.add_argument("--rows", type=int, default=1952, help="statements; the first 80 %% are used (default 1952)")
    parser.add_argument("--hidden", type=int, default=512, help="hidden size (default 512)")
    parser.add_argument("--device", default="cpu", help="device of the batched computation (the reference runs on CPU)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--record", action="store_true", help="append the table to bench/RESULTS.md")
    args = parser.parse_args()
    results = [run(n, args.rows, args.hidden, args.device, args.seed) for n in args.layers]
    table = markdown(results)
    print(table)
    if args.record:
        body = (f"`python bench/mi.py {' '.join(sys.argv[1:])}`: nHSIC information plane, σ = 50, ε = 1e-5; "
                f"the NumPy reference runs on the host CPU ({os.cpu_count()} cores).\n\n" + table)
        record_section("MI: batched nHSIC vs per-layer NumPy", machine_description(args.device), body)


if __name__ == "__main__":
    main()
