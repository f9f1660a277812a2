"""`trusttrace report`: the workspace's results as one HTML page with PNG/SVG figures."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from trusttrace.cli.app import app
from trusttrace.cli.options import check_output, parse_layers
from trusttrace.errors import LayerError


@app.command()
def report(
    workspace: Path = typer.Argument(..., help="Workspace folder written by `trusttrace run`, or `extract` + `probe`/`mi`."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Folder for report.html and its figures (default: WORKSPACE/report)."),
    layers: Optional[str] = typer.Option(None, help="Layers drawn as curves, e.g. 0,3,5 (default: a few evenly spaced + the best)."),
    title: Optional[str] = typer.Option(None, help="Page title (default: 'trusttrace report: <workspace name>')."),
    select: list[str] = typer.Option(
        [], "--select", metavar="KEY=VALUE",
        help="Show only result rows whose column KEY is VALUE (repeatable), e.g. folds=10, C=0.5, seed=1, dataset=sst2.",
    ),
) -> None:
    """Write an HTML report of WORKSPACE and print its path.

    Sections: overview, probe accuracy, mutual information, steering, trust evaluations, dataset cards,
    provenance and failures.

    The page is self-contained (figures embedded); each figure is also written beside it as PNG and SVG.

    A section without data says which command makes it. Where a table holds several
    configurations (folds, C, seed...), the defaults are shown and the others named;
    --select shows another.

    Examples:

      trusttrace report workspace/

      trusttrace report workspace/ --out paper/figures --layers 0,8,16,24 --title "Pythia-410m"

      trusttrace report workspace/ --select folds=10 --out workspace/report-10-folds
    """
    chosen = parse_layers(layers, stored=True) if layers is not None else None
    if chosen == "all":
        raise LayerError("--layers 'all': name the layers to draw as curves, e.g. 0,3,5 (without --layers: a few and the best)")
    if out is not None:
        check_output(out, "--out", folder=True)
    elif workspace.is_dir():  # a workspace that is not a folder is said below
        check_output(workspace / "report", "the report folder (no --out given)", folder=True)
    from trusttrace.report import write_report
    from trusttrace.report.selection import parse_selection

    selection = parse_selection(select)
    typer.echo(str(write_report(workspace, out_dir=out, layers=chosen, title=title, select=selection)))
