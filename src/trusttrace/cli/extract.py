"""`trusttrace extract`: activations of one model revision for one or more datasets."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from trusttrace.cli.app import DataDirOption, app, data_dir_path
from trusttrace.errors import LayerError


def parse_layers(text: str) -> str | list[int]:
    """"all" or a comma-separated list of layer indices (negatives count from the end)."""
    if text.strip() == "all":
        return "all"
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise LayerError(f"--layers {text!r}: expected 'all' or comma-separated integers") from None


@app.command()
def extract(
    model: str = typer.Option(..., "--model", "-m", help="Hub id or local folder of a causal LM."),
    dataset: list[str] = typer.Option(..., "--dataset", "-d", help="Built-in name or CSV/JSONL/Parquet path; repeatable."),
    out: Path = typer.Option(..., "--out", "-o", help="Workspace folder (created when absent)."),
    revision: Optional[str] = typer.Option(None, "--revision", "-r", help="Hub revision (branch, tag or commit)."),
    layers: str = typer.Option("all", help="'all' or comma-separated block indices, e.g. 0,8,16."),
    position: str = typer.Option("last", help="Token whose state is kept: last, first or mean."),
    dtype: str = typer.Option("auto", help="auto (bf16 on GPU, fp32 on CPU), float32, bfloat16, float16."),
    device: Optional[str] = typer.Option(None, help="cpu, cuda, cuda:1 ... (default: cuda when available)."),
    batch_size: Optional[int] = typer.Option(None, help="Statements per batch (default: automatic, by tokens)."),
    data_dir: Optional[Path] = DataDirOption,
    trust_remote_code: bool = typer.Option(False, help="Run model code from the Hub repository (off by default)."),
) -> None:
    """Extract each decoder block's hidden state for every statement and store it in a workspace.

    Examples:

      trusttrace extract -m EleutherAI/pythia-70m -r step1000 -d stereoset -o workspace/

      trusttrace extract -m ./my-model -d my_statements.csv -d sst2 --layers 0,3,5 -o ws/
    """
    from trusttrace.data import load_dataset
    from trusttrace.models import load_model
    from trusttrace.store import ActivationStore
    from trusttrace.units import extract_to_store

    chosen = parse_layers(layers)
    datasets = [load_dataset(name, data_dir=data_dir_path(data_dir)) for name in dataset]
    loaded, tokenizer = load_model(model, revision, dtype=dtype, device=device, trust_remote_code=trust_remote_code)
    store = ActivationStore(out)
    for data in datasets:
        record = extract_to_store(
            loaded, tokenizer, data, store, layers=chosen, position=position,
            batch_size=batch_size, checkpoint=revision, progress=True,
        )
        typer.echo(f"{data.name}: {record.n} statements x {len(record.layers)} layers -> {record.path}")
