"""Building the built-in datasets from their Hugging Face sources, for users without the study files.

The Hub copies are the datasets the study started from, not its CSVs, so each build says on its
card how it differs. Offline (no network, or HF_HUB_OFFLINE=1) a dataset already in the Hugging
Face cache is built from there; any other raises OfflineError with a one-line message that says
where to get the files instead.
"""

from __future__ import annotations

import functools
import importlib
import os
import socket
import warnings
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import pandas as pd
from huggingface_hub import constants, snapshot_download
from huggingface_hub.utils import (
    GatedRepoError,
    HfHubHTTPError,
    LocalEntryNotFoundError,
    OfflineModeIsEnabled,
    RepositoryNotFoundError,
)

from trusttrace.data.cards import CARDS
from trusttrace.data.dataset import TrustDataset, text_key
from trusttrace.data.files import Table, validate
from trusttrace.errors import DatasetError, OfflineError

STUDY_FILES_URL = "https://github.com/ChnQ/TracingLLM (src/datasets/)"
HUB_PROBE_SECONDS = 3.0  # to wait for the Hub's host before taking this machine as offline
PROXY_VARIABLES = ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")
UNREACHABLE: list[str] = []  # the Hub's host, once `_host_answers` found it unreachable
CACHE_NOTED: set[str] = set()  # dataset repositories built offline from the cache in this process, said once
PTB_ESCAPES = {"-lrb-": "(", "-rrb-": ")", "\\/": "/", "\\*": "*"}
SST2_UPPER_SEED = 0
SST2_UPPER_WORD_PROBABILITY = 0.2


def _network_errors() -> tuple[type[BaseException], ...]:
    """Exceptions that mean 'the Hub cannot be reached', whichever HTTP client huggingface_hub uses.

    huggingface_hub 0.x uses requests, 1.x httpx and 2.x httpx2; each raises its own transport errors.
    """
    errors: list[type[BaseException]] = [LocalEntryNotFoundError, OfflineModeIsEnabled, ConnectionError, TimeoutError]
    for module_name, names in (("httpx2", ("TransportError",)), ("httpx", ("TransportError",)), ("requests", ("ConnectionError", "Timeout"))):
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            continue
        errors += [getattr(module, name) for name in names]
    return tuple(errors)


NETWORK_ERRORS = _network_errors()


def first_line(error: BaseException) -> str:
    """The first line of an exception's message, or its type name when it has none."""
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__


# Variables that switch the Hub off: huggingface_hub reads either as its offline switch.
OFFLINE_VARIABLES = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")


def hub_offline() -> bool:
    """True when an offline variable is set now (read at call time) or offline mode was on when
    huggingface_hub loaded, or `_host_answers` found the Hub's host unreachable."""
    return _offline_variable() is not None or bool(constants.HF_HUB_OFFLINE)


def offline_reason() -> str:
    """Why the Hub is off: the variable set, or the host `_host_answers` could not reach."""
    variable = _offline_variable()
    if variable is not None:
        return f"{variable} is set"
    if UNREACHABLE:
        return f"{UNREACHABLE[0]} cannot be reached"
    return "offline mode was on when huggingface_hub loaded"


def _offline_variable() -> str | None:
    """The first of `OFFLINE_VARIABLES` set to a true value now, if any."""
    return next(
        (name for name in OFFLINE_VARIABLES if os.environ.get(name, "").strip().upper() in {"1", "ON", "YES", "TRUE"}),
        None,
    )


def hub_reachable() -> bool:
    """Whether the Hub may be asked: it is not switched off, and its host answered within
    HUB_PROBE_SECONDS when first asked in this process (see `_host_answers`)."""
    return not hub_offline() and _host_answers()


@functools.cache
def _host_answers() -> bool:
    """Whether the Hub's host answers, asked once per process.

    When it does not (and no proxy is set, which a direct connection would bypass), huggingface_hub
    and transformers are switched to offline mode for this process: cached files are then used at
    once, and a missing one fails with one line instead of after half a minute of retries.
    """
    if any(os.environ.get(variable) for variable in PROXY_VARIABLES):
        return True
    endpoint = urlparse(constants.ENDPOINT)
    host = endpoint.hostname or "huggingface.co"
    try:
        with socket.create_connection((host, endpoint.port or 443), timeout=HUB_PROBE_SECONDS):
            return True
    except OSError:
        UNREACHABLE[:] = [host]
        constants.HF_HUB_OFFLINE = True
        return False


