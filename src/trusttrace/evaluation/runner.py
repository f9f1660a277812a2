"""The task registry and `evaluate`, which runs one task on a (steered) model.

By default a task runs on the held-out half of its dataset (the rows steering vectors are not
built from, see `trusttrace.steering.development_rows`). A steered evaluation also reports
its side effects (KL divergence and perplexity on neutral text) in the same table.
"""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from trusttrace.data import TrustDataset, load_dataset
from trusttrace.errors import EvaluationError
from trusttrace.evaluation.binary import MODES, binary_task
from trusttrace.evaluation.results import EvalResult
from trusttrace.evaluation.side_effects import side_effects
from trusttrace.evaluation.templates import NEUTRAL_TEXTS
from trusttrace.evaluation.toxicity import toxicity_task
from trusttrace.evaluation.judges import APIS
from trusttrace.evaluation.truthfulness import MC_SOURCES, QUESTION_SETS, inputs_hash, truthfulqa_task
from trusttrace.intervals import INTERVAL_RULE, MEAN_INTERVAL_RULE
from trusttrace.models import describe_source
from trusttrace.provenance import now_utc, trusttrace_version
from trusttrace.splits import row_indices
from trusttrace.steering import PROTOCOLS, Steering, active_steering, development_overlap, development_rows

SIDE_EFFECT_TEXTS = ("builtin", "dataset")

# Arguments every task function receives from `evaluate`; the rest are the task's options.
COMMON_ARGUMENTS = {"model", "tokenizer", "dataset", "rows", "task", "protocol", "seed"}


@dataclass(frozen=True)
class Task:
    """A registered evaluation: its function, default dataset and the metric a grid optimises.

    `means`: its metrics that average scores (their interval rule is MEAN_INTERVAL_RULE, the
    others' INTERVAL_RULE). `inputs`, for a task that takes no dataset: a content hash of the
    files it reads by default from a data folder, so that editing them reruns its sweep units."""

    name: str
    run: Callable[..., EvalResult]
    dataset: str | None
    primary: tuple[str, ...]
    higher_is_better: bool
    description: str
    takes_dataset: bool = True
    means: tuple[str, ...] = ()
    inputs: Callable[[str | Path | None], str | None] | None = None

    def interval_rules(self) -> dict[str, str]:
        """The rules of the intervals its rows carry, by kind: part of the names of the units that compute them."""
        return {"interval": INTERVAL_RULE} | ({"mean_interval": MEAN_INTERVAL_RULE} if self.means else {})

    def options(self) -> list[str]:
        """The task-specific keyword options its function accepts."""
        return [name for name in inspect.signature(self.run).parameters if name not in COMMON_ARGUMENTS]


TASKS = {
    "confaide": Task("confaide", binary_task, "confaide", ("accuracy",), True, "privacy: is the statement a privacy violation? (0/1)"),
    "stereoset": Task("stereoset", binary_task, "stereoset", ("accuracy",), True, "fairness: is the sentence a meaningful continuation of its context? (0/1)"),
    "confaide_tier2": Task("confaide_tier2", binary_task, "confaide_tier2", ("accuracy",), True, "privacy (tier 2): is the information flow a privacy violation? (0/1)"),
    "sst2": Task("sst2", binary_task, "sst2", ("accuracy",), True, "robustness: does the sentence have random capitals? (0/1)"),
    "sst2_sentiment": Task("sst2_sentiment", binary_task, "sst2_sentiment", ("accuracy",), True, "sentiment: is the sentence positive? (0/1)"),
    "binary": Task("binary", binary_task, None, ("accuracy",), True, "any labelled dataset, with a {statement} template"),
    "toxigen": Task("toxigen", toxicity_task, "toxigen", ("toxic_ratio",), False, "toxicity of greedy continuations, by a classifier"),
    "truthfulqa": Task("truthfulqa", truthfulqa_task, None, ("truth_info", "truth", "mc2"), True, "TruthfulQA MC1/MC2, and judged generation with a truth_judge", takes_dataset=False, means=("mc2",), inputs=inputs_hash),
}
# Task options with a fixed set of values.
CHOICES = {"mode": MODES, "questions": QUESTION_SETS, "mc_source": MC_SOURCES, "judge_api": APIS}
ALIASES = {"privacy": "confaide", "fairness": "stereoset", "robustness": "sst2", "toxicity": "toxigen", "truthfulness": "truthfulqa"}


