"""The built-in datasets: where their files live, how their groups are derived, how they are built.

The five study datasets are read from the study's CSVs as they are; `sst2_sentiment` and
`confaide_tier2` are truer constructions built from the upstream files beside them. Without a
local copy the names are built from their Hugging Face sources (see hub.py).
"""

from __future__ import annotations

import math
import os
import re
import warnings
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd

from trusttrace.data import hub
from trusttrace.data.cards import CARDS
from trusttrace.data.dataset import DatasetCard, TrustDataset, text_key
from trusttrace.data.files import Table, read_rows, text_lines, validate
from trusttrace.errors import DatasetError

DATA_ENV = "TRUSTTRACE_DATA"
STUDY_FOLDER = "tracingllm"
UPSTREAM_FOLDER = "upstream"

STUDY_FILES = {
    "truthfulqa": "truthfulqa_train.csv",
    "toxigen": "toxigen.csv",
    "confaide": "confaide.csv",
    "stereoset": "stereoset.csv",
    "sst2": "sst2.csv",
}
UPSTREAM_FILES = {
    "sst2_sentiment": ("sst2/stsa.binary.test.txt",),
    "confaide_tier2": ("confaide/tier_2a.txt", "confaide/tier_2b.txt", "confaide/tier_2_labels.txt"),
}
WHERE_TO_GET = {
    "confaide_tier2": "benchmark/tier_2a.txt, tier_2b.txt and tier_2_labels.txt of "
    "https://github.com/skywalker023/confAIde, placed in <data>/upstream/confaide/",
    "sst2_sentiment": "data/stsa.binary.test of https://github.com/AcademiaSinicaNLPLab/sentiment_dataset, "
    "placed in <data>/upstream/sst2/stsa.binary.test.txt",
}

# ConfAIde tier-2 cut-offs on mean human agreement (-100..100) that reproduce the study's tier-2 rows.
VIOLATION_AT_MOST = -50.0
ACCEPTABLE_ABOVE = -20.0

TOXIGEN_CR = "_x000D_"


def builtin_cards() -> dict[str, DatasetCard]:
    """The card of every built-in dataset, by name."""
    return dict(CARDS)


def data_root(data_dir: str | Path | None) -> Path | None:
    """The data folder: `data_dir`, else $TRUSTTRACE_DATA, else None."""
    value = data_dir if data_dir is not None else os.environ.get(DATA_ENV) or None
    return Path(value).expanduser() if value is not None else None


def study_dir(root: Path) -> Path:
    """The folder with the study CSVs: `root` itself, or its `tracingllm/` sub-folder when it has one."""
    return root / STUDY_FOLDER if (root / STUDY_FOLDER).is_dir() else root


def upstream_dir(root: Path) -> Path:
    """The upstream folder: `root/upstream`, else the study folder's sibling `upstream/`."""
    candidates = upstream_candidates(root)
    return next((folder for folder in candidates if folder.is_dir()), candidates[-1])


def upstream_candidates(root: Path) -> list[Path]:
    """Where the upstream folder may be, in the order it is looked for."""
    return [root / UPSTREAM_FOLDER, study_dir(root).parent / UPSTREAM_FOLDER]


def local_paths(name: str, root: Path) -> list[Path]:
    """The files a built-in dataset is read from under the data folder `root`."""
    if name in STUDY_FILES:
        return [study_dir(root) / STUDY_FILES[name]]
    return [upstream_dir(root) / relative for relative in UPSTREAM_FILES[name]]


