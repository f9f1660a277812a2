"""`trusttrace demo`: a real pre-training dynamics study in miniature, offline, in minutes."""

from __future__ import annotations

from pathlib import Path

import typer

from trusttrace.cli.app import app


@app.command()
def demo(
    out: Path = typer.Option(Path("trusttrace-demo"), "--out", "-o", help="Folder for the checkpoints, workspace and report."),
    seed: int = typer.Option(0, help="Seed of the synthetic world, the training run and every split."),
    quick: bool = typer.Option(False, help="Fewer training steps (about a minute), for a first look."),
) -> None:
    """Train a tiny LM from scratch on a synthetic world of facts, then trace how it comes to
    encode truth: extraction, probes and the information plane over its checkpoints, a steering
    vector from a middle checkpoint applied to the final model, and the HTML report.

    Runs offline on a CPU. Running it again reuses what is already done.

    Examples:

      trusttrace demo

      trusttrace demo --out /tmp/demo --seed 1
    """
    from trusttrace.demo import run_demo

    result = run_demo(out, seed=seed, quick=quick, progress=True)
    typer.echo(result.summary())
    typer.echo(f"report: {result.report}")