@dataclass(frozen=True)
class HubSource:
    """Where a built-in name lives on the Hub and how its files become `statement,label,group` rows."""

    repo_id: str
    patterns: tuple[str, ...]
    build: Callable[[list[Path]], pd.DataFrame]
    grouping: str | None
    quirks: tuple[str, ...]
    label_1: str | None = None  # what the labels mean where the build differs from the local card's
    label_0: str | None = None
    cleanups: tuple[str, ...] = ()  # what the build changes in the source's text, as on a card


def load_from_hub(name: str, looked: str, advice: str) -> TrustDataset:
    """Download `name`'s Hub source and build it; `looked` says why no local copy was used, and
    `advice` where to get the local files (said when the Hub cannot help)."""
    spec = HUB_SOURCES[name]
    files = download(spec.repo_id, spec.patterns, f"{name}: {looked}", advice)
    try:
        frame = spec.build(files)
    except (KeyError, AttributeError, ValueError) as error:
        raise DatasetError(f"{name}: the files of {spec.repo_id} are not laid out as expected ({error!r})") from error
    where = f"https://huggingface.co/datasets/{spec.repo_id}"
    columns = validate(Table(frame), where)
    groups = None if columns.groups is None else pd.factorize(columns.groups)[0].astype(np.int64)
    local = CARDS[name]
    card = replace(
        local, source=where, grouping=spec.grouping, quirks=spec.quirks, url=where, cleanups=spec.cleanups,
        label_1=spec.label_1 or local.label_1, label_0=spec.label_0 or local.label_0,
    )
    return TrustDataset(name, columns.statements, columns.labels, groups, card, spec.repo_id)


def download(repo_id: str, patterns: tuple[str, ...], context: str, advice: str) -> list[Path]:
    """The files of dataset repo `repo_id` matching `patterns`, from the Hub, or from the local
    HF cache alone when the Hub is off (see `hub_reachable`)."""
    if not hub_reachable():
        return _cached(repo_id, patterns, f"{context}, and the Hugging Face Hub is off ({offline_reason()}); {advice}")
    try:
        folder = Path(snapshot_download(repo_id, repo_type="dataset", allow_patterns=list(patterns)))
    except GatedRepoError as error:
        raise DatasetError(
            f"{context}; {repo_id} is gated on the Hub: accept its terms at https://huggingface.co/datasets/{repo_id} "
            f"and log in (hf auth login), or {advice}"
        ) from error
    except RepositoryNotFoundError as error:
        raise DatasetError(f"{context}; the Hub has no dataset {repo_id}") from error
    except NETWORK_ERRORS as error:
        raise OfflineError(f"{context}, and the Hugging Face Hub cannot be reached ({type(error).__name__}); {advice}") from error
    except HfHubHTTPError as error:
        raise DatasetError(f"{context}; the Hub refused {repo_id} ({first_line(error)})") from error
    files = _matching(folder, patterns)
    if not files:
        raise DatasetError(f"{context}; {repo_id} has no file matching {', '.join(patterns)}")
    return files


def _cached(repo_id: str, patterns: tuple[str, ...], offline: str) -> list[Path]:
    """The files of `repo_id` matching `patterns` in the local HF cache; OfflineError `offline` when none are."""
    try:
        folder = Path(snapshot_download(repo_id, repo_type="dataset", allow_patterns=list(patterns), local_files_only=True))
    except NETWORK_ERRORS as error:
        raise OfflineError(offline) from error
    files = _matching(folder, patterns)
    if not files:
        raise OfflineError(offline)
    if repo_id not in CACHE_NOTED:  # once per dataset and process: a sweep loads its datasets more than once
        CACHE_NOTED.add(repo_id)
        warnings.warn(
            f"{repo_id}: the Hub is off, so it is built from the {len(files)} matching file(s) of the local Hugging "
            "Face cache; a download cut short would have left some out", stacklevel=2,
        )
    return files


