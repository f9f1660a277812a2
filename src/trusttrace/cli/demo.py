"""`trusttrace demo`: a real pre-training dynamics study in miniature, offline, in minutes."""

from __future__ import annotations

from pathlib import Path

import typer

from trusttrace.cli.app import app
from trusttrace.cli.options import check_output


@app.command()
def demo(
    out: Path = typer.Option(Path("trusttrace-demo"), "--out", "-o", help="Folder for the checkpoints, workspace and report."),
    seed: int = typer.Option(0, min=0, help="Seed of the synthetic world, the training run and every split."),
    quick: bool = typer.Option(False, help="Half-size training batches (the same steps, about half the training time), for a first look."),
) -> None:
    """Train a tiny LM offline on a synthetic world of facts and trace how it comes to encode truth.

    The trace covers extraction, probes and the information plane over its checkpoints, a
    steering vector from the first earlier checkpoint where truth is decodable, applied to the final
    model, and the HTML report.

    Runs offline on a CPU. Running it again reuses what is already done.

    Examples:

      trusttrace demo

      trusttrace demo --out /tmp/demo --seed 1
    """
    check_output(out, "--out", folder=True)
    from trusttrace.demo import run_demo

    result = run_demo(out, seed=seed, quick=quick, progress=True)
    typer.echo(result.summary())
    typer.echo(f"report: {result.report}")
