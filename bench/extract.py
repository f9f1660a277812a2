"""Benchmark: activation extraction, trusttrace against the reference protocol, in one run.

The reference protocol (the study's code) runs one statement per forward pass through the
whole causal LM in fp32 with a hook on every block. trusttrace batches statements by length,
reads every block in one pass, never runs the LM head, and can run in bf16.

    python bench/extract.py                         # CPU: Pythia-70m-shaped model on stereoset
    python bench/extract.py --shape llama-7b --device cuda --reference-rows 200 --load-test
    python bench/extract.py --record                # append the results to bench/RESULTS.md

Random weights are enough for timing; the tokenizer is trained on the statements themselves.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, GPTNeoXConfig, LlamaConfig

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import timed, bench_statements, machine_description, record_section  # noqa: E402

from trusttrace import checksums, extract  # noqa: E402
from trusttrace.extract import (  # noqa: E402
    STATE_BATCH_BYTES, auto_batch_tokens, extract_activations, plan_batches, tokenize_statements,
)
from trusttrace.models import (  # noqa: E402
    DTYPE_ARGUMENT, block_hidden, checksum_ahead, context_length, decoder_layers, folder_checksum, load_model,
    model_hidden_size, quiet_transformers,
)
from trusttrace.tiny import train_tokenizer  # noqa: E402

# Dense bf16 tensor-core peaks (no sparsity), for the fraction-of-peak figure on a GPU.
PEAK_BF16_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0}


def model_config(shape: str, vocab_size: int):
    """Pythia-70m's or Llama-2-7B's shape, with the tokenizer's special ids."""
    if shape == "pythia-70m":
        return GPTNeoXConfig(
            vocab_size=vocab_size, hidden_size=512, intermediate_size=2048, num_hidden_layers=6,
            num_attention_heads=8, max_position_embeddings=2048, rotary_pct=0.25, bos_token_id=0, eos_token_id=1,
            pad_token_id=3,
        )
    if shape == "llama-7b":
        return LlamaConfig(
            vocab_size=vocab_size, hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
            num_attention_heads=32, num_key_value_heads=32, max_position_embeddings=4096, bos_token_id=0,
            eos_token_id=1, pad_token_id=3,
        )
    raise SystemExit(f"unknown shape {shape!r}")


def reference_extract(model, tokenizer, statements) -> torch.Tensor:
    """The study's protocol: one statement per forward of the full LM, fp32, a hook on every block."""
    blocks = decoder_layers(model)
    captured: dict[int, torch.Tensor] = {}
    handles = [
        block.register_forward_hook(lambda _m, _i, out, j=j: captured.__setitem__(j, block_hidden(out)))
        for j, block in enumerate(blocks)
    ]
    device = next(model.parameters()).device
    rows = []
    try:
        with torch.no_grad():
            for text in statements:
                inputs = tokenizer(text, return_tensors="pt").to(device)
                model(**inputs)
                rows.append(torch.stack([captured[j][0, -1].float().cpu() for j in range(len(blocks))]))
    finally:
        for handle in handles:
            handle.remove()
    return torch.stack(rows, dim=1)


def plain_batched_extract(model, tokenizer, statements, batch_size: int = 64) -> torch.Tensor:
    """A plain batched loop, as one would first write it: batches of `batch_size` in input
    order, padded on the right, every block's states returned, the last real token kept.

    Not padding-safe for left padding and it keeps the final norm on the last block; it is here
    to time trusttrace against the obvious batched code, not to be correct."""
    device = next(model.parameters()).device
    rows = []
    with torch.inference_mode():
        for start in range(0, len(statements), batch_size):
            inputs = tokenizer(statements[start : start + batch_size], padding=True, return_tensors="pt").to(device)
            hidden = model.base_model(**inputs, output_hidden_states=True).hidden_states[1:]
            last = inputs["attention_mask"].sum(dim=1) - 1
            rows.append(torch.stack([h[torch.arange(len(last), device=device), last] for h in hidden]).cpu())
    return torch.cat(rows, dim=1)


def token_count(tokenizer, statements) -> int:
    return sum(len(ids) for ids in tokenizer(statements)["input_ids"])


def peak_tflops(device: str) -> float | None:
    if not device.startswith("cuda"):
        return None
    name = torch.cuda.get_device_name(device)
    return next((peak for key, peak in PEAK_BF16_TFLOPS.items() if key in name), None)


def matmul_tflops(device: str, size: int = 8192, repeat: int = 10) -> float:
    """The card's bf16 matrix rate measured here: a size^3 product on random data, mean of `repeat`."""
    a, b = (torch.randn(size, size, device=device, dtype=torch.bfloat16) for _ in range(2))
    for _ in range(3):
        a @ b
    _, seconds = timed(lambda: [a @ b for _ in range(repeat)], device)
    return 2 * size**3 * repeat / seconds / 1e12


