"""`trusttrace run`: a resumable sweep from a YAML config."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.markup import escape

from trusttrace.cli.app import app
from trusttrace.config import EXAMPLE, load_config
from trusttrace.config_checks import check_names

RUN_HELP = f"""Run (or resume) a sweep: checkpoints x datasets x stages, as a YAML config describes.

Re-running the same command skips finished units and redoes only what is missing, failed or corrupt, or whose settings changed.

Exits 1 when some units failed (after running all the others), 2 on a bad config or when another process is writing to the workspace.

Example config:

\b
{escape(EXAMPLE)}
"""


@app.command(help=RUN_HELP)
def run(
    config: Path = typer.Argument(..., help="The experiment's YAML config."),
    check: bool = typer.Option(False, "--check", help="Validate the config and exit without running."),
) -> None:
    settings = load_config(config)
    unchecked = check_names(settings, where=str(config), config_file=config)
    if check:
        typer.echo(f"{config}: valid")
        for note in unchecked:
            typer.echo(f"  not checked here: {note}")
        return
    from trusttrace.devices import check_device
    from trusttrace.sweep import run_sweep

    check_device(settings.device, f"{config}: key 'device':")

    summary = run_sweep(settings)
    typer.echo(
        f"done in {summary.seconds:.0f} s: {summary.ran} units run, {summary.skipped} already done, "
        f"{len(summary.failed)} tried and failed (tried again on the next run); workspace {settings.workspace}"
    )
    for repair in summary.repaired:
        typer.echo(f"repaired: {repair}", err=True)
    for note in summary.notes:
        typer.echo(f"note: {note}", err=True)
    for name, duplicate_of in summary.duplicates.items():
        typer.echo(f"note: checkpoint {name} has the same weights as {duplicate_of}")
    for unit, error in summary.failed:
        typer.echo(f"failed: {unit}: {error}", err=True)
    if not summary.ok:
        raise typer.Exit(1)
