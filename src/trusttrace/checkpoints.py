"""Checkpoint suites: the pre-training checkpoints of a model family, and choosing which to trace.

A suite lists every checkpoint in training order (Hub revision or local folder, step, tokens
seen); `select` picks a subset by name, stride, log spacing or prefix. Each checkpoint loads with
`trusttrace.load_model(ckpt.model_id, revision=ckpt.revision)`.
"""

from __future__ import annotations

import difflib
import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from huggingface_hub import list_repo_refs
from huggingface_hub.utils import HfHubHTTPError, RepositoryNotFoundError

from trusttrace.data.hub import NETWORK_ERRORS, first_line, hub_reachable, offline_reason
from trusttrace.errors import CheckpointError, OfflineError

PYTHIA_SIZES = ("14m", "31m", "70m", "160m", "410m", "1b", "1.4b", "2.8b", "6.9b", "12b")
PYTHIA_TOKENS_PER_STEP = 1024 * 2048  # batch of 1024 sequences of 2048 tokens
AMBER_CHECKPOINTS = 360
AMBER_TOKENS = 1_259_130_000_000  # the README's data mix total, 1259.13B tokens, one of 360 chunks per checkpoint
OLMO_REPOS = {"olmo-7b": "allenai/OLMo-7B-hf", "olmo-1b": "allenai/OLMo-1B-hf"}
OLMO_TARGETS = {"olmo-7b": {"sft": "allenai/OLMo-7B-SFT-hf", "instruct": "allenai/OLMo-7B-Instruct-hf"}, "olmo-1b": {}}
OLMO_BRANCH = re.compile(r"^(?:stage1-)?step(\d+)-tokens(\d+)B$")
LOCAL_PREFIX = "local:"
# A step in a folder name: after a keyword (step=500, ckpt_005, checkpoint-2000), a whole number
# (not the 7 of "7b", not "100k"); else the name's only whole number.
LOCAL_STEP = re.compile(r"(step|ckpt|checkpoint|iteration|iter)[-_=]?(\d+)(?![A-Za-z\d])", re.IGNORECASE)
WHOLE_NUMBER = re.compile(r"(?<![A-Za-z\d])\d+(?![A-Za-z\d])")
SELECTION_HELP = "a name, a comma-separated list of names, 'all', 'every:K', 'log:N' or 'first:N'"


@dataclass(frozen=True)
class Checkpoint:
    """One checkpoint: a Hub revision of `model_id`, or a local folder (`revision` None)."""

    name: str
    model_id: str
    revision: str | None
    step: int | None
    tokens: int | None


@dataclass
class CheckpointSuite:
    """The checkpoints of one training run in training order, plus fine-tuned targets to steer."""

    name: str
    model_id: str
    description: str
    checkpoints: list[Checkpoint]
    targets: dict[str, str] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.checkpoints)

    def names(self) -> list[str]:
        """Checkpoint names in training order."""
        return [checkpoint.name for checkpoint in self.checkpoints]

    def get(self, name: str) -> Checkpoint:
        """The checkpoint called `name`; CheckpointError naming the closest names when there is none."""
        for checkpoint in self.checkpoints:
            if checkpoint.name == name:
                return checkpoint
        near = difflib.get_close_matches(name, self.names(), n=3, cutoff=0.5)
        hint = f"; did you mean {', '.join(near)}?" if near else f"; it has {self.names()[0]} .. {self.names()[-1]}"
        raise CheckpointError(f"suite {self.name} has no checkpoint {name!r}{hint}")

    def select(self, spec: str | Sequence[str]) -> list[Checkpoint]:
        """Checkpoints in training order chosen by `spec`: names, 'all', 'every:K', 'log:N' or 'first:N'.

        every:K takes every K-th checkpoint from the first, plus the last; log:N takes N checkpoints
        log-spaced over the steps (over positions where steps are unknown), from N = 2 always the
        first and the last; first:N the first N. Names may repeat; each checkpoint comes once.
        """
        if not isinstance(spec, str):
            if isinstance(spec, (bytes, Mapping)) or not isinstance(spec, Iterable):
                raise CheckpointError(f"selection {spec!r} is neither text nor a list of names: use {SELECTION_HELP}")
            return self._by_names(list(spec))
        text = spec.strip()
        if text == "all":
            return list(self.checkpoints)
        kind, colon, value = text.partition(":")
        if colon and kind not in ("every", "log", "first"):
            raise CheckpointError(f"bad selection {spec!r}: use {SELECTION_HELP}")
        if colon:
            count = _positive(value, text)
            if kind == "first":
                return self.checkpoints[:count]
            if kind == "every":
                positions = sorted(set(range(0, len(self), count)) | {len(self) - 1})
                return [self.checkpoints[i] for i in positions]
            return [self.checkpoints[i] for i in _log_positions(self._order_keys(), count)]
        return self._by_names([name.strip() for name in text.split(",") if name.strip()])

    def _by_names(self, names: list[str]) -> list[Checkpoint]:
        if not names:
            raise CheckpointError(f"empty selection: use {SELECTION_HELP}")
        for name in names:
            if not isinstance(name, str):
                raise CheckpointError(f"checkpoint {name!r} is not a name; names are text, e.g. {self.names()[0]!r}")
        wanted = {self.get(name.strip()).name for name in names}
        return [checkpoint for checkpoint in self.checkpoints if checkpoint.name in wanted]

    def _order_keys(self) -> list[int]:
        """Steps when every checkpoint has one, else positions: the axis log spacing works on."""
        steps = [checkpoint.step for checkpoint in self.checkpoints]
        return steps if all(step is not None for step in steps) else list(range(len(self)))