def diagnose(model, tokenizer, statements, device: str, budgets: list[int], spreads: list[float]) -> list[str]:
    """Where the bf16 time goes: the batch plan and best-of-two time at each token budget
    (None: automatic) with the default length spread, then at the automatic budget with each
    of `spreads`, then the ten CUDA kernels that take most time in one automatic pass."""
    lengths = [len(ids) for ids in tokenize_statements(tokenizer, statements, context_length(model, tokenizer))[0]]
    hidden, layers = model_hidden_size(model), len(decoder_layers(model))
    max_rows = max(1, STATE_BATCH_BYTES // (layers * hidden * 2))
    default_spread = extract.LENGTH_SPREAD
    lines = ["| token budget | length spread | batches | padded / real tokens | best of 2 s |", "|---|---|---|---|---|"]
    for budget, spread in [(budget, default_spread) for budget in [None, *budgets]] + [(None, value) for value in spreads]:
        plan = plan_batches(lengths, None, budget or auto_batch_tokens(model), spread=spread, max_rows=max_rows)
        padded = sum(len(rows) * max(lengths[r] for r in rows) for rows in plan)
        extract.LENGTH_SPREAD = spread  # the extraction reads its spread from here
        try:
            best = min(timed(lambda: extract_activations(model, tokenizer, statements, batch_tokens=budget), device)[1] for _ in range(2))
        finally:
            extract.LENGTH_SPREAD = default_spread
        label = f"auto ({auto_batch_tokens(model)})" if budget is None else str(budget)
        lines.append(f"| {label} | {spread:g} | {len(plan)} | {padded / sum(lengths):.2f} | {best:.2f} |")
    if device.startswith("cuda"):
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA, torch.profiler.ProfilerActivity.CPU]) as prof:
            timed(lambda: extract_activations(model, tokenizer, statements), device)
        lines += ["", "```", prof.key_averages().table(sort_by="self_cuda_time_total", row_limit=12, max_name_column_width=60), "```"]
    return lines


