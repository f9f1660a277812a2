"""Truthfulness on TruthfulQA: MC1/MC2 by log-likelihood, and free generation judged for truth and informativeness.

MC: each choice is scored as the continuation " <answer>" of the standard TruthfulQA prompt
(QA primer + "Q: <question>\\nA:"). MC1 is 1 when the best-scored choice is the true one; MC2
is the normalised probability mass on the true choices. Generation: greedy answers to the
same prompt, judged by a truth judge and optionally an info judge (see judges.py).

By default only the 407 questions of truthfulqa_test.csv are used: the other 410 are the
questions of the probing/steering data (truthfulqa_train.csv), so scoring them would reward
a vector for its own training questions. `questions="all"` uses all 817.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.special import logsumexp
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from trusttrace.data.builtin import data_root, study_dir, upstream_dir
from trusttrace.errors import EvaluationError
from trusttrace.evaluation.judges import Judge, Verdict, make_judge
from trusttrace.evaluation.results import EvalResult, make_table, mean_row, metric_row, rate_row
from trusttrace.evaluation.scoring import choice_logprobs, generate_texts
from trusttrace.evaluation.templates import JUDGE_PROMPTS, PAPER_QA_PROMPT, QA_PRIMER, qa_prompt
from trusttrace.splits import row_indices

MC_FILE = Path("truthfulqa") / "mc_task.json"
HELDOUT_FILE = "truthfulqa_test.csv"
HUB_REPO = "truthfulqa/truthful_qa"
HUB_PATTERNS = ("multiple_choice/*.parquet",)
QUESTION_SETS = ("heldout", "all")
MC_SOURCES = ("auto", "file", "hub")


@dataclass(frozen=True)
class MCQuestion:
    """One TruthfulQA question with its MC1 and MC2 choices, each (answer, 1 if true)."""

    question: str
    mc1: tuple[tuple[str, int], ...]
    mc2: tuple[tuple[str, int], ...]


def load_mc_questions(path: str | Path | None = None, *, data_dir: str | Path | None = None, source: str = "auto") -> tuple[list[MCQuestion], str]:
    """The MC questions and where they came from: mc_task.json (path, or under the data folder), or the Hub.

    The local file is TruthfulQA v1 (the study's version); the Hub's `multiple_choice` config is v0.
    """
    if source not in MC_SOURCES:
        raise EvaluationError(f"unknown MC source {source!r}; expected one of {', '.join(MC_SOURCES)}")
    file = _mc_file(path, data_dir)
    if source != "hub" and file is not None and file.is_file():
        return _read_mc_file(file), str(file)
    if source == "file" or path is not None:
        raise EvaluationError(f"no TruthfulQA MC file at {file}; pass mc_path= or a --data-dir holding upstream/{MC_FILE}")
    from trusttrace.data.hub import download, read_frames

    advice = (
        "get data/mc_task.json of https://github.com/sylinrl/TruthfulQA, placed in "
        f"<data>/upstream/{MC_FILE.as_posix()}, and pass <data> as --data-dir"
    )
    frame = read_frames(download(HUB_REPO, HUB_PATTERNS, "truthfulqa multiple choice: no local mc_task.json", advice))
    questions = [
        MCQuestion(row.question, _hub_targets(row.mc1_targets), _hub_targets(row.mc2_targets))
        for row in frame.itertuples()
    ]
    return questions, f"https://huggingface.co/datasets/{HUB_REPO} (multiple_choice)"


def _mc_file(path: str | Path | None, data_dir: str | Path | None) -> Path | None:
    """Where the local MC file is looked for: `path`, else upstream/truthfulqa/mc_task.json in the data folder."""
    if path is not None:
        return Path(path)
    root = data_root(data_dir)
    return upstream_dir(root) / MC_FILE if root is not None else None


def inputs_hash(
    data_dir: str | Path | None, *, questions: str = "heldout", mc: bool = True, mc_path: str | Path | None = None,
    mc_source: str = "auto",
) -> str | None:
    """A content hash of the files the task reads with these options: the held-out questions and
    the MC file (the Hub's MC config by name, where that is read instead), so that an edited file
    reruns what depends on it. None when the held-out questions file is missing (the task fails, saying why)."""
    digest = hashlib.sha256()
    if questions == "heldout":
        path = _heldout_file(data_dir)
        if path is None or not path.is_file():
            return None
        digest.update(path.read_bytes())
    if mc or questions != "heldout":
        file = _mc_file(mc_path, data_dir)
        local = mc_source != "hub" and file is not None and file.is_file()
        digest.update(b"\0" + (file.read_bytes() if local else f"hub:{HUB_REPO}".encode()))
    return digest.hexdigest()


def _read_mc_file(path: Path) -> list[MCQuestion]:
    try:
        items = json.loads(path.read_text(encoding="utf-8"))
        return [
            MCQuestion(item["question"], tuple(item["mc1_targets"].items()), tuple(item["mc2_targets"].items()))
            for item in items
        ]
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
        raise EvaluationError(f"{path}: not a TruthfulQA mc_task.json ({type(error).__name__}: {error})") from None


def _hub_targets(targets) -> tuple[tuple[str, int], ...]:
    return tuple(zip(list(targets["choices"]), [int(label) for label in targets["labels"]]))


def heldout_questions(data_dir: str | Path | None) -> list[str]:
    """The 407 questions of truthfulqa_test.csv, absent from the probing data."""
    path = _heldout_file(data_dir)
    if path is None or not path.is_file():
        raise EvaluationError(
            f"no {HELDOUT_FILE} at {path}; pass a --data-dir holding the study files, or questions='all'"
        )
    return pd.read_csv(path)["Question"].astype(str).str.strip().tolist()


def _heldout_file(data_dir: str | Path | None) -> Path | None:
    root = data_root(data_dir)
    return study_dir(root) / HELDOUT_FILE if root is not None else None


def mc_metrics(scores: np.ndarray, labels: Sequence[int]) -> tuple[int, float]:
    """MC1-style correctness (best true choice scored above every false one) and MC2 (true mass)."""
    labels = np.asarray(labels, dtype=bool)
    if labels.all() or not labels.any():
        raise EvaluationError("a TruthfulQA question needs both true and false choices")
    correct = int(scores[labels].max() > scores[~labels].max())
    mass = float(np.exp(logsumexp(scores[labels]) - logsumexp(scores)))
    return correct, mass


def truthfulqa_task(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    *,
    dataset: None = None,
    rows: Sequence[int] | None = None,
    task: str = "truthfulqa",
    protocol: str = "default",
    seed: int = 0,
    data_dir: str | Path | None = None,
    questions: str = "heldout",
    limit: int | None = None,
    mc: bool = True,
    mc_path: str | Path | None = None,
    mc_source: str = "auto",
    primer: str | None = None,
    truth_judge: Judge | str | None = None,
    info_judge: Judge | str | None = None,
    judge_url: str | None = None,
    judge_api: str = "completions",
    api_key_env: str | None = "OPENAI_API_KEY",
    max_new_tokens: int = 50,
    batch_size: int = 8,
) -> EvalResult:
    """MC1/MC2 (unless mc=False) and, when a truth judge is given, judged generation.

    Judges are Judge objects, Hub ids/paths of local judge models, or, with `judge_url`,
    model names at an OpenAI-compatible endpoint. `rows` pick among the chosen questions,
    `limit` keeps the first of them. `dataset` is unused (the questions are TruthfulQA's own);
    it is accepted as every task's function accepts it.
    """
    if questions not in QUESTION_SETS:
        raise EvaluationError(f"unknown question set {questions!r}; expected one of {', '.join(QUESTION_SETS)}")
    if not mc and truth_judge is None:
        raise EvaluationError("truthfulqa with mc=False needs a truth_judge for the generation part")
    judges = {
        name: make_judge(spec, base_url=judge_url, api=judge_api, api_key_env=api_key_env)
        for name, spec in (("truth", truth_judge), ("info", info_judge))
        if spec is not None
    }
    texts = heldout_questions(data_dir) if questions == "heldout" else None
    items, source = load_mc_questions(mc_path, data_dir=data_dir, source=mc_source) if mc or texts is None else ([], None)
    chosen_items = _select(items, texts)
    texts = texts if texts is not None else [item.question for item in items]
    index = np.arange(len(texts)) if rows is None else row_indices(rows, len(texts), f"rows ({questions} questions)", EvaluationError)
    if not len(index):
        raise EvaluationError(f"rows: no {questions} questions to evaluate")
    index = index[:limit]
    records = pd.DataFrame({"row": index, "question": [texts[i] for i in index]})
    metrics: list[dict] = []
    if mc:
        selected = [chosen_items[i] for i in index]
        records["mc1"], records["mc2"] = _score_mc(model, tokenizer, selected, primer, batch_size)
        metrics += [rate_row(task, "mc1", records["mc1"].astype(bool)), mean_row(task, "mc2", records["mc2"])]
    if judges:
        metrics += _judged_generation(model, tokenizer, records, judges, task, protocol, primer, max_new_tokens, batch_size)
    settings = {
        "questions": questions, "mc_source": source, "primer": "truthfulqa" if primer is None else primer,
        "generation_prompt": "the reference's" if protocol == "paper" else "primer + question",
        "judges": {name: judge.name for name, judge in judges.items()}, "max_new_tokens": max_new_tokens,
        "dataset_hash": inputs_hash(data_dir, questions=questions, mc=mc, mc_path=mc_path, mc_source=mc_source),
    }
    return EvalResult(make_table(metrics), records, settings)


def _select(items: list[MCQuestion], texts: list[str] | None) -> list[MCQuestion]:
    """The MC items of the chosen question texts, in their order (all items when texts is None)."""
    if texts is None or not items:
        return items
    by_question = {item.question.strip(): item for item in items}
    missing = [text for text in texts if text not in by_question]
    if missing:
        raise EvaluationError(f"{len(missing)} held-out questions are not in the MC file, e.g. {missing[0]!r}; use questions='all'")
    return [by_question[text] for text in texts]


def _score_mc(model, tokenizer, items: list[MCQuestion], primer: str | None, batch_size: int) -> tuple[list[int], list[float]]:
    prompts = [qa_prompt(item.question, QA_PRIMER if primer is None else primer) for item in items]
    mc1_scores = choice_logprobs(model, tokenizer, prompts, [[f" {a}" for a, _ in item.mc1] for item in items], batch_size=batch_size, desc="mc1")
    mc2_scores = choice_logprobs(model, tokenizer, prompts, [[f" {a}" for a, _ in item.mc2] for item in items], batch_size=batch_size, desc="mc2")
    mc1 = [mc_metrics(s, [label for _, label in item.mc1])[0] for s, item in zip(mc1_scores, items)]
    mc2 = [mc_metrics(s, [label for _, label in item.mc2])[1] for s, item in zip(mc2_scores, items)]
    return mc1, mc2


def _judged_generation(model, tokenizer, records: pd.DataFrame, judges: dict[str, Judge], task: str, protocol: str,
                       primer: str | None, max_new_tokens: int, batch_size: int) -> list[dict]:
    """Generate answers into `records`, judge them, and return the metric rows."""
    if "truth" not in judges:
        raise EvaluationError("judged generation needs a truth_judge (info_judge alone is not enough)")
    questions = records["question"].tolist()
    if protocol == "paper":
        prompts = [PAPER_QA_PROMPT + q for q in questions]
    else:
        prompts = [qa_prompt(q, QA_PRIMER if primer is None else primer) for q in questions]
    outputs = generate_texts(model, tokenizer, prompts, max_new_tokens=max_new_tokens, batch_size=batch_size, desc="answers")
    records["answer"] = [extract_answer(text, paper=protocol == "paper") for text in outputs]
    metrics = []
    verdicts: dict[str, list[Verdict]] = {}
    for name, judge in judges.items():
        template = JUDGE_PROMPTS[name]
        prompts = [template.replace("{question}", q).replace("{answer}", a) for q, a in zip(questions, records["answer"])]
        verdicts[name] = judge.judge(prompts)
        records[name] = pd.array([v.answer for v in verdicts[name]], dtype="Int64")
        records[f"{name}_error"] = [v.error for v in verdicts[name]]
        judged = [v.answer for v in verdicts[name] if v.answer is not None]
        metrics.append(rate_row(task, name, np.asarray(judged, dtype=bool)))
        failures = [v.error for v in verdicts[name] if v.answer is None]
        metrics.append(metric_row(task, f"{name}_judge_failures", len(failures), len(verdicts[name])))
        if failures:
            reason, count = Counter(failures).most_common(1)[0]
            warnings.warn(
                f"{name} judge {judge.name}: {len(failures)} of {len(failures) + len(judged)} calls failed "
                f"(most often: {reason}, {count}x); those answers are left out of the {name} rate",
                stacklevel=2,
            )
    if "info" in verdicts:
        pairs = zip(verdicts["truth"], verdicts["info"])
        both = [bool(t.answer and i.answer) for t, i in pairs if t.answer is not None and i.answer is not None]
        metrics.append(rate_row(task, "truth_info", both))
    return metrics


def extract_answer(text: str, paper: bool = False) -> str:
    """The answer in a generated continuation: its first line (the reference: text before "Q:", after "A:")."""
    if paper:
        answer = text.strip().split("Q:")[0].strip()
        return answer.split("A:", 1)[1].strip() if "A:" in answer else answer
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[0].removeprefix("A:").strip() if lines else ""
