"""Benchmark: loading a local bf16 checkpoint with `load_model`, against its parts alone.

`load_model` runs transformers' `from_pretrained` straight to the device while it hashes the
weight files for provenance; a later load of the same unchanged files takes the sha256 it
remembered. This times, on one checkpoint: the first load, a second load, `from_pretrained`
alone, the checksum alone, and a load whose checksum a sweep computed ahead (see `load_test` in
extract.py, which `extract.py --load-test` runs after its extraction benchmark).

    python bench/load.py                              # CPU: Llama-7B-shaped, 4 of its 32 blocks
    python bench/load.py --layers 32 --device cuda    # the full 13.5 GB checkpoint
    python bench/load.py --record                     # append the results to bench/RESULTS.md
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine_description, record_section  # noqa: E402
from extract import load_test, model_config  # noqa: E402

from trusttrace.models import DTYPE_ARGUMENT  # noqa: E402
from trusttrace.tiny import train_tokenizer  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layers", type=int, default=4, help="decoder blocks of the Llama-7B shape to keep")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--record", action="store_true", help="append the results to bench/RESULTS.md")
    args = parser.parse_args()

    tokenizer = train_tokenizer([f"statement number {i} about trust" for i in range(300)], vocab_size=1000)
    config = model_config("llama-7b", 32000)
    config.num_hidden_layers = args.layers
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, **{DTYPE_ARGUMENT: torch.bfloat16}).eval()
    size, seconds = load_test(model, tokenizer, args.device)
    del model
    lines = [f"- Llama-7B-shaped checkpoint with {args.layers} blocks: {size:.1f} GB of bf16 safetensors, random weights", "",
             "| load onto " + args.device + " | s | GB/s |", "|---|---|---|"]
    lines += [f"| {part} | {value:.2f} | {size / value:.2f} |" for part, value in seconds.items()]
    text = "\n".join(lines)
    print(text)
    if args.record:
        record_section(f"load ({args.layers} blocks, {args.device})", machine_description(args.device), text)


if __name__ == "__main__":
    main()
