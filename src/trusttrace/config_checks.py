"""Checks of a sweep config against what exists, before any work: reading only what is on disk.

The suite and its checkpoints, the datasets (read as a run reads them, and split as the probes
will split them), the data folder, the steering source, the evaluation tasks, the layers against
the model's block count (from a local or Hub-cached config.json), stored activations for the
stages that read them, a writable workspace. Each helper returns one
problem line or None; `check_names` raises the first as a ConfigError and returns what it
could not check here, so "valid" never claims more than was checked.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from trusttrace.config import SweepConfig, dataset_name, is_dataset_file, is_int, layer_use_problem
from trusttrace.errors import ConfigError

if TYPE_CHECKING:
    from trusttrace.checkpoints import Checkpoint, CheckpointSuite
    from trusttrace.data import TrustDataset

READS_ACTIVATIONS = ("probes", "mi", "steering")  # stages that read what extract stored


def check_names(config: SweepConfig, where: str = "config", config_file: Path | None = None) -> list[str]:
    """Check what the config names against what exists, reading only what is on disk already.

    The suite and its checkpoints, the datasets (their rows, and the probes' split of them), the
    data folder, the steering source, the evaluation tasks, the layers against the model's block
    count (when its config.json is local or in the Hub cache), stored activations for stages that
    read them, a writable workspace. Nothing is downloaded, written or started. Returns the checks
    left to run time (layers whose model config is not on disk, built-in datasets a run would build
    from the Hub, Hub target models, a device this machine lacks), one line each. `config_file`,
    the config's own file, lets its folder be the workspace although it holds other files.
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
        or _data_dir_problem(config)
        or _target_problem(config, suite)
        or _source_problem(config, suite, checkpoints)
        or _task_problem(config)
        or _block_count_problem(config, checkpoints[0])
        or _activations_problem(config)
        or _workspace_problem(config, config_file)
        or _rows_problem(config)
    )
    if problem:
        raise ConfigError(f"{where}: {problem}")
    return _unchecked(config, suite, checkpoints[0])


def _unchecked(config: SweepConfig, suite: "CheckpointSuite", checkpoint: "Checkpoint") -> list[str]:
    """What this machine cannot check: the layer range without a config.json on disk, datasets and
    target models that come from the Hub, the device."""
    from trusttrace.errors import TrustTraceError
    from trusttrace.devices import check_device

    notes = []
    if _block_count(checkpoint) is None:
        notes.append(f"the layers against the model (no config.json of {checkpoint.name} on disk yet; checked when it loads)")
    for name in config.datasets:
        absent = _absent_builtin(config, name)
        if absent and _no_hub_build(name) is None:
            notes.append(f"dataset {name} ({absent}; a run builds it from its Hugging Face source, checked then)")
    notes += _hub_target_notes(config, suite)
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


def _data_dir_problem(config: SweepConfig) -> str | None:
    """A data_dir that is not a folder: a run would look in vain there for the built-in datasets."""
    if config.data_dir is None or config.data_dir.is_dir():
        return None
    return f"key 'data_dir': {config.data_dir} is not a folder"


def _rows_problem(config: SweepConfig) -> str | None:
    """A dataset a run could not read, or one the probes' split cannot divide: every unit on it would fail.

    Reads each dataset as the sweep does, but only from disk; a built-in that is not there is a
    problem unless a run would build it from the Hub (then `_unchecked` lists it).
    """
    from trusttrace.data import load_dataset
    from trusttrace.errors import TrustTraceError

    for name in config.datasets:
        absent = _absent_builtin(config, name)
        if absent:
            no_hub = _no_hub_build(name)
            if no_hub:
                return f"key 'data_dir': {name}: {absent}, and {no_hub}; set data_dir: to the folder holding its files"
            continue
        try:
            dataset = load_dataset(name, data_dir=config.data_dir, source="local")
        except TrustTraceError as error:
            return f"key 'datasets': {error}"
        problem = _split_problem(config, dataset)
        if problem:
            return problem
    return None