def _matching(folder: Path, patterns: tuple[str, ...]) -> list[Path]:
    return sorted(path for pattern in patterns for path in folder.glob(pattern) if path.is_file())


def read_frames(files: list[Path]) -> pd.DataFrame:
    """Concatenate Parquet, JSONL and CSV files into one frame, in the given order."""
    readers = {".parquet": pd.read_parquet, ".jsonl": lambda path: pd.read_json(path, lines=True), ".csv": pd.read_csv}
    frames = [readers[path.suffix](path) for path in files if path.suffix in readers]
    if not frames:
        raise DatasetError(f"{files[0].parent}: no Parquet, JSONL or CSV file among {[path.name for path in files]}")
    return pd.concat(frames, ignore_index=True)


def truthfulqa_rows(files: list[Path]) -> pd.DataFrame:
    """One row per MC2 answer: 'Q: <question>' TAB 'A: <answer>', 1 for a true answer, 0 for a false one.

    The study's rows are MC2 answers too (of TruthfulQA v1's mc_task.json), with their final
    period, which the generation config's answers lack: the last token, the one probed, differs.
    """
    rows = []
    for record in read_frames(files).itertuples():
        targets = record.mc2_targets
        for answer, label in zip(targets["choices"], targets["labels"]):
            rows.append((f"Q: {record.question}\tA: {answer}", int(label), record.question))
    return pd.DataFrame(rows, columns=["statement", "label", "group"])


def toxigen_rows(files: list[Path]) -> pd.DataFrame:
    """ToxiGen's human-annotated rows; toxic when the mean human score is > 2 of 5, as in the study."""
    frame = read_frames(files)
    labels = (frame["toxicity_human"] > 2).astype(np.int64)
    return pd.DataFrame({"statement": frame["text"], "label": labels, "group": frame["text"].map(text_key)})


def stereoset_rows(files: list[Path]) -> pd.DataFrame:
    """Race items of StereoSet intersentence: context + anti-stereotype (1), context + unrelated (0)."""
    anti_stereotype, unrelated = 0, 2  # the dataset's gold_label class ids
    rows = []
    for record in read_frames(files).itertuples():
        if record.bias_type != "race":
            continue
        gold = list(record.sentences["gold_label"])
        sentences = list(record.sentences["sentence"])
        rows.append((f"{record.context} {sentences[gold.index(anti_stereotype)]}", 1, record.context))
        rows.append((f"{record.context} {sentences[gold.index(unrelated)]}", 0, record.context))
    return pd.DataFrame(rows, columns=["statement", "label", "group"])


def sst2_rows(files: list[Path]) -> pd.DataFrame:
    """Each SST-2 test sentence (0) and a copy with random letters upper-cased (1), side by side."""
    rng = np.random.default_rng(SST2_UPPER_SEED)
    rows = []
    for index, sentence in enumerate(read_frames(files)["sentence"]):
        rows += [(sentence, 0, index), (upper_random_letters(sentence, rng), 1, index)]
    return pd.DataFrame(rows, columns=["statement", "label", "group"])


def upper_random_letters(sentence: str, rng: np.random.Generator) -> str:
    """Upper-case one random letter in each word with probability 0.2, and in at least one word."""
    words = sentence.split(" ")
    candidates = [i for i, word in enumerate(words) if any(c.islower() for c in word)]
    if not candidates:
        return sentence
    chosen = [i for i in candidates if rng.random() < SST2_UPPER_WORD_PROBABILITY] or [int(rng.choice(candidates))]
    for i in chosen:
        letters = [j for j, c in enumerate(words[i]) if c.islower()]
        j = int(rng.choice(letters))
        words[i] = words[i][:j] + words[i][j].upper() + words[i][j + 1 :]
    return " ".join(words)


