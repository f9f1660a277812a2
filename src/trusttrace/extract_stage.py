"""The extract stage as a unit of work: a dataset's activations, extracted into the workspace once.

It reads what it needs, computes, and publishes its activation set atomically in the store, so
it can be re-run, skipped when done, or run on another process or machine (see steering_stage
for the steering and evaluation units, analysis for probes and MI).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

from transformers import PreTrainedModel, PreTrainedTokenizerBase

from trusttrace.data import TrustDataset
from trusttrace.errors import CorruptArtefactError
from trusttrace.extract import check_position, iter_activations
from trusttrace.models import decoder_layers, layer_set
from trusttrace.provenance import activation_provenance
from trusttrace.store import DEFAULT_SHARD_BYTES, ActivationRecord, ActivationStore, check_store


def extract_to_store(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    dataset: TrustDataset,
    store: ActivationStore,
    *,
    layers: str | int | Sequence[int] = "all",
    position: str = "last",
    batch_size: int | None = None,
    model_name: str | None = None,
    checkpoint: str | None = None,
    step: int | None = None,
    tokens: int | None = None,
    memory_budget: int = DEFAULT_SHARD_BYTES,
    progress: bool = False,
) -> ActivationRecord:
    """Extract `dataset`'s activations into the store, or return the stored set when present.

    Output is streamed to shards of at most `memory_budget` bytes (or one batch, when a batch is
    larger), so a dataset whose activations do not fit in memory is still extracted; writing
    holds about four shards' worth. `layers` is the set of blocks to store: a block named twice
    is stored once, in block order. A stored set that is damaged (an unreadable sidecar, a
    missing shard, a checksum that fails) is reported in a warning and recomputed, never used.
    A model from `load_model` is named by the files it was loaded from: one changed in memory
    afterwards (a LoRA merge, say) should drop its `trusttrace_source` attribute, so that it is
    named by a checksum of its weights as a model built in memory is.
    """
    check_store(store)
    check_position(position)
    chosen = layer_set(layers, len(decoder_layers(model)))  # one selection, however written, is one set
    provenance = activation_provenance(
        model, tokenizer, dataset=dataset.name, dataset_hash=dataset.content_hash, n=len(dataset),
        position=position, layers=chosen, model_name=model_name, checkpoint=checkpoint, step=step, tokens=tokens,
    )
    with store.locked():
        existing = _intact(store, provenance)
        if existing is not None:
            return existing
        batches = iter_activations(
            model, tokenizer, dataset.statements, layers=chosen, position=position,
            batch_size=batch_size, progress=progress,
        )
        return store.save_batches(batches, dataset, provenance, shard_bytes=memory_budget)


def _intact(store: ActivationStore, provenance: dict[str, Any]) -> ActivationRecord | None:
    """The stored set of this provenance when it is there, intact and current; None when it is
    absent, damaged, or made before the model's config or tokenizer files changed (said in a
    warning: the caller recomputes it in place)."""
    try:
        existing = store.find(provenance)
        if existing is not None:
            store.check(existing)
    except CorruptArtefactError as error:
        warnings.warn(f"{error}: the activation set is damaged and is recomputed", stacklevel=3)
        return None
    stored = existing.provenance.get("files_sha256") if existing is not None else None
    if stored is not None and stored != provenance.get("files_sha256"):
        warnings.warn(
            f"{existing.path}: the model's config or tokenizer files changed since this set was extracted; "
            "it is recomputed", stacklevel=3,
        )
        return None
    return existing
