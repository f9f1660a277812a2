"""`trusttrace extract`: activations of one model revision for one or more datasets."""

from __future__ import annotations

from contextlib import ExitStack
from pathlib import Path
from typing import Optional

import typer

from trusttrace.cli.app import DataDirOption, app
from trusttrace.cli.options import DeviceOption, check_data_dir, check_device, check_output, parse_layers
from trusttrace.errors import StoreError


@app.command()
def extract(
    model: str = typer.Option(..., "--model", "-m", help="Hub id or local folder of a causal LM."),
    dataset: list[str] = typer.Option(..., "--dataset", "-d", help="Built-in name or CSV/JSONL/Parquet path; repeatable."),
    out: Path = typer.Option(..., "--out", "-o", help="Workspace folder (created when absent)."),
    revision: Optional[str] = typer.Option(None, "--revision", "-r", help="Hub revision (branch, tag or commit)."),
    layers: str = typer.Option("all", help="'all' or comma-separated block indices, e.g. 0,8,16."),
    position: str = typer.Option("last", help="Token whose state is kept: last, first or mean."),
    dtype: str = typer.Option("auto", help="auto (bf16 on GPU, fp32 on CPU), float32, bfloat16, float16."),
    device: Optional[str] = DeviceOption,
    batch_size: Optional[int] = typer.Option(None, min=1, help="Statements per batch (default: automatic, by tokens)."),
    data_dir: Optional[Path] = DataDirOption,
    trust_remote_code: bool = typer.Option(False, help="Run model code from the Hub repository (off by default)."),
) -> None:
    """Extract each decoder block's hidden state for every statement and store it in a workspace.

    Every option is checked, and the model loaded, before a new workspace is created; an
    existing workspace is locked before the load, so a busy one is refused at once.

    Examples:

      trusttrace extract -m EleutherAI/pythia-70m -r step1000 -d stereoset -o workspace/

      trusttrace extract -m ./my-model -d my_statements.csv -d sst2 --layers 0,3,5 -o ws/
    """
    from trusttrace.data import load_dataset
    from trusttrace.extract import check_position
    from trusttrace.models import decoder_layers, layer_set, load_model
    from trusttrace.store import WORKSPACE_FILE, ActivationStore, foreign_folder
    from trusttrace.extract_stage import extract_to_store
    from trusttrace.provenance import now_utc

    check_output(out, "--out", folder=True)
    if foreign_folder(out):
        raise StoreError(f"--out {out}: a folder that holds other files and is not a trusttrace workspace; choose a new or empty folder")
    check_position(position)
    parsed = parse_layers(layers)
    device = check_device(device)
    root = check_data_dir(data_dir)
    datasets = [load_dataset(name, data_dir=root) for name in dataset]
    with ExitStack() as held:
        store = ActivationStore(out) if (out / WORKSPACE_FILE).exists() else None  # an empty folder is not one yet
        if store is not None:
            held.enter_context(store.locked())
        loaded, tokenizer = load_model(model, revision, dtype=dtype, device=device, trust_remote_code=trust_remote_code)
        chosen = layer_set(parsed, len(decoder_layers(loaded)))
        if store is None:
            store = ActivationStore(out)
            held.enter_context(store.locked())
        for data in datasets:
            started = now_utc()
            record = extract_to_store(
                loaded, tokenizer, data, store, layers=chosen, position=position,
                batch_size=batch_size, checkpoint=revision, progress=True,
            )
            layers = len(record.layers)
            reused = record.provenance.get("created", started) < started  # stored by an earlier run: nothing extracted
            shape = f"{record.n} statements x {layers} layer{'s' if layers != 1 else ''}"
            typer.echo(f"{data.name}: {shape} {'reused from' if reused else '->'} {record.path}")
