"""What every artefact records about where it came from.

An artefact without provenance is a bug: activations, probe tables, MI tables and steering
vectors all carry the model, revision, resolved commit, weight checksum, dataset and its
content hash, the extraction rule and the trusttrace version that made them.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Iterable
from importlib import metadata
from typing import Any

from transformers import PreTrainedModel, PreTrainedTokenizerBase

from trusttrace.models import describe_source, state_checksum, vocabulary_checksum

# Identity keys: two artefacts with equal values here are the same computation, so a stored
# one can stand in for a new one (the basis of resume). The checkpoint counts, so that two
# checkpoints of a run with the same weights keep their own sets. Other keys are descriptive:
# the tokenizer's name holds the folder it was loaded from, which differs between machines.
IDENTITY_KEYS = (
    "model", "checkpoint", "revision", "commit", "weights_sha256", "dataset", "dataset_hash",
    "position", "layers", "dtype", "tokenizer_sha256", "template",
)


def trusttrace_version() -> str:
    """The installed trusttrace version (or "unknown" when running from a bare source tree)."""
    try:
        return metadata.version("trusttrace")
    except metadata.PackageNotFoundError:
        return "unknown"


def now_utc() -> str:
    """The current time as an ISO-8601 UTC string, for `created` fields."""
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def tokenizer_name(tokenizer: PreTrainedTokenizerBase) -> str:
    """The tokenizer's name or path with its class, e.g. "EleutherAI/pythia-70m (GPTNeoXTokenizerFast)"."""
    name = getattr(tokenizer, "name_or_path", "") or "in-memory"
    return f"{name} ({type(tokenizer).__name__})"


def activation_provenance(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    *,
    dataset: str,
    dataset_hash: str,
    n: int,
    position: str,
    layers: list[int],
    model_name: str | None = None,
    checkpoint: str | None = None,
    step: int | None = None,
    tokens: int | None = None,
    template: str | None = None,
) -> dict[str, Any]:
    """The provenance of one activation set extracted from `model` for a dataset.

    `model_name` names the training run when the loaded path names only one checkpoint of it
    (a local suite's folder); the checkpoint then tells the checkpoints apart.
    """
    source = describe_source(model)
    return {
        "model": model_name or source["model"],
        "revision": source["revision"],
        "commit": source["commit"],
        "weights_sha256": source["weights_sha256"] or state_checksum(model),  # a key needs the weights named
        "architecture": source["architecture"],
        "checkpoint": checkpoint if checkpoint is not None else (source["revision"] or source["model"]),
        "step": step,
        "tokens": tokens,
        "dataset": dataset,
        "dataset_hash": dataset_hash,
        "n": n,
        "position": position,
        "layers": list(layers),
        "dtype": source["dtype"],
        "tokenizer": tokenizer_name(tokenizer),
        "tokenizer_sha256": source["tokenizer_sha256"] or vocabulary_checksum(tokenizer),
        "files_sha256": source.get("files_sha256"),
        "add_special_tokens": True,
        "template": template,
        "trusttrace_version": trusttrace_version(),
        "created": now_utc(),
    }


def identity(provenance: dict[str, Any]) -> dict[str, Any]:
    """The identity part of a provenance record (what makes two computations the same)."""
    return {key: provenance.get(key) for key in IDENTITY_KEYS}


def earlier_copies(checkpoints: Iterable[tuple[str, str | None]]) -> dict[str, str]:
    """Of one model's checkpoints in training order, as (name, weights checksum), each whose
    checksum an earlier one has, mapped to the first that has it (an unknown checksum matches none).

    Suites publish some revisions twice (Pythia's early steps share weights); their results
    repeat, which the sweep and the report point out.
    """
    first: dict[str, str] = {}
    copies: dict[str, str] = {}
    for name, digest in checkpoints:
        if digest is None:
            continue
        if digest in first:
            copies[name] = first[digest]
        else:
            first[digest] = name
    return copies