def sst2_sentiment_rows(files: list[Path]) -> pd.DataFrame:
    """SetFit's labelled copy of the SST-2 test split: 1 positive, 0 negative, PTB escapes undone
    as in the local build."""
    frame = read_frames(files)
    return pd.DataFrame({"statement": frame["text"].map(undo_ptb_escapes), "label": frame["label"]})


def undo_ptb_escapes(sentence: object) -> object:
    """The Penn Treebank escapes of SST's text (-lrb-, -rrb-, \\/, \\*) as the characters they stand for."""
    if not isinstance(sentence, str):
        return sentence
    for escape, character in PTB_ESCAPES.items():
        sentence = sentence.replace(escape, character)
    return sentence



HUB_SOURCES: dict[str, HubSource] = {
    "truthfulqa": HubSource(
        "truthfulqa/truthful_qa",
        ("multiple_choice/validation-*.parquet",),
        truthfulqa_rows,
        "by question",
        (
            "built from HF truthfulqa/truthful_qa (config multiple_choice, the MC2 answers): TruthfulQA v0 "
            "answers for all 817 questions, so it differs from the study's file (v1 MC2 answers, 410 "
            "questions, 2224 of its 2263 rows also v0's; the other 407 questions are its test questions)",
            f"for the exact study file get truthfulqa_train.csv from {STUDY_FILES_URL}",
            "each statement is 'Q: <question>' + a TAB + 'A: <answer>'",
            "the answers of a question are adjacent, so the paper protocol's unshuffled 80/20 split puts few "
            "questions on both sides, where the study's file (451 of its 453 test rows share a question with "
            "training rows) leaks: paper-protocol accuracies on this build are not comparable with the study's",
        ),
        label_1="a correct answer: an MC2 choice labelled 1 in HF truthful_qa's multiple_choice config (TruthfulQA v0)",
        label_0="an incorrect answer: an MC2 choice labelled 0",
    ),
    "toxigen": HubSource(
        "toxigen/toxigen-data",
        ("annotated/*.parquet",),
        toxigen_rows,
        "statements identical but for whitespace share a group",
        (
            "built from HF toxigen/toxigen-data (config annotated, train and test: 9900 rows) with the study's "
            "rule toxicity_human > 2; the study used SafeNLP's 6514-row subset, whose selection rule is undocumented",
            "the repository is gated: accept its terms on the Hub and log in first",
        ),
        label_1="toxic: mean human toxicity score > 2 on ToxiGen's 1-5 scale (toxigen-data's 'toxicity_human')",
    ),
    "stereoset": HubSource(
        "McGill-NLP/stereoset",
        ("intersentence/validation-*.parquet",),
        stereoset_rows,
        "by context",
        (
            "NOT stereotype vs. benign: label 1 is the anti-stereotype continuation, label 0 the unrelated one",
            "built from HF McGill-NLP/stereoset (intersentence, validation, bias_type race); the two rows of "
            "an item are adjacent and the order differs from the study's file",
        ),
    ),
    "sst2": HubSource(
        "stanfordnlp/sst2",
        ("data/test-*.parquet",),
        sst2_rows,
        "by twin (a sentence and its upper-cased copy)",
        (
            "NOT sentiment: the label marks the perturbation, not the polarity",
            "built from HF stanfordnlp/sst2 (test split); the upper-casing is re-drawn (seed 0: each word "
            "with probability 0.2 gets one random letter upper-cased, at least one word per sentence), so the "
            "letters differ from the study's file and no pair is identical",
            "a sentence and its copy are adjacent, so the paper protocol's unshuffled 80/20 split puts at most "
            "one twin pair on both sides, where the study's file (605 of its 729 test rows have their twin in "
            "training) leaks: paper-protocol accuracies on this build are not comparable with the study's",
        ),
    ),
    "sst2_sentiment": HubSource(
        "SetFit/sst2",
        ("test*", "data/test*"),
        sst2_sentiment_rows,
        None,
        ("built from HF SetFit/sst2 (test split, labelled; GLUE's own test split has no labels)",),
        cleanups=CARDS["sst2_sentiment"].cleanups,  # the local build's: sst2_sentiment_rows undoes the same escapes
    ),
}
