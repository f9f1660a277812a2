"""Checks of a sweep config against what exists, before any work: reading only what is on disk.

The suite and its checkpoints, the datasets, the steering source, the evaluation tasks, the
layers against the model's block count (from a local or Hub-cached config.json), stored
activations for the stages that read them, a writable workspace. Each helper returns one
problem line or None; `check_names` raises the first as a ConfigError and returns what it
could not check here, so "valid" never claims more than was checked.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from trusttrace.config import SweepConfig, is_dataset_file, is_int, layer_use_problem
from trusttrace.errors import ConfigError

if TYPE_CHECKING:
    from trusttrace.checkpoints import Checkpoint, CheckpointSuite

READS_ACTIVATIONS = ("probes", "mi", "steering")  # stages that read what extract stored


def check_names(config: SweepConfig, where: str = "config") -> list[str]:
    """Check what the config names against what exists, reading only what is on disk already.

    The suite and its checkpoints, the datasets, the steering source, the evaluation tasks, the
    layers against the model's block count (when its config.json is local or in the Hub cache),
    stored activations for stages that read them, a writable workspace. Nothing is downloaded,
    written or started. Returns the checks left to run time (layers whose model config is not
    on disk, a device this machine lacks), one line each.
    """
    from trusttrace.checkpoints import checkpoint_suite
    from trusttrace.errors import TrustTraceError

    try:
        suite = checkpoint_suite(config.suite)
        checkpoints = suite.select(config.checkpoints)
    except TrustTraceError as error:
        raise ConfigError(f"{where}: key 'suite'/'checkpoints': {error}") from None
    problem = (
        _dataset_problem(config)
        or _source_problem(config, suite)
        or _task_problem(config)
        or _block_count_problem(config, checkpoints[0])
        or _activations_problem(config)
        or _workspace_problem(config)
    )
    if problem:
        raise ConfigError(f"{where}: {problem}")
    return _unchecked(config, checkpoints[0])


def _unchecked(config: SweepConfig, checkpoint: "Checkpoint") -> list[str]:
    """What this machine cannot check: the layer range without a config.json on disk, the device."""
    from trusttrace.errors import TrustTraceError
    from trusttrace.models import check_device

    notes = []
    if _block_count(checkpoint) is None:
        notes.append(f"the layers against the model (no config.json of {checkpoint.name} on disk yet; checked when it loads)")
    try:
        check_device(config.device, "key 'device':")
    except TrustTraceError as error:
        notes.append(f"the device: {error} (a run here would stop; a machine that has it can run this config)")
    return notes


def _dataset_problem(config: SweepConfig) -> str | None:
    """A dataset that is neither a built-in name nor an existing file."""
    from trusttrace.data import builtin_cards

    known = builtin_cards()
    for name in config.datasets:
        if name in known or Path(name).expanduser().exists():
            continue
        if is_dataset_file(name):
            return f"key 'datasets': no such file {name}"
        return f"key 'datasets': unknown dataset {name!r}; known: {', '.join(known)}, or a file path"
    return None


def _source_problem(config: SweepConfig, suite: "CheckpointSuite") -> str | None:
    """A steering source that is not a checkpoint of the suite."""
    from trusttrace.errors import TrustTraceError

    if "steering" not in config.stages:
        return None
    try:
        suite.get(config.steering.source)
    except TrustTraceError as error:
        return f"key 'steering.source': {error}"
    return None


def _task_problem(config: SweepConfig) -> str | None:
    """An evaluation task the registry lacks, or one that needs a dataset the evaluate stage does not give."""
    if config.evaluate is None:
        return None
    from trusttrace.errors import EvaluationError
    from trusttrace.evaluation import get_task

    for name in config.evaluate.tasks:
        try:
            task = get_task(name)
        except EvaluationError as error:
            return f"key 'evaluate.tasks': {error}"
        if task.takes_dataset and task.dataset is None:
            return (f"key 'evaluate.tasks': task {name!r} needs a dataset, and the evaluate stage runs each task on its own; "
                    "the steering stage evaluates the sweep's datasets (its unsteered baseline included)")
    return None


def _block_count_problem(config: SweepConfig, checkpoint: "Checkpoint") -> str | None:
    """Layers outside the model's blocks, or mi/steering layers not extracted, when the block count is on disk."""
    found = _block_count(checkpoint)
    if found is None:
        return None
    count, source = found
    if config.layers == "all":
        return layer_use_problem(config, list(range(count)))
    from trusttrace.errors import LayerError
    from trusttrace.models import check_layers

    try:
        stored = check_layers(config.layers, count)
    except LayerError as error:
        return f"key 'layers': {error} ({source})"
    return layer_use_problem(config, stored)


def _block_count(checkpoint: "Checkpoint") -> tuple[int, Path] | None:
    """A checkpoint's decoder-block count and the config.json that says so, when that file is on disk.

    A local checkpoint's folder, or a Hub checkpoint already in the Hub cache; None otherwise
    (validation never downloads) or when the file does not say (the load at run time will).
    """
    path = _config_on_disk(checkpoint)
    if path is None:
        return None
    try:
        settings = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(settings, dict):
        return None
    text = settings.get("text_config")
    count = (text if isinstance(text, dict) and "num_hidden_layers" in text else settings).get("num_hidden_layers")
    return (count, path) if is_int(count) and count > 0 else None


def _config_on_disk(checkpoint: "Checkpoint") -> Path | None:
    """The checkpoint's config.json in its local folder or in the Hub cache, without asking the Hub."""
    if checkpoint.revision is None:
        path = Path(checkpoint.model_id) / "config.json"
        return path if path.is_file() else None
    from huggingface_hub import try_to_load_from_cache

    cached = try_to_load_from_cache(checkpoint.model_id, "config.json", revision=checkpoint.revision)
    return Path(cached) if isinstance(cached, str) else None


def _activations_problem(config: SweepConfig) -> str | None:
    """Stages that read stored activations, without extract, over a workspace that has none."""
    from trusttrace.store import ACTIVATIONS_DIR

    readers = [stage for stage in config.stages if stage in READS_ACTIVATIONS]
    if "extract" in config.stages or not readers:
        return None
    folder = config.workspace / ACTIVATIONS_DIR
    if folder.is_dir() and any(folder.iterdir()):
        return None
    return f"key 'stages': {', '.join(readers)} read stored activations and {config.workspace} has none: add extract to stages"


def _workspace_problem(config: SweepConfig) -> str | None:
    """A workspace that is not, and cannot be made, a writable folder."""
    if _writable(config.workspace):
        return None
    return f"key 'workspace': {config.workspace} is not a writable folder"


def _writable(folder: Path) -> bool:
    """Whether `folder` exists as a writable folder or can be made; tries a temporary file, leaves nothing."""
    existing = next((p for p in (folder, *folder.parents) if p.exists()), Path("/"))
    if not existing.is_dir():
        return False
    try:
        with tempfile.TemporaryFile(dir=existing):
            return True
    except OSError:
        return False
