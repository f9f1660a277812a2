"""`trusttrace probe` and `trusttrace mi`: probes and the information plane over a workspace."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from trusttrace.cli.app import app
from trusttrace.cli.options import DeviceOption, check_device, open_workspace, positive, share

WorkspaceArgument = typer.Argument(..., help="Workspace folder written by `trusttrace extract` or `trusttrace run`.")


@app.command()
def probe(
    workspace: Path = WorkspaceArgument,
    split: str = typer.Option("grouped", help="grouped (random when a dataset has no groups), random or paper."),
    method: str = typer.Option("logreg", help="logreg (L2 logistic regression, C=1) or mass_mean."),
    folds: int = typer.Option(5, min=1, help="Cross-validation folds (paper: always one 80/20 split)."),
    test_size: float = typer.Option(0.2, callback=share, help="Share of rows held out when --folds is 1 (random and grouped splits)."),
    C: float = typer.Option(1.0, "--C", callback=positive, help="Inverse strength of the L2 penalty of logreg (scikit-learn's C)."),
    seed: int = typer.Option(0, min=0, help="Seed of the split."),
    backend: str = typer.Option("auto", help="auto or torch (all layers at once), sklearn (one model per layer)."),
    device: Optional[str] = DeviceOption,
) -> None:
    """Fit a linear probe on every layer of every activation set in WORKSPACE.

    Results go to WORKSPACE/probes.parquet, baselines to probe_baselines.parquet.

    Sets already in the table are skipped, so a rerun adds nothing.

    Missing or corrupt sets, and sets the options do not fit, are reported and skipped; the exit
    code is then 1. Options that fit no set are an error (exit code 2).

    Examples:

      trusttrace probe workspace/

      trusttrace probe workspace/ --split paper

      trusttrace probe workspace/ --split random --folds 10

      trusttrace probe workspace/ --method mass_mean --seed 1
    """
    from trusttrace.analysis import run_probes
    from trusttrace.store import PROBES_TABLE, read_table

    device = check_device(device)
    store = open_workspace(workspace)
    before = len(read_table(workspace / PROBES_TABLE))
    table, problems = run_probes(
        store, split=split, method=method, seed=seed, folds=folds, test_size=test_size, C=C, backend=backend, device=device
    )
    _finish(problems, f"{len(table) - before} new probe rows, {len(table)} in {workspace / PROBES_TABLE}")


@app.command()
def mi(
    workspace: Path = WorkspaceArgument,
    estimator: str = typer.Option("nhsic", help="nhsic (the reference study's), hsic, gaussian or ksg."),
    x_layer: int = typer.Option(0, min=0, help="The stored layer whose states stand for the input X (the study's: block 0)."),
    split: str = typer.Option("grouped", help="Rows used: the training rows of this split, as `probe` and `run` make it (grouped, random, or paper: the first 80 %)."),
    seed: int = typer.Option(0, min=0, help="Seed of the split (random and grouped), of the --max-rows subsample and of the shuffled labels."),
    folds: int = typer.Option(5, min=1, help="Folds of the probes' split; MI uses the training rows of its first fold (paper: the first 80 %)."),
    test_size: float = typer.Option(0.2, callback=share, help="Share of rows held out when --folds is 1 (random and grouped splits)."),
    max_rows: Optional[int] = typer.Option(None, min=3, help="Estimate on a seeded subsample of at most N training rows (default: all; nhsic and hsic need memory as N² and time as N³)."),
    device: Optional[str] = DeviceOption,
) -> None:
    """Estimate I(X;T) and I(T;Y) for every layer of every activation set in WORKSPACE.

    Beside each I(T;Y) goes the same estimate with the labels shuffled (i_ty_shuffled): what the
    estimator reads when the states carry nothing of the labels. Results go to
    WORKSPACE/mi.parquet; sets already in it are skipped.

    Missing or corrupt sets, and sets the options do not fit, are reported and skipped; the exit
    code is then 1. Options that fit no set are an error (exit code 2).

    Whether layers "compress" depends on the estimator: compare more than one.

    Examples:

      trusttrace mi workspace/

      trusttrace mi workspace/ --estimator gaussian

      trusttrace mi workspace/ --estimator ksg --split paper
    """
    from trusttrace.analysis import run_mi
    from trusttrace.info import ESTIMATOR_CAVEAT
    from trusttrace.store import MI_TABLE, read_table

    device = check_device(device)
    store = open_workspace(workspace)
    before = len(read_table(workspace / MI_TABLE))
    table, problems = run_mi(
        store, estimator=estimator, x_layer=x_layer, split=split, folds=folds, test_size=test_size, seed=seed,
        max_rows=max_rows, device=device,
    )
    _finish(problems, f"{len(table) - before} new MI rows, {len(table)} in {workspace / MI_TABLE}")
    typer.echo(f"note: {ESTIMATOR_CAVEAT}", err=True)


def _finish(problems: list[str], summary: str) -> None:
    for problem in problems:
        typer.echo(f"warning: {problem}", err=True)
    skipped = f", {len(problems)} set(s) skipped" if problems else ""
    typer.echo(f"{summary}{skipped}")
    if problems:
        raise typer.Exit(1)