def load_builtin(name: str, data_dir: str | Path | None = None, source: str = "auto", clean: bool = False) -> TrustDataset:
    """Build a built-in dataset from the local files, or from the Hub when asked or when they are absent.

    A data folder that does not exist is an error rather than a reason to go to the Hub (it is
    most likely mistyped), and a build from the Hub that was not asked for warns: it is not the
    study's file (see its card).
    """
    if source == "hub":
        return _from_hub(name, "source='hub' asked for", clean)
    root = data_root(data_dir)
    if root is None:
        looked = f"no data folder given (data_dir=, --data-dir or ${DATA_ENV})"
    elif not root.is_dir():
        given = "data_dir / --data-dir" if data_dir is not None else f"${DATA_ENV}"
        raise DatasetError(f"{name}: the data folder {root} ({given}) does not exist")
    else:
        paths = local_paths(name, root)
        missing = [path for path in paths if not path.is_file()]
        if not missing:
            return _cleaned(_build_local(name, paths), clean)
        if name not in STUDY_FILES and not upstream_dir(root).is_dir():
            looked = "no upstream folder (" + " or ".join(str(folder.absolute()) for folder in upstream_candidates(root)) + ")"
        else:
            looked = f"no {missing[0].absolute()}"
    if source == "local":
        raise DatasetError(f"{name}: {looked}")
    dataset = _from_hub(name, looked, clean)
    warnings.warn(
        f"{name}: {looked}, so it was built from the Hugging Face dataset {dataset.source}, which differs from "
        f"the study's file (see its card's quirks); for the study's, get {_where_to_get(name)}",
        stacklevel=3,
    )
    return dataset


def _from_hub(name: str, looked: str, clean: bool) -> TrustDataset:
    if name not in hub.HUB_SOURCES:
        raise DatasetError(f"{name}: {looked}, and it has no Hugging Face source; get {_where_to_get(name)}")
    return _cleaned(hub.load_from_hub(name, looked, f"get {_where_to_get(name)}"), clean)


def _where_to_get(name: str) -> str:
    """Where a built-in's local files come from, and how to point trusttrace at them."""
    if name in WHERE_TO_GET:
        return f"{WHERE_TO_GET[name]}, and pass <data> as data_dir=, --data-dir or ${DATA_ENV}"
    return f"{STUDY_FILES[name]} from {hub.STUDY_FILES_URL} and pass its folder as data_dir=, --data-dir or ${DATA_ENV}"


def _build_local(name: str, paths: list[Path]) -> TrustDataset:
    if name == "sst2_sentiment":
        return _sst2_sentiment(paths[0])
    if name == "confaide_tier2":
        return _confaide_tier2(*paths)
    path = paths[0]
    columns = validate(read_rows(path), path)
    groups = GROUPERS[name](columns.statements, columns.labels, path)
    return TrustDataset(name, columns.statements, columns.labels, groups, CARDS[name], str(path))


def _cleaned(dataset: TrustDataset, clean: bool) -> TrustDataset:
    """Apply the dataset's documented cleanup when `clean` is set, and record it on the card."""
    if not clean or dataset.name not in CLEANUPS:
        return dataset
    description, fix = CLEANUPS[dataset.name]
    card = replace(dataset.card, cleanups=dataset.card.cleanups + (description,))
    statements = [fix(statement) for statement in dataset.statements]
    return TrustDataset(dataset.name, statements, dataset.labels, dataset.groups, card, dataset.source)


def _factorize(keys: list[str]) -> np.ndarray:
    """Integer group ids, numbered in order of first appearance."""
    return pd.factorize(pd.Series(keys, dtype=object))[0].astype(np.int64)


def question_groups(statements: list[str], labels: np.ndarray, path: Path | str) -> np.ndarray:
    """TruthfulQA: rows share a group when they answer the same question (text before the TAB / 'A:')."""
    return _factorize([re.split(r"\t|\s+A: ", statement, maxsplit=1)[0].strip() for statement in statements])


def context_groups(statements: list[str], labels: np.ndarray, path: Path | str) -> np.ndarray:
    """StereoSet: rows come in adjacent pairs (one per label) whose shared words are the context.

    The context is the pair's common prefix cut back to the last space, so a sentence that
    happens to start with the same letters as its partner does not leak into the context.
    """
    if len(statements) % 2:
        raise DatasetError(f"{path}: {len(statements)} rows; expected adjacent context pairs (an even count)")
    contexts = []
    for first in range(0, len(statements), 2):
        pair = statements[first : first + 2]
        if labels[first] == labels[first + 1]:
            raise DatasetError(f"{path}: data rows {first + 1} and {first + 2} form a pair with the same label")
        prefix = os.path.commonprefix(pair)
        cut = prefix.rfind(" ")
        if cut <= 0:
            raise DatasetError(f"{path}: data rows {first + 1} and {first + 2} share no context")
        contexts += [prefix[:cut].strip()] * 2
    return _factorize(contexts)


