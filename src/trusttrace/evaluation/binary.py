"""Prompted binary tasks (privacy, fairness, robustness, any labelled dataset): does the model answer the label?

Default mode "logit": the prediction is whichever answer continuation (" 0" or " 1") the
model gives the higher log-probability; deterministic, one batched forward per prompt. Mode
"parse" keeps the reference protocol: greedy-generate a few tokens, take the first 0 or 1 in
the text, and guess at random (seeded) when there is none.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np
import pandas as pd
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from trusttrace.data import TrustDataset
from trusttrace.errors import EvaluationError
from trusttrace.evaluation.results import EvalResult, make_table, rate_row
from trusttrace.evaluation.scoring import choice_logprobs, generate_texts
from trusttrace.evaluation.templates import binary_template

MODES = ("logit", "parse")
FIRST_DIGIT = re.compile(r"[01]")


def binary_task(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    *,
    dataset: TrustDataset,
    rows: Sequence[int],
    task: str = "binary",
    protocol: str = "default",
    seed: int = 0,
    template: str | None = None,
    answers: tuple[str, str] | None = None,
    mode: str | None = None,
    max_new_tokens: int = 2,
    batch_size: int = 16,
) -> EvalResult:
    """Accuracy (95 % Wilson interval, rows of one group counting as fewer) and rate of answering 1 on `dataset`'s `rows`.

    `template` needs a `{statement}` placeholder; `answers` are the continuations meaning 0
    and 1. `mode` defaults to "logit", or "parse" under protocol="paper".
    """
    mode = mode or ("parse" if protocol == "paper" else "logit")
    if mode not in MODES:
        raise EvaluationError(f"unknown mode {mode!r}; expected one of {', '.join(MODES)}")
    prompt = binary_template(task, protocol, template, answers)
    rows = np.asarray(rows, dtype=np.int64)
    statements = [dataset.statements[r] for r in rows]
    labels = dataset.labels[rows]
    prompts = [prompt.render(statement) for statement in statements]
    records = pd.DataFrame({"row": rows, "statement": statements, "label": labels})
    if mode == "logit":
        scores = np.stack(choice_logprobs(model, tokenizer, prompts, [list(prompt.answers)] * len(prompts), batch_size=batch_size, desc=task))
        records["logprob_0"], records["logprob_1"] = scores[:, 0], scores[:, 1]
        records["prediction"] = (scores[:, 1] > scores[:, 0]).astype(np.int64)
    else:
        outputs = generate_texts(model, tokenizer, prompts, max_new_tokens=max_new_tokens, batch_size=batch_size, desc=task)
        parsed = [parse_answer(text) for text in outputs]
        guesses = np.random.default_rng(seed).integers(0, 2, size=len(parsed))
        records["output"] = outputs
        records["parsed"] = [value is not None for value in parsed]
        records["prediction"] = [value if value is not None else int(guess) for value, guess in zip(parsed, guesses)]
    records["correct"] = records["prediction"] == records["label"]
    groups = None if dataset.groups is None else dataset.groups[rows]
    metrics = [
        rate_row(task, "accuracy", records["correct"], groups),
        rate_row(task, "predicted_1_rate", records["prediction"] == 1, groups),
    ]
    if mode == "parse":
        metrics.append(rate_row(task, "unparsed_rate", ~records["parsed"].astype(bool), groups))
    settings = {"mode": mode, "template": prompt.text, "answers": list(prompt.answers)}
    return EvalResult(make_table(metrics), records, settings)


def parse_answer(text: str) -> int | None:
    """The first 0 or 1 in a generated text, or None when there is none."""
    found = FIRST_DIGIT.search(text)
    return int(found.group()) if found else None