def _positive(value: str, spec: str) -> int:
    """The count in 'kind:N'; CheckpointError unless it is a whole number >= 1."""
    try:
        count = int(value)
    except ValueError:
        count = 0
    if count < 1:
        raise CheckpointError(f"bad selection {spec!r}: {value!r} is not a positive whole number")
    return count


def _log_positions(keys: list[int], count: int) -> list[int]:
    """`count` distinct positions spread evenly in log(1 + key) from the first key to the last.

    Each log-spaced target takes its nearest position; where targets collide (checkpoints sparser
    than the targets, as at Pythia's start), the free position farthest from every chosen one is
    added until there are `count`. The first and the last are always in.
    """
    if count >= len(keys):
        return list(range(len(keys)))
    logs = [math.log1p(key - keys[0]) for key in keys]
    targets = [logs[-1] * i / (count - 1) for i in range(count)] if count > 1 else [0.0]
    chosen = {min(range(len(keys)), key=lambda i: abs(logs[i] - target)) for target in targets}
    while len(chosen) < count:
        free = [i for i in range(len(keys)) if i not in chosen]
        chosen.add(max(free, key=lambda i: min(abs(logs[i] - logs[j]) for j in chosen)))
    return sorted(chosen)


def list_suites() -> dict[str, str]:
    """Suite names and what they are; `local:DIR` (any folder of checkpoints) works as well."""
    suites = {"amber": "LLM360/Amber 7B: 360 checkpoints ckpt_000..ckpt_359 over 1.26T tokens"}
    for size in PYTHIA_SIZES:
        suites[f"pythia-{size}"] = f"EleutherAI/pythia-{size}: 154 checkpoints step0..step143000 (Pile)"
        suites[f"pythia-{size}-deduped"] = f"EleutherAI/pythia-{size}-deduped: 154 checkpoints (deduplicated Pile)"
    for name, repo in OLMO_REPOS.items():
        suites[name] = f"{repo}: stepN-tokensNB branches, listed from the Hub (needs network)"
    return suites


def checkpoint_suite(name: str) -> CheckpointSuite:
    """The suite called `name` (see list_suites), or `local:DIR` for a folder of checkpoint folders."""
    if name == "amber":
        return amber_suite()
    if name.startswith("pythia-"):
        size, _, variant = name.removeprefix("pythia-").partition("-")
        if size in PYTHIA_SIZES and variant in ("", "deduped"):
            return pythia_suite(size, deduped=variant == "deduped")
    if name in OLMO_REPOS:
        return olmo_suite(name)
    if name.startswith(LOCAL_PREFIX):
        return local_suite(Path(name.removeprefix(LOCAL_PREFIX)).expanduser())
    known = ", ".join(list_suites())
    raise CheckpointError(f"unknown suite {name!r}; known: {known}, or local:DIR")


def amber_suite() -> CheckpointSuite:
    """LLM360 Amber: checkpoint i has seen data chunks 0..i, (i + 1)/360 of 1259.13B tokens.

    Amber publishes no optimizer step per checkpoint, so `step` is None and log spacing runs over
    checkpoint positions.
    """
    checkpoints = [
        Checkpoint(f"ckpt_{i:03d}", "LLM360/Amber", f"ckpt_{i:03d}", None, round((i + 1) * AMBER_TOKENS / AMBER_CHECKPOINTS))
        for i in range(AMBER_CHECKPOINTS)
    ]
    return CheckpointSuite(
        "amber",
        "LLM360/Amber",
        "LLM360 Amber 7B (LLaMA architecture), 360 checkpoints, ~3.5B tokens apart (tokens approximate)",
        checkpoints,
        {"chat": "LLM360/AmberChat", "safe": "LLM360/AmberSafe"},
    )


def pythia_steps() -> list[int]:
    """Pythia's 154 saved steps: 0, the powers of two 1..512, then every 1000 up to 143000."""
    return [0] + [2**i for i in range(10)] + list(range(1000, 143001, 1000))


def pythia_suite(size: str, deduped: bool = False) -> CheckpointSuite:
    """EleutherAI Pythia of one size; tokens = step x 2,097,152 (1024 sequences of 2048 tokens per step)."""
    model_id = f"EleutherAI/pythia-{size}{'-deduped' if deduped else ''}"
    checkpoints = [
        Checkpoint(f"step{step}", model_id, f"step{step}", step, step * PYTHIA_TOKENS_PER_STEP) for step in pythia_steps()
    ]
    data = "the deduplicated Pile" if deduped else "the Pile"
    name = model_id.removeprefix("EleutherAI/")
    return CheckpointSuite(name, model_id, f"{model_id}, trained on {data}, 154 checkpoints", checkpoints, {})