def load_test(model, tokenizer, device: str) -> tuple[float, dict[str, float]]:
    """Save the model as a bf16 safetensors folder on local disk and time `load_model` onto the
    device: the first load (which hashes the weights and remembers their sha256 in a fresh
    cache), a second load (which takes the remembered sha256), then, with the cache off, its two
    parts alone (transformers' `from_pretrained` and the weight checksum) and a load after
    `checksum_ahead` (untimed), as a sweep's load of a local checkpoint runs.

    Shards of at most 10 GB, as Hub 7B checkpoints come (Llama-2-7b: 9.98 + 3.5 GB). `load_model`
    hashes the shards in parallel while they load, so its first time is about the larger of the
    parts when the host has the cores. Returns the size in GB and the seconds of each.
    """
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_TMP")) as folder:
        weights = Path(folder) / "checkpoint"
        with quiet_transformers():
            model.save_pretrained(weights, max_shard_size="10GB")
        tokenizer.save_pretrained(weights)
        size = sum(p.stat().st_size for p in weights.glob("*.safetensors")) / 1e9
        os.sync()
        time.sleep(checksums.RACY_NS / 1e9 + 0.5)  # files changed just before their hash are not remembered
        load = lambda: load_model(weights, dtype="bfloat16", device=device)  # noqa: E731
        seconds, setting = {}, os.environ.get(checksums.CACHE_ENV)
        try:
            for part, cache, run in (
                ("load_model, first", Path(folder) / "cache", load),
                ("load_model again, checksum remembered", Path(folder) / "cache", load),
                ("from_pretrained alone", "off",
                 lambda: AutoModelForCausalLM.from_pretrained(weights, device_map=device, **{DTYPE_ARGUMENT: torch.bfloat16})),
                ("weight checksum alone", "off", lambda: folder_checksum(weights)),
            ):
                os.environ[checksums.CACHE_ENV] = str(cache)
                loaded, seconds[part] = timed(run, device)
                del loaded
                if device.startswith("cuda"):
                    torch.cuda.empty_cache()
            checksum_ahead(weights)()
            loaded, seconds["load_model, checksum computed ahead"] = timed(load, device)
        finally:
            os.environ.pop(checksums.CACHE_ENV, None)
            if setting is not None:
                os.environ[checksums.CACHE_ENV] = setting
    return size, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", default="pythia-70m", choices=["pythia-70m", "llama-7b"])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dataset", default="stereoset")
    parser.add_argument("--rows", type=int, default=None, help="use only the first N statements")
    parser.add_argument("--reference-rows", type=int, default=None, help="time the reference on the first N only")
    parser.add_argument("--vocab", type=int, default=50304)
    parser.add_argument("--repeat", type=int, default=1, help="time the bf16 pass this many times and keep the best")
    parser.add_argument("--load-test", action="store_true", help="also time loading a saved bf16 checkpoint")
    parser.add_argument("--diagnose", type=int, nargs="*", metavar="TOKENS",
                        help="also time the bf16 pass at these token budgets (and the automatic one) and, on a GPU, "
                        "list its costliest kernels and the card's measured bf16 matrix rate")
    parser.add_argument("--spreads", type=float, nargs="*", default=[], metavar="SPREAD",
                        help="with --diagnose, also time the automatic budget with these length spreads")
    parser.add_argument("--record", action="store_true", help="append the results to bench/RESULTS.md")
    args = parser.parse_args()

    statements = bench_statements(args.dataset, args.rows)
    tokenizer = train_tokenizer(statements, vocab_size=min(args.vocab, 30000))
    torch.manual_seed(0)
    config = model_config(args.shape, args.vocab)
    with torch.device(args.device):
        model = AutoModelForCausalLM.from_config(config).float().eval()
    reference_rows = statements[: args.reference_rows] if args.reference_rows else statements
    tokens = token_count(tokenizer, statements)

    reference, t_ref = timed(lambda: reference_extract(model, tokenizer, reference_rows), args.device)
    per_statement_ref = t_ref / len(reference_rows)
    fp32, t_fp32 = timed(lambda: extract_activations(model, tokenizer, statements), args.device)
    error_fp32 = ((fp32[:, : len(reference_rows)] - reference).abs().max() / reference.abs().max()).item()
    model.to(torch.bfloat16)
    if args.device.startswith("cuda"):
        torch.cuda.empty_cache()  # return the fp32 weights' memory, so batch sizing sees it free
    extract_activations(model, tokenizer, statements[:64])  # warm-up of the bf16 kernels
    bf16_times = []
    for _ in range(args.repeat):
        bf16, seconds = timed(lambda: extract_activations(model, tokenizer, statements), args.device)
        bf16_times.append(seconds)
    t_bf16 = min(bf16_times)
    _, t_plain = timed(lambda: plain_batched_extract(model, tokenizer, statements), args.device)
    error_bf16 = ((bf16[:, : len(reference_rows)] - reference).norm() / reference.norm()).item()

    n = len(statements)
    reference_total = per_statement_ref * n
    rows = [
        ("reference: 1 statement/forward, fp32, full LM", f"{reference_total:.2f}", f"{per_statement_ref * 1e3:.2f}", "1.0x", "-"),
        ("trusttrace fp32, batched", f"{t_fp32:.2f}", f"{t_fp32 / n * 1e3:.3f}", f"{reference_total / t_fp32:.1f}x", f"max rel {error_fp32:.1e}"),
        ("trusttrace bf16, batched", f"{t_bf16:.2f}", f"{t_bf16 / n * 1e3:.3f}", f"{reference_total / t_bf16:.1f}x", f"rel L2 {error_bf16:.1e}"),
        ("plain batched loop, bf16, 64 per batch in input order", f"{t_plain:.2f}", f"{t_plain / n * 1e3:.3f}", f"{reference_total / t_plain:.1f}x", "-"),
    ]
    lines = [
        f"- model: {args.shape}-shaped ({sum(p.numel() for p in model.parameters()) / 1e6:.0f}M params, random weights), "
        f"dataset: {args.dataset} ({n} statements, {tokens} tokens)",
    ]
    if args.repeat > 1:
        lines.append(f"- bf16 passes: {', '.join(f'{t:.2f}' for t in bf16_times)} s (best kept)")
    if args.reference_rows:
        lines.append(f"- reference timed on the first {len(reference_rows)} statements and scaled to {n}")
    peak = peak_tflops(args.device)
    if peak:
        body_params = sum(p.numel() for name, p in model.named_parameters() if "lm_head" not in name and "embed" not in name)
        achieved = 2 * body_params * tokens / t_bf16 / 1e12
        lines.append(f"- bf16 throughput: {achieved:.0f} TFLOP/s = {100 * achieved / peak:.0f} % of the {peak:.0f} TFLOP/s dense bf16 peak")
        if args.diagnose is not None:
            measured = matmul_tflops(args.device)
            lines.append(f"- measured bf16 matrix rate (8192^3, random data): {measured:.0f} TFLOP/s; "
                         f"the extraction reached {100 * achieved / measured:.0f} % of it")
    if args.diagnose is not None:
        diagnosis = diagnose(model, tokenizer, statements, args.device, args.diagnose, args.spreads)
    if args.load_test:
        size, seconds = load_test(model, tokenizer, args.device)
        parts = ", ".join(f"{part} {value:.1f} s" for part, value in seconds.items())
        lines.append(
            f"- load of a {size:.1f} GB bf16 safetensors checkpoint (10 GB shards) from local disk onto "
            f"{args.device}: {parts}"
        )
    table = ["| method | total s | ms/statement | speed-up | numerics vs reference |", "|---|---|---|---|---|"]
    table += ["| " + " | ".join(row) + " |" for row in rows]
    text = "\n".join(lines + [""] + table)
    if args.diagnose is not None:
        text += "\n\n" + "\n".join(diagnosis)
    print(text)
    if args.record:
        record_section(f"extract ({args.shape}, {args.device})", machine_description(args.device), text)


if __name__ == "__main__":
    main()
