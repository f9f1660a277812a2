"""`trusttrace datasets` and `trusttrace suites`: what can be traced, on what data."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from trusttrace.checkpoints import Checkpoint, CheckpointSuite, checkpoint_suite, list_suites
from trusttrace.cli.app import DataDirOption, app
from trusttrace.cli.options import check_data_dir
from trusttrace.data import builtin_cards
from trusttrace.data.builtin import data_root, load_builtin
from trusttrace.errors import CheckpointError, DatasetError


@app.command()
def datasets(
    name: Optional[str] = typer.Argument(None, help="Show this dataset only (default: all built-ins)."),
    data_dir: Optional[Path] = DataDirOption,
) -> None:
    """List the built-in datasets with their cards: what label 1 and label 0 really mean, source, licence, quirks.

    With a data folder (--data-dir or $TRUSTTRACE_DATA) each card also shows the local file's
    row count, label balance and content hash, or why it is not available.

    Examples:

      trusttrace datasets

      trusttrace datasets stereoset --data-dir shared/datasets
    """
    cards = builtin_cards()
    if name is not None and name not in cards:
        raise DatasetError(f"unknown dataset {name!r}; known: {', '.join(cards)}")
    root = data_root(check_data_dir(data_dir))
    for card in cards.values():
        if name is not None and card.name != name:
            continue
        typer.echo(card.describe())
        if root is not None:
            typer.echo(f"  local:    {_local_summary(card.name, root)}")
        typer.echo("")


def _local_summary(name: str, root: Path) -> str:
    """Rows, balance, groups and content hash of the local copy, or why there is none."""
    try:
        dataset = load_builtin(name, data_dir=root, source="local")
    except DatasetError as error:
        return f"not available ({error})"
    positives = int(dataset.labels.sum())
    groups = "no groups" if dataset.groups is None else f"{len(set(dataset.groups.tolist()))} groups"
    return (
        f"{len(dataset)} rows ({positives} label 1 / {len(dataset) - positives} label 0), {groups}, "
        f"sha256 {dataset.content_hash[:12]}, {dataset.source}"
    )


@app.command()
def suites(
    name: Optional[str] = typer.Argument(None, help="Suite to list: amber, pythia-70m, olmo-7b, local:DIR ..."),
    select: str = typer.Option(
        "all", "--select", "-s", help="Which checkpoints: all, every:K, log:N, first:N or comma-separated names."
    ),
) -> None:
    """List the checkpoint suites, or one suite's checkpoints (name, revision, step, tokens seen).

    Examples:

      trusttrace suites

      trusttrace suites pythia-70m --select log:10

      trusttrace suites amber --select every:36

      trusttrace suites local:runs/my-pretraining --select first:5
    """
    if name is None:
        if select != "all":
            raise CheckpointError("--select needs a suite name, e.g. trusttrace suites pythia-70m --select log:10")
        for suite_name, description in list_suites().items():
            typer.echo(f"{suite_name:<22} {description}")
        typer.echo(f"{'local:DIR':<22} every sub-folder of DIR with a config.json, ordered by the step in its name")
        return
    suite = checkpoint_suite(name)
    chosen = suite.select(select)
    _print_suite(suite, chosen)


def _print_suite(suite: CheckpointSuite, chosen: list[Checkpoint]) -> None:
    """A header with the suite and its targets, then one line per chosen checkpoint."""
    typer.echo(f"{suite.name}: {suite.description}")
    if suite.targets:
        typer.echo("targets: " + ", ".join(f"{role}={model}" for role, model in suite.targets.items()))
    typer.echo(f"{'name':<28} {'revision':<28} {'step':>8} {'tokens':>10}")
    for checkpoint in chosen:
        step = "-" if checkpoint.step is None else str(checkpoint.step)
        typer.echo(f"{checkpoint.name:<28} {checkpoint.revision or '(local)':<28} {step:>8} {_tokens(checkpoint.tokens):>10}")
    typer.echo(f"{len(chosen)} of {len(suite)} checkpoints")


def _tokens(tokens: int | None) -> str:
    """Tokens seen in a short human form (2.10B, 512.00M), '-' when unknown."""
    if tokens is None:
        return "-"
    for unit, size in (("T", 10**12), ("B", 10**9), ("M", 10**6), ("K", 10**3)):
        if tokens >= size:
            return f"{tokens / size:.2f}{unit}"
    return str(tokens)