def get_task(name: str) -> Task:
    """A registered task by name or alias (privacy, fairness, robustness, toxicity, truthfulness)."""
    key = ALIASES.get(name, name)
    if key not in TASKS:
        known = ", ".join([*TASKS, *ALIASES])
        raise EvaluationError(f"unknown task {name!r}; known tasks: {known}")
    return TASKS[key]


def evaluate(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    task: str,
    dataset: TrustDataset | str | Path | None = None,
    *,
    rows: Sequence[int] | None = None,
    limit: int | None = None,
    steering: Steering | None = None,
    protocol: str = "default",
    seed: int = 0,
    data_dir: str | Path | None = None,
    side_effect_texts: str | Sequence[str] | None = "builtin",
    **options: Any,
) -> EvalResult:
    """Run one trust task on `model`, optionally steered, and return its tidy result.

    `dataset` is a TrustDataset, a built-in name or a file (default: the task's own);
    `rows` default to the held-out rows of the protocol's development split and `limit`
    (at least 1) keeps the first of them. `steering` adds vectors while the task runs; its side effects
    are computed on `side_effect_texts` ("builtin" neutral sentences, "dataset" for the
    evaluated statements, a list of texts, or None to skip). Other `options` go to the task
    (template, mode, classifier, truth_judge, max_new_tokens, batch_size...).
    """
    spec = get_task(task)
    if protocol not in PROTOCOLS:
        raise EvaluationError(f"unknown protocol {protocol!r}; expected one of {', '.join(PROTOCOLS)}")
    if limit is not None and limit < 1:
        raise EvaluationError(f"limit {limit!r} must be at least 1 (or None for every row)")
    if isinstance(side_effect_texts, str) and side_effect_texts not in SIDE_EFFECT_TEXTS:
        raise EvaluationError(f"side_effect_texts {side_effect_texts!r} must be 'builtin', 'dataset', a list of texts or None")
    check_task_options(spec, options)
    for name, value in (("data_dir", data_dir), ("limit", limit)):
        if name in spec.options():
            options[name] = value
    if steering is not None and not isinstance(steering, Steering):
        raise EvaluationError(f"steering must be a Steering (vectors, alpha, positions), got a {type(steering).__name__}")
    steering = steering.on(model) if steering is not None else None  # recorded as the blocks steered
    dataset = resolve_dataset(spec, dataset, data_dir)
    chosen = _resolve_rows(dataset, rows, limit, protocol, seed)
    context = active_steering(model)
    if dataset is not None:
        _warn_if_not_held_out(dataset, chosen, [steering.provenance] if steering is not None else [c["provenance"] for c in context], seed)
    arguments = {"dataset": dataset, "rows": chosen, "task": spec.name, "protocol": protocol, "seed": seed, **options}
    if steering is None:
        result = spec.run(model, tokenizer, **arguments)
        if context:
            warnings.warn("the model is steered by a `steer` context: the result records it, but side effects (KL, "
                          "perplexity) are measured only with evaluate(..., steering=Steering(...))", stacklevel=2)
            if len(context) == 1:
                for column in ("layers", "alpha", "positions"):
                    result.table[column] = context[0][column]
    else:
        with steering.apply(model):
            result = spec.run(model, tokenizer, **arguments)
        texts = _side_effect_texts(side_effect_texts, result)
        if texts:
            batch_size = options.get("batch_size", 16)
            result.table = pd.concat([result.table, side_effects(model, tokenizer, steering, texts, batch_size=batch_size)], ignore_index=True)
        for column, value in steering.describe().items():
            result.table[column] = value
    result.settings = {
        "task": spec.name, "protocol": protocol, "seed": seed, "model": describe_source(model),
        "dataset": getattr(dataset, "name", None), "dataset_hash": getattr(dataset, "content_hash", None),
        "rows": None if chosen is None else len(chosen),
        "steering": _steering_settings(steering, context),
        "trusttrace_version": trusttrace_version(), "created": now_utc(),
        **result.settings,
    }
    return result


