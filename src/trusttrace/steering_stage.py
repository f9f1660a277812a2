"""The steering and evaluate stages of a sweep: vectors from one checkpoint, evaluated on a target.

Steering, per dataset: build vectors from the source checkpoint's stored activations (its
development rows only), save them with provenance under `steering/`, and evaluate the target
model over layers × α on the held-out rows; the grid goes to `steering.parquet`. Evaluate:
run each configured task on the target model, to `evaluate.parquet`. Each is a manifest unit,
skipped when done.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from trusttrace.errors import ConfigError, StoreError
from trusttrace.evaluate import TASKS, steering_grid
from trusttrace.evaluate import evaluate as run_task
from trusttrace.models import load_model
from trusttrace.steering import build_vectors, save_vectors
from trusttrace.store import append_table

if TYPE_CHECKING:
    from trusttrace.sweep import Sweep

STEERING_TABLE = "steering.parquet"
EVALUATE_TABLE = "evaluate.parquet"
STEERING_KEYS = ["source_checkpoint", "target_model", "dataset", "task", "layer", "alpha", "metric"]
EVALUATE_KEYS = ["target_model", "task", "metric"]


def resolve_target(sweep: "Sweep", name: str) -> tuple[str, str | None]:
    """(model id or path, revision) of a target: "final", a suite target key, or a model id/path."""
    if name == "final":
        last = sweep.checkpoints[-1]
        return last.model_id, last.revision
    if name in sweep.suite.targets:
        return sweep.suite.targets[name], None
    return name, None


def task_for(dataset_name: str) -> str:
    """The evaluation task of a dataset: its own when registered, else the generic binary task."""
    return dataset_name if dataset_name in TASKS else "binary"


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

    if "steering" in config.stages:
        names = config.steering.datasets or [d.name for d in sweep.datasets]
        target_source = resolve_target(sweep, target_name)
        for dataset in (d for d in sweep.datasets if d.name in names):
            settings = sweep.settings("extract", dataset) | {
                "steering": config.steering.model_dump(), "target": target_source, "protocol": config.protocol,
                "seed": config.probes.seed,
            }
            if sweep.stage_done(config.steering.source, dataset.name, "steering", settings):
                sweep.summary.skipped += 1
                continue
            sweep.run_unit(config.steering.source, dataset.name, "steering", settings,
                           lambda d=dataset: steer_dataset(sweep, d, target(target_name), target_name))
    if "evaluate" in config.stages:
        settings = {
            "evaluate": config.evaluate.model_dump(), "target": resolve_target(sweep, config.evaluate.model),
            "protocol": config.protocol, "seed": config.probes.seed, "data_dir": config.data_dir,
        }
        for task in config.evaluate.tasks:
            if sweep.stage_done(config.evaluate.model, task, "evaluate", settings):
                sweep.summary.skipped += 1
                continue
            sweep.run_unit(config.evaluate.model, task, "evaluate", settings,
                           lambda t=task: evaluate_task(sweep, t, target(config.evaluate.model), config.evaluate.model))


def steer_dataset(sweep: "Sweep", dataset, model_and_tokenizer, target_name: str) -> tuple[str, None]:
    """Vectors from the source checkpoint's activations of `dataset`, and their layers × α grid."""
    config, options = sweep.config, sweep.config.steering
    source = sweep.suite.get(options.source)
    record = sweep.extract_record(source, dataset)
    if record is None:
        raise StoreError(f"no verified activations of {dataset.name} at checkpoint {source.name}: run the extract stage on it")
    missing = [layer for layer in options.layers if layer not in record.layers]
    if missing:
        raise ConfigError(f"steering.layers {missing} are not among the extracted layers {record.layers}")
    vectors, provenance = build_vectors(
        sweep.store.load(record, layers=options.layers), dataset, options.layers, acts_layers=options.layers,
        protocol=config.protocol, scaling=options.scaling, seed=config.probes.seed, source=record.provenance,
    )
    path = sweep.store.root / "steering" / f"{source.name}-{dataset.name}.safetensors"
    save_vectors(path, vectors, provenance)
    model, tokenizer = model_and_tokenizer
    task = task_for(dataset.name)
    grid = steering_grid(
        model, tokenizer, vectors, options.alphas, task=task, dataset=dataset, positions=options.positions,
        max_perplexity=options.max_perplexity, provenance=provenance, limit=options.max_rows,
        protocol=config.protocol, seed=config.probes.seed,
    )
    table = grid.table.assign(
        source_checkpoint=source.name, target_model=target_name, dataset=dataset.name, task=task,
        best=_best_flags(grid.table, grid.best),
    )
    append_table(sweep.store.root / STEERING_TABLE, table, STEERING_KEYS)
    return str(Path("steering") / path.name), None


def _best_flags(table: pd.DataFrame, best: dict | None) -> list[bool]:
    if best is None:
        return [False] * len(table)
    return [pd.notna(row.layer) and row.layer == best["layer"] and row.alpha == best["alpha"] for row in table.itertuples()]


def evaluate_task(sweep: "Sweep", task: str, model_and_tokenizer, target_name: str) -> tuple[str, None]:
    """One trust task on the target model, appended to evaluate.parquet."""
    config = sweep.config
    model, tokenizer = model_and_tokenizer
    result = run_task(model, tokenizer, task, data_dir=config.data_dir, limit=config.evaluate.max_rows,
                      protocol=config.protocol, seed=config.probes.seed)
    append_table(sweep.store.root / EVALUATE_TABLE, result.table.assign(target_model=target_name), EVALUATE_KEYS)
    return EVALUATE_TABLE, None