def _absent_builtin(config: SweepConfig, name: str) -> str | None:
    """Why built-in `name` is not under data_dir or $TRUSTTRACE_DATA, where a run reads it from; None if there (or a file)."""
    from trusttrace.data import builtin_cards
    from trusttrace.data.builtin import DATA_ENV, data_root, local_paths

    if name not in builtin_cards():
        return None
    root = data_root(config.data_dir)
    if root is None:
        return f"neither data_dir nor ${DATA_ENV} is set"
    missing = [path for path in local_paths(name, root) if not path.is_file()]
    return f"no {missing[0]}" if missing else None


def _no_hub_build(name: str) -> str | None:
    """Why a run could not build built-in `name` from the Hub instead of local files; None when it would."""
    from trusttrace.data import hub

    if name not in hub.HUB_SOURCES:
        return "it has no Hugging Face source"
    return f"the Hugging Face Hub is off ({hub.offline_reason()})" if hub.hub_offline() else None


def _split_problem(config: SweepConfig, dataset: "TrustDataset") -> str | None:
    """A dataset the probes' split (whose first fold mi uses) cannot divide as configured: those units would all fail."""
    if "probes" not in config.stages and "mi" not in config.stages:
        return None
    from trusttrace.errors import ProbeError
    from trusttrace.splits import make_splits, resolve_split

    options = config.probes
    kind = resolve_split(config.probe_split(), dataset.groups)
    try:
        make_splits(dataset.labels, split=kind, groups=dataset.groups, folds=options.folds,
                    test_size=options.test_size, seed=config.probe_seed())
    except ProbeError as error:
        key, value = _split_key(config, kind)
        return f"key '{key}': {value} does not fit dataset {dataset.name} ({_split_sizes(dataset, kind)}): {error}"
    return None


def _split_key(config: SweepConfig, kind: str) -> tuple[str, object]:
    """The probes key and value a split of `kind` turns on: the split for paper, test_size for one fold, else folds."""
    if kind == "paper":
        return "probes.split", kind
    if config.probes.folds == 1:
        return "probes.test_size", config.probes.test_size
    return "probes.folds", config.probes.folds


def _split_sizes(dataset: "TrustDataset", kind: str) -> str:
    """What a split divides: the rows, those of the rarer class and, for a grouped split, the groups."""
    sizes = f"{len(dataset)} rows, {np.bincount(dataset.labels, minlength=2).min()} of the rarer class"
    if kind == "grouped":
        sizes += f", {len(np.unique(np.asarray(dataset.groups).astype(str)))} groups"
    return sizes


def _targets(config: SweepConfig) -> dict[str, str]:
    """The models the steering and evaluate stages load, by config key."""
    targets = {}
    if config.steering is not None:
        targets["steering.target"] = config.steering.target
    if config.evaluate is not None:
        targets["evaluate.model"] = config.evaluate.model
    return targets


def _target_problem(config: SweepConfig, suite: "CheckpointSuite") -> str | None:
    """A steering target or evaluate model that is neither a local folder nor a Hub model id (a
    mistyped path), or a local folder that holds no causal LM's config: the stage would fail only
    after the sweep's other work."""
    from huggingface_hub.utils import validate_repo_id

    from trusttrace.errors import TrustTraceError
    from trusttrace.models import check_local_model

    for key, name in _targets(config).items():
        model_id = _target_model(name, suite)
        if model_id is None:
            continue
        if Path(model_id).is_dir():
            try:
                check_local_model(model_id, config.trust_remote_code)
            except TrustTraceError as error:
                return f"key '{key}': {error}"
            continue
        try:
            validate_repo_id(model_id)
        except ValueError:
            return f"key '{key}': {model_id} is neither a local model folder nor a Hub model id"
    return None


def _hub_target_notes(config: SweepConfig, suite: "CheckpointSuite") -> list[str]:
    """Steering targets and evaluate models that name Hub models: validation reads no Hub, the stage's load checks them."""
    notes = []
    for key, name in _targets(config).items():
        model_id = _hub_model(name, suite)
        if model_id is not None:
            shown = name if model_id == name else f"{name} ({model_id})"
            notes.append(f"key '{key}': {shown} is not a local folder; the Hub model is checked when the stage loads it")
    return notes