def parse_olmo_branch(branch: str) -> tuple[int, int] | None:
    """(step, tokens) from an OLMo branch name 'stepN-tokensMB' or 'stage1-stepN-tokensMB'; None otherwise."""
    match = OLMO_BRANCH.match(branch)
    return (int(match[1]), int(match[2]) * 10**9) if match else None


def olmo_suite(name: str) -> CheckpointSuite:
    """An OLMo suite from the repository's branches on the Hub (stage-2 and other branches are skipped)."""
    repo = OLMO_REPOS[name]
    if not hub_reachable():
        raise OfflineError(f"suite {name}: listing the revisions of {repo} needs the Hugging Face Hub, and {offline_reason()}")
    try:
        branches = [branch.name for branch in list_repo_refs(repo).branches]
    except RepositoryNotFoundError as error:
        raise CheckpointError(f"suite {name}: the Hub has no model {repo}") from error
    except NETWORK_ERRORS as error:
        raise OfflineError(
            f"suite {name}: listing the revisions of {repo} needs the Hugging Face Hub, which cannot be reached "
            f"({type(error).__name__})"
        ) from error
    except HfHubHTTPError as error:
        raise CheckpointError(f"suite {name}: the Hub refused {repo} ({first_line(error)})") from error
    checkpoints = []
    for branch in branches:
        parsed = parse_olmo_branch(branch)
        if parsed is not None:
            checkpoints.append(Checkpoint(branch, repo, branch, *parsed))
    if not checkpoints:
        raise CheckpointError(f"suite {name}: {repo} has no branch named like step1000-tokens4B")
    checkpoints.sort(key=lambda checkpoint: (checkpoint.step, checkpoint.name))
    description = f"{repo}, {len(checkpoints)} checkpoints listed from the Hub (tokens rounded to billions)"
    return CheckpointSuite(name, repo, description, checkpoints, dict(OLMO_TARGETS[name]))


def local_step(folder_name: str) -> int | None:
    """The step in a checkpoint folder's name: the last number after "step", else after
    ckpt/checkpoint/iter(ation), else its only whole number; None when that is not clear
    ("checkpoint-1e3", "run-1-500") and the suite names the folder in its error."""
    matches = LOCAL_STEP.findall(folder_name)
    if matches:
        steps = [number for keyword, number in matches if keyword.lower() == "step"] or [number for _, number in matches]
        return int(steps[-1])
    numbers = WHOLE_NUMBER.findall(folder_name)
    return int(numbers[0]) if len(numbers) == 1 else None


def local_tokens(folder: Path) -> int | None:
    """Tokens seen, from trusttrace.json ('tokens') or a Trainer's trainer_state.json ('num_input_tokens_seen').

    A Trainer writes 0 tokens at every step unless asked to count them, so 0 after step 0 is unknown.
    """
    for file_name, key in (("trusttrace.json", "tokens"), ("trainer_state.json", "num_input_tokens_seen")):
        path = folder / file_name
        if not path.is_file():
            continue
        try:
            state = json.loads(path.read_text(encoding="utf-8"))
            value = state.get(key)
        except (json.JSONDecodeError, UnicodeDecodeError, AttributeError) as error:
            raise CheckpointError(f"{path}: not a JSON object ({error})") from error
        uncounted = value == 0 and file_name == "trainer_state.json" and _whole(state.get("global_step")) > 0
        if _whole(value) >= 0 and not uncounted:
            return value
    return None


def _whole(value: object) -> int:
    """`value` when it is a JSON whole number (not a boolean), else -1."""
    return value if isinstance(value, int) and not isinstance(value, bool) else -1


def local_suite(directory: Path) -> CheckpointSuite:
    """Every sub-folder of `directory` holding a config.json, ordered by the step in its name."""
    if not directory.is_dir():
        raise CheckpointError(f"local suite: {directory} is not a folder")
    folders = sorted(path for path in directory.iterdir() if (path / "config.json").is_file())
    if not folders:
        raise CheckpointError(f"local suite: no checkpoint folders (sub-folders with a config.json) in {directory}")
    unnumbered = [folder.name for folder in folders if local_step(folder.name) is None]
    if unnumbered:
        raise CheckpointError(f"local suite {directory}: no step number in folder name(s) {', '.join(unnumbered)}")
    by_step: dict[int, Path] = {}
    for folder in folders:
        step = local_step(folder.name)
        if step in by_step:
            raise CheckpointError(f"local suite {directory}: folders {by_step[step].name} and {folder.name} share step {step}")
        by_step[step] = folder
    checkpoints = [
        Checkpoint(folder.name, str(folder.resolve()), None, step, local_tokens(folder)) for step, folder in sorted(by_step.items())
    ]
    resolved = str(directory.resolve())
    return CheckpointSuite(f"{LOCAL_PREFIX}{resolved}", resolved, f"{len(checkpoints)} local checkpoints in {resolved}", checkpoints, {})