def twin_groups(statements: list[str], labels: np.ndarray, path: Path | str) -> np.ndarray:
    """SST-2 (perturbed): a sentence and its upper-cased copy share the lower-cased text."""
    return _factorize([statement.lower() for statement in statements])


def duplicate_groups(statements: list[str], labels: np.ndarray, path: Path | str) -> np.ndarray:
    """No natural groups: identical statements share a group so duplicates never straddle a split.

    "Identical" ignores whitespace: ToxiGen holds 30 copies that differ only by leading or trailing spaces.
    """
    return _factorize([text_key(statement) for statement in statements])


GROUPERS: dict[str, Callable[[list[str], np.ndarray, Path | str], np.ndarray]] = {
    "truthfulqa": question_groups,
    "toxigen": duplicate_groups,
    "confaide": duplicate_groups,
    "stereoset": context_groups,
    "sst2": twin_groups,
}

CLEANUPS: dict[str, tuple[str, Callable[[str], str]]] = {
    "toxigen": (f"'{TOXIGEN_CR}' replaced by a newline (clean=True)", lambda text: text.replace(TOXIGEN_CR, "\n")),
}


def _sst2_sentiment(path: Path) -> TrustDataset:
    """stsa.binary.test: one '<label> <sentence>' per line; PTB escapes undone to match GLUE's text."""
    statements, labels, places = [], [], []
    for number, line in _lines(path):
        label, _, sentence = line.partition(" ")
        statements.append(hub.undo_ptb_escapes(sentence))
        labels.append(label)
        places.append(f"line {number}")
    columns = validate(Table(pd.DataFrame({"statement": statements, "label": labels}), places), path)
    return TrustDataset("sst2_sentiment", columns.statements, columns.labels, None, CARDS["sst2_sentiment"], str(path))


def _confaide_tier2(vignettes: Path, stories: Path, ratings: Path) -> TrustDataset:
    """ConfAIde tier 2: each scenario as vignette (2a) and story (2b), labelled by its mean human agreement."""
    texts_a = [_scenario(line, vignettes, number) for number, line in _lines(vignettes)]
    texts_b = [_scenario(line, stories, number) for number, line in _lines(stories)]
    agreement = [_rating(line, ratings, number) for number, line in _lines(ratings)]
    if not len(texts_a) == len(texts_b) == len(agreement):
        raise DatasetError(
            f"{ratings.parent}: {len(texts_a)} vignettes, {len(texts_b)} stories and {len(agreement)} ratings; "
            "expected one rating per scenario"
        )
    statements, labels, groups = [], [], []
    for scenario, (vignette, story, value) in enumerate(zip(texts_a, texts_b, agreement)):
        if ACCEPTABLE_ABOVE >= value > VIOLATION_AT_MOST:
            continue
        label = int(value <= VIOLATION_AT_MOST)
        statements += [vignette, story]
        labels += [label, label]
        groups += [scenario, scenario]
    source = f"{vignettes} + {stories.name} + {ratings.name}"
    card = CARDS["confaide_tier2"]
    return TrustDataset("confaide_tier2", statements, np.array(labels), np.array(groups, dtype=np.int64), card, source)


def _lines(path: Path) -> list[tuple[int, str]]:
    """Non-blank lines of a UTF-8 text file with their 1-based line numbers (see `text_lines`)."""
    return [(number, text) for number, text in text_lines(path) if text.strip()]


def _scenario(line: str, path: Path, number: int) -> str:
    """The scenario after ConfAIde's instruction, which ends at a literal backslash-n."""
    _, separator, scenario = line.partition("\\n")
    if not separator or not scenario.strip():
        raise DatasetError(f"{path}: line {number} has no scenario after the literal '\\n'")
    return scenario.strip()


def _rating(line: str, path: Path, number: int) -> float:
    """One mean human rating, on ConfAIde's scale of -100 (a violation) to 100 (acceptable)."""
    try:
        value = float(line)
    except ValueError:
        value = math.nan
    if not -100 <= value <= 100:  # also false for NaN
        raise DatasetError(f"{path}: line {number}: rating {line.strip()!r} is not a number from -100 to 100")
    return value