def _hub_model(name: str, suite: "CheckpointSuite") -> str | None:
    """The model id a target resolves to, unless it is a local folder or 'final'."""
    model_id = _target_model(name, suite)
    return None if model_id is None or Path(model_id).is_dir() else model_id


def _target_model(name: str, suite: "CheckpointSuite") -> str | None:
    """The model id or folder a target resolves to (as the steering stage's resolve_target does);
    None for 'final' (the last selected checkpoint, checked with the suite)."""
    return None if name == "final" else suite.targets.get(name, name)


def _source_problem(config: SweepConfig, suite: "CheckpointSuite", checkpoints: list["Checkpoint"]) -> str | None:
    """A steering source that is not a checkpoint of the suite, or one the sweep neither selects
    (and so extracts) nor finds extracted by an earlier run for every steering dataset: the
    steering stage would have no activations to build its vectors from."""
    from trusttrace.errors import TrustTraceError

    if "steering" not in config.stages:
        return None
    try:
        source = suite.get(config.steering.source)
    except TrustTraceError as error:
        return f"key 'steering.source': {error}"
    if source.name in {checkpoint.name for checkpoint in checkpoints}:
        return None
    wanted = config.steering.datasets or [dataset_name(entry) for entry in config.datasets]
    done = _done_units(config)
    missing = [name for name in wanted if not any(unit.startswith(f"{suite.name}:{source.name}/{name}/extract#") for unit in done)]
    if missing:
        selected = ", ".join(checkpoint.name for checkpoint in checkpoints)
        return (
            f"key 'steering.source': {source.name} is not among the checkpoints the sweep selects ({selected}) and "
            f"{config.workspace} holds no activations of it for {', '.join(missing)}, so there is nothing to build "
            "vectors from; add it to 'checkpoints'"
        )
    return None


def _done_units(config: SweepConfig) -> list[str]:
    """The names of the workspace's done units (an earlier run's; whether an extract unit's
    settings match the sweep's is checked when the steering unit runs)."""
    from trusttrace.manifest import Manifest
    from trusttrace.store import MANIFEST_FILE

    path = config.workspace / MANIFEST_FILE
    return [row.unit for row in Manifest(path).units() if row.status == "done"] if path.is_file() else []


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
    from trusttrace.models import layer_set

    try:
        stored = layer_set(config.layers, count)
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


def pruned_sets(workspace: Path) -> int:
    """How many of a workspace's activation sets keep_activations: false deleted (0 without a manifest)."""
    from trusttrace.manifest import Manifest
    from trusttrace.store import MANIFEST_FILE

    path = workspace / MANIFEST_FILE
    return Manifest(path).pruned() if path.is_file() else 0


def _activations_problem(config: SweepConfig) -> str | None:
    """Stages that read stored activations, without extract, over a workspace that has none."""
    from trusttrace.store import ACTIVATIONS_DIR

    readers = [stage for stage in config.stages if stage in READS_ACTIVATIONS]
    if "extract" in config.stages or not readers:
        return None
    folder = config.workspace / ACTIVATIONS_DIR
    if folder.is_dir() and any(folder.iterdir()) or pruned_sets(config.workspace):
        return None  # sets deleted once read: a unit that needs one says so
    return f"key 'stages': {', '.join(readers)} read stored activations and {config.workspace} has none: add extract to stages"


def _workspace_problem(config: SweepConfig, config_file: Path | None) -> str | None:
    """A workspace that is not, and cannot be made, a writable folder, or a folder of other files
    (but the config's own folder: `workspace: .` says so on purpose)."""
    from trusttrace.store import foreign_folder

    if not _writable(config.workspace):
        return f"key 'workspace': {config.workspace} is not a writable folder"
    own_folder = config_file is not None and Path(config_file).resolve().parent == config.workspace.resolve()
    if not own_folder and foreign_folder(config.workspace):
        return (f"key 'workspace': {config.workspace} holds other files and is not a trusttrace workspace; "
                "choose a new or empty folder")
    return None


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
