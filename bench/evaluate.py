"""Benchmark: a prompted binary task, trusttrace's batched evaluation against the reference loop, in one run.

The reference code (TracingLLM eval_trustworthiness.py) formats one prompt, generates two
tokens greedily, decodes all but the last and looks for a 0 or 1, one statement at a time.
trusttrace compares the log-probabilities of the two answer tokens in one batched forward per
batch ("logit" mode, the default), or generates in batches ("parse" mode). All three use the
reference's own stereoset prompt on the same rows.

    python bench/evaluate.py                  # CPU: Pythia-70m-shaped model, 300 stereoset rows
    python bench/evaluate.py --rows 100 --batch-size 32
    python bench/evaluate.py --device cuda
    python bench/evaluate.py --record         # append the results to bench/RESULTS.md

Random weights are enough for timing; the tokenizer is trained on the dataset's statements.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
from pathlib import Path

import numpy as np
import torch
from transformers import AutoModelForCausalLM

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import timed, DEFAULT_DATA, machine_description, record_section  # noqa: E402
from extract import model_config  # noqa: E402

from trusttrace.data import load_dataset  # noqa: E402
from trusttrace.evaluation import evaluate  # noqa: E402
from trusttrace.evaluation.templates import PAPER_TEMPLATES  # noqa: E402
from trusttrace.steering import development_rows  # noqa: E402
from trusttrace.tiny import PAD_ID, train_tokenizer  # noqa: E402


def reference_loop(model, tokenizer, template: str, statements: list[str], seed: int = 0) -> tuple[list[int], list[str]]:
    """The study's evaluation: one prompt per generate(max_new_tokens=2), parse, random guess if no digit."""
    random.seed(seed)
    outputs = []
    with torch.no_grad():
        for statement in statements:
            input_ids = tokenizer.encode(template.replace("{statement}", statement), return_tensors="pt").to(model.device)
            generated = model.generate(input_ids, max_new_tokens=2, do_sample=False, pad_token_id=PAD_ID)
            outputs.append(tokenizer.batch_decode(generated[:, input_ids.shape[1] : -1])[0].strip())
    predictions = [0 if "0" in text else 1 if "1" in text else random.choice([0, 1]) for text in outputs]
    return predictions, outputs



def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="stereoset")
    parser.add_argument("--rows", type=int, default=300, help="evaluate this many of the reference's evaluation rows")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--vocab", type=int, default=50304)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--record", action="store_true", help="append the results to bench/RESULTS.md")
    args = parser.parse_args()
    load_before = os.getloadavg()[0]

    dataset = load_dataset(args.dataset, data_dir=os.environ.get("TRUSTTRACE_DATA") or str(DEFAULT_DATA))
    tokenizer = train_tokenizer(dataset.statements, vocab_size=args.vocab)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(model_config("pythia-70m", args.vocab), dtype=torch.float32).eval().to(args.device)
    rows = development_rows(dataset, "paper")[1][: args.rows]
    statements = [dataset.statements[r] for r in rows]
    template = PAPER_TEMPLATES[args.dataset]
    options = dict(rows=rows, template=template.text, answers=template.answers, batch_size=args.batch_size)

    evaluate(model, tokenizer, "binary", dataset, rows=rows[:8], template=template.text, answers=template.answers)  # warm-up
    (reference, outputs), t_reference = timed(lambda: reference_loop(model, tokenizer, template.text, statements))
    parsed, t_parse = timed(lambda: evaluate(model, tokenizer, "binary", dataset, mode="parse", **options))
    logit, t_logit = timed(lambda: evaluate(model, tokenizer, "binary", dataset, mode="logit", **options))
    single = evaluate(model, tokenizer, "binary", dataset, mode="logit", **{**options, "batch_size": 1})

    n = len(rows)
    same_text = sum(b.strip().startswith(a) for a, b in zip(outputs, parsed.records["output"]))
    same_logit = int((logit.records["prediction"].to_numpy() == single.records["prediction"].to_numpy()).sum())
    table = [
        "| method | total s | ms/row | speed-up | check |",
        "|---|---|---|---|---|",
        f"| reference: generate 2 tokens and parse, 1 prompt at a time | {t_reference:.2f} | {t_reference / n * 1e3:.1f} | 1.0x | - |",
        f"| trusttrace parse mode, batched generation | {t_parse:.2f} | {t_parse / n * 1e3:.1f} | {t_reference / t_parse:.1f}x "
        f"| text begins with the reference's on {same_text}/{n} rows* |",
        f"| trusttrace logit mode, batched | {t_logit:.2f} | {t_logit / n * 1e3:.1f} | {t_reference / t_logit:.1f}x "
        f"| predictions equal to batch size 1 on {same_logit}/{n} rows |",
    ]
    tokens = sum(len(ids) for ids in tokenizer([template.render(s) for s in statements])["input_ids"])
    lines = [
        f"- model: pythia-70m-shaped GPT-NeoX ({sum(p.numel() for p in model.parameters()) / 1e6:.0f}M params, random weights, "
        f"vocabulary {args.vocab}; tokenizer trained on the statements, {len(tokenizer)} tokens)",
        f"- task: {args.dataset}, the reference's prompt, {n} rows of its evaluation half ({tokens} prompt tokens), batch size {args.batch_size}",
        "- *the reference decodes all generated tokens but the last, i.e. only the first of its two",
        f"- accuracy (random weights, meaningless): reference {np.mean(np.array(reference) == dataset.labels[rows]):.3f}, "
        f"logit {logit.value('accuracy'):.3f}, parse {parsed.value('accuracy'):.3f}",
        f"- 1-minute load average of the machine before / after: {load_before:.1f} / {os.getloadavg()[0]:.1f}",
    ]
    text = "\n".join(lines + [""] + table)
    print(text)
    if args.record:
        record_section(f"evaluate ({args.dataset}, binary task, {args.device})", machine_description(args.device), text)


if __name__ == "__main__":
    main()
