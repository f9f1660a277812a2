"""The steering and evaluate stages of a sweep: vectors from one checkpoint, evaluated on a target.

Steering, per dataset: build vectors from the source checkpoint's stored activations (its
development rows only), evaluate the target model over layers × α on the held-out rows (the
grid goes to `steering.parquet`), and save the vectors with their provenance under `steering/`,
in a file named by suite, checkpoint, dataset and the digest of the settings that make the
vectors, so that suites sharing a workspace, and other settings, keep their own. Evaluate: run
each configured task on the target model, to `evaluate.parquet`. Each is a manifest unit,
skipped when done. A unit's settings name the statistical rules (interval, significance), so
rows computed under older rules are recomputed rather than kept, and the target's files (a local
folder's fingerprint, a Hub model's commit), so a target whose files are replaced, or whose
branch moved, is evaluated again.

Every row carries its provenance: the target's label ("final") and the model it resolved to
(id, revision, commit, weights checksum, dtype, tokenizer), for steering the source activation
set's (model, revision, commit, weights checksum, position, dtype, dataset hash), the task's
template when it has one, the protocol, seed, interval rule and trusttrace version.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from trusttrace.data import TrustDataset
from trusttrace.errors import ConfigError, StoreError, TrustTraceError
from trusttrace.evaluation import TASKS, get_task, steering_grid
from trusttrace.evaluation import evaluate as run_task
from trusttrace.evaluation.grid import IMPROVES_RULE, grid_name
from trusttrace.evaluation.runner import resolve_dataset
from trusttrace.manifest import settings_digest
from trusttrace.models import describe_source, fingerprint_forms, hub_commit, load_model
from trusttrace.provenance import now_utc, trusttrace_version
from trusttrace.steering import build_vectors, save_vectors
from trusttrace.store import EVALUATE_TABLE, STEERING_DIR, STEERING_TABLE, append_table, file_part

if TYPE_CHECKING:
    from transformers import PreTrainedModel

    from trusttrace.config import SweepConfig
    from trusttrace.sweep import Sweep


# Fields of the target's ModelSource copied as `target_<field>` columns (its id as `target_model_id`,
# since `target_model` is the configured label), and of the source activation set as `source_<field>`.
TARGET_FIELDS = ("revision", "commit", "weights_sha256", "dtype", "tokenizer", "tokenizer_sha256", "architecture")
SOURCE_FIELDS = ("model", "revision", "commit", "weights_sha256", "position", "dtype")

# Row keys: rows of another target model, source model, dataset version or setting are kept apart.
TARGET_KEYS = ["target_model", "target_model_id", "target_revision"]
STEERING_KEYS = [
    "source_model", "source_checkpoint", "source_position", "source_dtype", *TARGET_KEYS, "target_dtype",
    "dataset", "dataset_hash", "task", "protocol", "seed", "scaling", "positions", "max_perplexity", "max_rows",
    "task_inputs", "grid", "layer", "alpha", "metric",
]
EVALUATE_KEYS = [*TARGET_KEYS, "target_dtype", "task", "dataset_hash", "protocol", "seed", "max_rows", "metric"]


def legacy_grid(table: pd.DataFrame) -> pd.Series:
    """The `grid` of rows written before rows named theirs (0.7.0 and earlier): the layers and
    alphas of the steered rows that share their other keys, which is what they were computed as."""
    keys = [key for key in STEERING_KEYS if key not in ("grid", "layer", "alpha", "metric") and key in table]
    names = pd.Series(None, index=table.index, dtype=object)
    for _, rows in table.groupby(keys, dropna=False, sort=False):
        steered = rows[rows["layer"].notna()]
        names[rows.index] = grid_name(sorted(steered["layer"].unique()), sorted(steered["alpha"].unique()))
    return names


# What `read_table` and `append_table` fill into steering rows of former versions.
STEERING_LEGACY = {"task_inputs": None, "grid": legacy_grid}
# The tasks a dataset was steered on before its units named the task (0.7.0 and earlier): the
# datasets of any other task (sst2_sentiment's and confaide_tier2's, then scored on `binary`)
# name it, so that those units run again on their own question.
UNNAMED_TASKS = ("binary", "confaide", "stereoset", "sst2", "toxigen", "truthfulqa")


def legacy_rows_of(table: pd.DataFrame) -> Callable[[pd.DataFrame], pd.Series]:
    """The rows of former versions that the grid `table` replaces: with no `task_inputs` (written
    before TruthfulQA's inputs named its rows) and otherwise the same keys but grid, layer and alpha."""
    first = table.iloc[0]
    keys = [key for key in STEERING_KEYS if key not in ("task_inputs", "grid", "layer", "alpha", "metric")]

    def superseded(existing: pd.DataFrame) -> pd.Series:
        mask = existing["task_inputs"].isna() if "task_inputs" in existing else pd.Series(True, index=existing.index)
        for key in keys:
            value = first.get(key)
            if key not in existing:
                return pd.Series(False, index=existing.index)
            mask &= existing[key].isna() if pd.isna(value) else existing[key] == value
        return mask

    return superseded


def resolve_target(sweep: "Sweep", name: str) -> tuple[str, str | None]:
    """(model id or path, revision) of a target: "final", a suite target key, or a model id/path."""
    if name == "final":
        last = sweep.checkpoints[-1]
        return last.model_id, last.revision
    if name in sweep.suite.targets:
        return sweep.suite.targets[name], None
    return name, None


def target_identities(sweep: "Sweep", name: str) -> list[tuple[str, str | None, str | None]]:
    """What a target's results depend on, for unit names: its id or path, revision and, for a local
    folder, its files' fingerprint, for a Hub model the commit its revision resolves to, so that a
    target whose files are replaced, or whose branch moved, is evaluated again. For a local folder
    the same files' fingerprints in former forms follow (`fingerprint_forms`): a unit done under
    one of them is done, not redone because the form changed."""
    model_id, revision = resolve_target(sweep, name)
    folder = Path(model_id)
    if revision is None and folder.is_dir():
        return [(model_id, revision, form) for form in fingerprint_forms(folder)] or [(model_id, revision, None)]
    return [(model_id, revision, hub_commit(model_id, revision))]


def done_for_any(sweep: "Sweep", unit: tuple[str, str, str], settings: dict[str, Any], identities: list[tuple]) -> bool:
    """Whether the unit (checkpoint, dataset, stage) is done with `settings`, their "target"
    being any of the target's `identities`."""
    return any(sweep.stage_done(*unit, settings | {"target": identity}) for identity in identities)


def task_for(dataset_name: str) -> str:
    """The evaluation task of a dataset: its own when registered, else the generic binary task."""
    return dataset_name if dataset_name in TASKS else "binary"


def task_dataset_hash(task: str, data_dir: Path | None) -> str | None:
    """The content hash of what a task reads by default (its dataset, or TruthfulQA's question
    files), so that an edited file reruns it; None where that cannot be read (its unit then fails,
    saying why)."""
    spec = get_task(task)
    if not spec.takes_dataset:
        return spec.inputs(data_dir) if spec.inputs is not None else None
    try:
        dataset = resolve_dataset(spec, None, data_dir)
    except TrustTraceError:
        return None
    return None if dataset is None else dataset.content_hash


def task_inputs(task: str, data_dir: Path | None) -> str | None:
    """For a task that scores files of its own rather than a dataset's held-out rows (TruthfulQA),
    their content hash: part of its steering units' names and rows. None for the other tasks."""
    return None if get_task(task).takes_dataset else task_dataset_hash(task, data_dir)


def vector_path(sweep: "Sweep", checkpoint: str, dataset: TrustDataset, settings: dict[str, Any]) -> Path:
    """Where the vectors of `checkpoint` on `dataset` go: named by suite, checkpoint, dataset and the
    digest of the settings they depend on (dataset content, layers, scaling, protocol, seed, target), since
    suites share checkpoint names, datasets change content and another setting makes other vectors."""
    parts = (sweep.suite.name, checkpoint, dataset.name)
    name = "-".join([*map(file_part, parts), settings_digest(settings)])
    return sweep.store.root / STEERING_DIR / f"{name}.safetensors"


def target_columns(label: str, model: "PreTrainedModel") -> dict[str, Any]:
    """The target's configured label and the model it resolved to, from the loaded model's provenance."""
    source = describe_source(model)
    return {"target_model": label, "target_model_id": source["model"]} | {f"target_{f}": source[f] for f in TARGET_FIELDS}


def source_columns(provenance: Mapping[str, Any]) -> dict[str, Any]:
    """The source activation set's provenance as `source_*` columns, with its dataset content hash."""
    return {f"source_{f}": provenance.get(f) for f in SOURCE_FIELDS} | {"dataset_hash": provenance.get("dataset_hash")}


def run_columns(config: "SweepConfig", template: str | None) -> dict[str, Any]:
    """How a result was computed: the task's prompt template (None for a task without one), the
    protocol, seed, trusttrace version and time (each row names its interval rule itself)."""
    return {
        "template": template, "protocol": config.protocol, "seed": config.seed,
        "trusttrace_version": trusttrace_version(), "created": now_utc(),
    }


def run_steering_stages(sweep: "Sweep") -> None:
    """Run the steering and/or evaluate stages the sweep's config asks for."""
    config = sweep.config
    target_name = config.steering.target if config.steering is not None else config.evaluate.model
    loaded: dict[str, tuple] = {}

    def target(name: str):
        if name not in loaded:
            model_id, revision = resolve_target(sweep, name)
            loaded[name] = load_model(model_id, revision, dtype=config.dtype, device=config.device,
                                      trust_remote_code=config.trust_remote_code)
        return loaded[name]

    known: dict[str, list[tuple]] = {}

    def identities(name: str) -> list[tuple]:  # asked once: for a Hub target it is a call to the Hub
        if name not in known:
            known[name] = target_identities(sweep, name)
        return known[name]

    if "steering" in config.stages:
        names = config.steering.datasets or [d.name for d in sweep.datasets]
        target_source = identities(target_name)[0]
        for dataset in (d for d in sweep.datasets if d.name in names):
            vector_settings = sweep.settings("extract", dataset) | {
                "steering": config.steering.model_dump(exclude={"datasets", "source"}), "target": target_source,
                "protocol": config.protocol, "seed": config.seed,
            }
            task = task_for(dataset.name)
            settings = vector_settings | get_task(task).interval_rules() | {"improves": IMPROVES_RULE}
            inputs = task_inputs(task, config.data_dir)
            if inputs is not None:
                settings["task_inputs"] = inputs
            if task not in UNNAMED_TASKS:
                settings["task"] = task
            if done_for_any(sweep, (config.steering.source, dataset.name, "steering"), settings, identities(target_name)):
                sweep.summary.skipped += 1
                continue
            sweep.run_unit(config.steering.source, dataset.name, "steering", settings,
                           lambda d=dataset, v=vector_settings, i=inputs: steer_dataset(sweep, d, target(target_name), target_name, v, i))
    if "evaluate" in config.stages:
        common = {
            "evaluate": config.evaluate.model_dump(exclude={"tasks"}), "target": identities(config.evaluate.model)[0],
            "dtype": config.dtype, "protocol": config.protocol, "seed": config.seed,
        }
        for task in config.evaluate.tasks:
            settings = common | get_task(task).interval_rules() | {"dataset_hash": task_dataset_hash(task, config.data_dir)}
            if done_for_any(sweep, (config.evaluate.model, task, "evaluate"), settings, identities(config.evaluate.model)):
                sweep.summary.skipped += 1
                continue
            sweep.run_unit(config.evaluate.model, task, "evaluate", settings,
                           lambda t=task: evaluate_task(sweep, t, target(config.evaluate.model), config.evaluate.model))


def steer_dataset(
    sweep: "Sweep", dataset: TrustDataset, model_and_tokenizer, target_name: str, vector_settings: dict[str, Any],
    inputs: str | None,
) -> tuple[str, None]:
    """Vectors from the source checkpoint's activations of `dataset`, and their layers × α grid;
    `vector_settings` (what the vectors depend on) name their file, `inputs` is the task's
    `task_inputs` (as the unit's settings hold it).

    The vectors are saved after the grid ran, so their provenance names the template the grid
    evaluated with.
    """
    config, options = sweep.config, sweep.config.steering
    source = sweep.suite.get(options.source)
    record = sweep.extract_record(source, dataset)  # verified in this run: read below without hashing again
    if record is None:
        remedy = (
            "run the extract stage on it" if source in sweep.checkpoints
            else "add it to 'checkpoints', so that the extract stage extracts it"
        )
        raise StoreError(f"no verified activations of {dataset.name} at checkpoint {source.name}: {remedy}")
    missing = [layer for layer in options.layers if layer not in record.layers]
    if missing:
        raise ConfigError(f"steering.layers {missing} are not among the extracted layers {record.layers}")
    vectors, provenance = build_vectors(
        sweep.store.load(record, layers=options.layers, checksums=False), dataset, options.layers, acts_layers=options.layers,
        protocol=config.protocol, scaling=options.scaling, seed=config.seed, source=record.provenance,
    )
    model, tokenizer = model_and_tokenizer
    task = task_for(dataset.name)
    grid = steering_grid(
        model, tokenizer, vectors, options.alphas, task=task, dataset=dataset, positions=options.positions,
        max_perplexity=options.max_perplexity, provenance=provenance, limit=options.max_rows,
        protocol=config.protocol, seed=config.seed, data_dir=config.data_dir, progress=sweep.progress,
    )
    template = grid.baseline.settings.get("template")
    path = vector_path(sweep, source.name, dataset, vector_settings)
    save_vectors(path, vectors, provenance | {"template": template})
    artefact = str(Path("steering") / path.name)
    table = grid.table.assign(
        source_checkpoint=source.name, dataset=dataset.name, task=task, task_inputs=inputs, scaling=options.scaling,
        positions=options.positions, max_perplexity=options.max_perplexity, max_rows=options.max_rows,
        best=_best_flags(grid.table, grid.best), vector_file=artefact,
        **source_columns(record.provenance), **target_columns(target_name, model),
        **run_columns(config, template),
    )
    append_table(sweep.store.root / STEERING_TABLE, table, STEERING_KEYS, STEERING_LEGACY,
                 superseded=legacy_rows_of(table) if inputs is not None else None)
    return artefact, None


def _best_flags(table: pd.DataFrame, best: dict | None) -> list[bool]:
    if best is None:
        return [False] * len(table)
    return [pd.notna(row.layer) and row.layer == best["layer"] and row.alpha == best["alpha"] for row in table.itertuples()]


def evaluate_task(sweep: "Sweep", task: str, model_and_tokenizer, target_name: str) -> tuple[str, None]:
    """One trust task on the target model, appended to evaluate.parquet with its provenance."""
    config = sweep.config
    model, tokenizer = model_and_tokenizer
    result = run_task(model, tokenizer, task, data_dir=config.data_dir, limit=config.evaluate.max_rows,
                      protocol=config.protocol, seed=config.seed)
    table = result.table.assign(
        dataset=result.settings.get("dataset"), dataset_hash=result.settings.get("dataset_hash"),
        max_rows=config.evaluate.max_rows or 0,  # 0: every held-out row
        **target_columns(target_name, model), **run_columns(config, result.settings.get("template")),
    )
    append_table(sweep.store.root / EVALUATE_TABLE, table, EVALUATE_KEYS)
    return EVALUATE_TABLE, None