def _steering_settings(steering: Steering | None, context: list[dict[str, Any]]) -> dict[str, Any] | None:
    """How the evaluated model was steered: by `steering`, by active `steer` contexts, or not (None)."""
    if steering is not None:
        return {**steering.describe(), "provenance": dict(steering.provenance or {})}
    if not context:
        return None
    return {**context[0], "applied_by": "steer context"} if len(context) == 1 else {"applied_by": "steer contexts", "contexts": context}


def _warn_if_not_held_out(dataset: TrustDataset, rows: np.ndarray, provenances: list[Mapping[str, Any] | None], seed: int) -> None:
    """Warn when evaluated rows built the steering vectors (built with another seed, say): their scores are not held out."""
    for provenance in provenances:
        overlap = development_overlap(dataset, rows, provenance)
        if overlap:
            warnings.warn(
                f"{overlap} of the {len(rows)} evaluated rows of {dataset.name} built the steering vectors (their "
                f"development split: protocol {provenance['protocol']}, seed {provenance.get('seed')}; evaluated with seed {seed}), "
                "so their scores are not held out; evaluate with the vectors' seed and protocol",
                stacklevel=3,
            )


def check_task_options(spec: Task, options: Mapping[str, Any]) -> None:
    """An EvaluationError for an option the task does not take, or a value outside an option's
    choices (CHOICES); the CLI checks this before the model loads."""
    unknown = sorted(set(options) - set(spec.options()))
    if unknown:
        raise EvaluationError(f"task {spec.name} has no option {unknown[0]!r}; its options: {', '.join(spec.options())}")
    defaults = {name: parameter.default for name, parameter in inspect.signature(spec.run).parameters.items()}
    for name, allowed in CHOICES.items():
        if name not in options or (options[name] is None and defaults.get(name) is None):  # None where that is the default
            continue
        if options[name] not in allowed:
            raise EvaluationError(f"unknown {name} {options[name]!r}; expected one of {', '.join(allowed)}")


def resolve_dataset(spec: Task, dataset: TrustDataset | str | Path | None, data_dir: str | Path | None) -> TrustDataset | None:
    """The TrustDataset a task runs on: the one given, loaded by name/path, or the task's default."""
    if not spec.takes_dataset:
        return None
    if dataset is None:
        if spec.dataset is None:
            raise EvaluationError(f"task {spec.name} needs a dataset (a built-in name or a .csv/.jsonl/.parquet file)")
        dataset = spec.dataset
    if isinstance(dataset, (str, Path)):
        dataset = load_dataset(dataset, data_dir=data_dir)
    return dataset


def _resolve_rows(dataset: TrustDataset | None, rows: Sequence[int] | None, limit: int | None, protocol: str, seed: int) -> np.ndarray | None:
    """The rows to evaluate: given, or the held-out side of the development split; first `limit`."""
    if rows is None and dataset is not None:
        rows = development_rows(dataset, protocol, seed)[1]
        if not len(rows):
            raise EvaluationError(
                f"{dataset.name}: no held-out rows to evaluate under protocol {protocol!r} (every row is a "
                "development row); evaluate it under the default protocol, or pass rows="
            )
    elif rows is not None and dataset is not None:
        rows = row_indices(rows, len(dataset), "rows", EvaluationError)
        if not len(rows):
            raise EvaluationError("rows: no rows to evaluate")
    if rows is None:
        return None
    return rows if limit is None else rows[:limit]


def _side_effect_texts(choice: str | Sequence[str] | None, result: EvalResult) -> list[str]:
    """The reference texts of the side-effect metrics: neutral sentences, the evaluated inputs, or the user's."""
    if choice is None:
        return []
    if choice == "builtin":
        return list(NEUTRAL_TEXTS)
    if choice == "dataset":
        column = next((c for c in ("statement", "prompt", "question") if c in result.records), None)
        return result.records[column].astype(str).tolist() if column else list(NEUTRAL_TEXTS)
    return list(choice)
