"""`trusttrace steer`: steering vectors from stored activations.

torch and transformers are imported inside the command, so `--help` answers at once.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Optional

import typer

from trusttrace.cli.app import app
from trusttrace.cli.options import check_output, open_workspace, parse_layers
from trusttrace.errors import EvaluationError, StoreError

if TYPE_CHECKING:
    from trusttrace.store import ActivationRecord


@app.command()
def steer(
    workspace: Path = typer.Argument(..., help="Workspace folder holding extracted activations."),
    checkpoint: str = typer.Option(..., "--checkpoint", "-c", help="Checkpoint (or revision, or a local model's folder name) the activations come from."),
    dataset: str = typer.Option(..., "--dataset", "-d", help="Dataset name the activations were extracted for."),
    layers: str = typer.Option(..., help="Comma-separated layers, e.g. 3,4, or 'all' stored layers."),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="Source model id, when the workspace holds several."),
    key: Optional[str] = typer.Option(None, "--set", help="The activation set's key (or its start), when several sets match the rest."),
    scaling: str = typer.Option("std", help="std (unit direction x std of projections; alpha in std units), unit or raw."),
    protocol: str = typer.Option("default", help="default (development half of a grouped split) or paper (reference)."),
    seed: int = typer.Option(0, min=0, help="Seed of the development split."),
    out: Optional[Path] = typer.Option(
        None, "--out", "-o",
        help="Vector file (default: in WORKSPACE/steering/, named after the dataset, checkpoint, protocol, scaling, layers, seed and activation set, so other choices never overwrite it; the same ones replace it).",
    ),
    export_lm_eval_path: Optional[Path] = typer.Option(None, "--export-lm-eval", help="Also write lm-evaluation-harness's steer_path .pt file here."),
    alpha: Optional[float] = typer.Option(None, help="Steering coefficient written into the lm-eval export."),
) -> None:
    """Build steering vectors (mean of label 1 minus mean of label 0) from stored activations; no model needed.

    The first example writes workspace/steering/stereoset__step1000__default-std__L3_4__seed0__<key>.safetensors,
    <key> being the first 8 characters of the activation set's key.

    Examples:

      trusttrace steer workspace/ --checkpoint step1000 --dataset stereoset --layers 3,4

      trusttrace steer ws/ -c ckpt_179 -d truthfulqa --layers 16 --protocol paper --export-lm-eval tqa.pt --alpha 4
    """
    if export_lm_eval_path is not None and alpha is None:
        raise EvaluationError("--export-lm-eval needs --alpha, the coefficient lm-evaluation-harness applies")
    if alpha is not None and export_lm_eval_path is None:
        raise EvaluationError("--alpha is the coefficient of the --export-lm-eval file; without it, choose α when you evaluate "
                              "(`trusttrace evaluate --vectors FILE --alpha A`)")
    if alpha is not None and not math.isfinite(alpha):
        raise EvaluationError(f"--alpha {alpha}: expected a finite number")
    check_output(export_lm_eval_path, "--export-lm-eval", folder=False)
    from trusttrace.steering import build_vectors, export_lm_eval, save_vectors
    from trusttrace.store import STEERING_DIR

    parsed = parse_layers(layers, stored=True)
    store = open_workspace(workspace)
    record = select_record(store.records(), checkpoint, dataset, model, None if parsed == "all" else parsed, key)
    chosen = record.layers if parsed == "all" else parsed
    missing = [layer for layer in chosen if layer not in record.layers]
    if missing:
        raise StoreError(f"activation set {record.key}: layers {missing} are not stored (stored: {record.layers})")
    default = workspace / STEERING_DIR / vector_file_name(record.key, dataset, checkpoint, protocol, scaling, chosen, seed)
    path = check_output(out or default, "--out", folder=False)
    acts = store.load(record, layers=chosen)
    vectors, provenance = build_vectors(
        acts, store.load_dataset(record), chosen, acts_layers=chosen, protocol=protocol, scaling=scaling, seed=seed,
        source=record.provenance,
    )
    with store.locked():  # a sweep writing to this workspace may be writing the same file
        save_vectors(path, vectors, provenance)
    typer.echo(f"{len(vectors)} vector(s) for layers {','.join(map(str, vectors))} from {provenance['rows']} rows -> {path}")
    if export_lm_eval_path is not None:
        export_lm_eval(export_lm_eval_path, vectors, alpha, architecture=record.provenance.get("architecture"))
        typer.echo(f"lm-evaluation-harness steering file (alpha {alpha}, all positions) -> {export_lm_eval_path}")


def select_record(
    records: list[ActivationRecord], checkpoint: str, dataset: str, model: str | None,
    layers: list[int] | None = None, key: str | None = None,
) -> ActivationRecord:
    """The one activation set of `checkpoint` and `dataset` (and `model` when given); the checkpoint
    by its name, its revision, or the folder name of a local one (`extract -m ./runs/step_1000`).

    Where several match (the same checkpoint extracted with other layers, position or dtype),
    those storing `layers` are preferred, and `key` (a set's key or its start) picks one.
    """
    matching = [
        record for record in records
        if checkpoint in checkpoint_names(record.provenance) and record.provenance.get("dataset") == dataset
    ]
    found = [record for record in matching if model is None or record.provenance.get("model") == model]
    if not found:
        held = sorted({
            f"checkpoint={r.provenance.get('checkpoint')} dataset={r.provenance.get('dataset')} model={r.provenance.get('model')}"
            for r in records
        }) or ["nothing"]
        excluded = f" (--model {model!r} excludes the {len(matching)} that match)" if matching else ""
        raise StoreError(
            f"no activations for checkpoint {checkpoint!r} and dataset {dataset!r}{excluded}; the workspace holds: {'; '.join(held)}"
        )
    if key is not None:
        found = [record for record in found if record.key.startswith(key)]
        if len(found) != 1:
            raise StoreError(f"--set {key!r} names {len(found)} of the activation sets of checkpoint {checkpoint!r} and dataset {dataset!r}")
    if len(found) > 1 and layers is not None:
        found = [record for record in found if set(layers) <= set(record.layers)] or found
    if len(found) > 1:
        sets = "; ".join(
            f"{r.key} (model {r.provenance.get('model')}, layers {_layer_span(r.layers)}, position {r.provenance.get('position')}, "
            f"dtype {r.provenance.get('dtype')})" for r in found
        )
        raise StoreError(f"{len(found)} activation sets match checkpoint {checkpoint!r} and dataset {dataset!r}: {sets}; pick one with --set KEY")
    return found[0]


def _layer_span(layers: list[int]) -> str:
    """Stored layers in short: "0..31" when consecutive, else the list."""
    consecutive = layers == list(range(layers[0], layers[-1] + 1))
    return f"{layers[0]}..{layers[-1]}" if consecutive and len(layers) > 2 else ",".join(map(str, layers))


def checkpoint_names(provenance: dict) -> set[str]:
    """The names a set's checkpoint answers to: itself, its revision, and the last part of either."""
    names = {str(value) for value in (provenance.get("checkpoint"), provenance.get("revision")) if value}
    return names | {Path(name).name for name in names}


def vector_file_name(
    activations: str, dataset: str, checkpoint: str, protocol: str, scaling: str, layers: list[int], seed: int
) -> str:
    """The default vector file name: every choice that changes the vectors is in it (the activation
    set's key stands for the model, its weights, the dataset content, position and dtype), so no
    run overwrites another's."""
    from trusttrace.store import file_part

    chosen = "_".join(map(str, sorted(set(layers))))
    return f"{file_part(dataset)}__{file_part(checkpoint)}__{protocol}-{scaling}__L{chosen}__seed{seed}__{activations[:8]}.safetensors"
