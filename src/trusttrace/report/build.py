"""`write_report`: the workspace's results as one self-contained HTML page plus PNG/SVG figures."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Mapping

from trusttrace.errors import LayerError, ReportError, StoreError
from trusttrace.provenance import now_utc, trusttrace_version
from trusttrace.report import sections
from trusttrace.report.html import page
from trusttrace.report.inputs import Workspace, read_workspace
from trusttrace.report.selection import select_rows
from trusttrace.store import atomic_write_bytes

REPORT_FILE = "report.html"
FIGURE_LIST = "figures.json"


def write_report(
    workspace: str | Path,
    *,
    out_dir: Path | None = None,
    layers: list[int] | None = None,
    title: str | None = None,
    select: Mapping[str, str] | None = None,
) -> Path:
    """Write WORKSPACE/report/report.html (or into `out_dir`) with its figures beside it; returns its path.

    `layers` picks the layers drawn as accuracy curves and in the MI figures (default: a few
    evenly spaced layers plus the best one for accuracy, every layer for MI). `select` keeps only
    the result rows whose columns have these values, e.g. {"folds": "10"} (see report/selection.py);
    without it the report shows the default configuration and names the others.
    """
    ws = select_rows(read_workspace(workspace), select or {})
    if ws.empty:
        raise StoreError(f"nothing to report in {workspace}: run `trusttrace run` or `trusttrace extract` + `probe` first")
    check_layers(ws, layers)
    folder = Path(out_dir) if out_dir is not None else ws.root / "report"
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:  # a file there, or a read-only folder
        raise ReportError(f"{folder}: cannot write the report there ({error.strerror or error})") from None
    remove_unfinished_writes(folder)
    writer = sections.FigureWriter(folder)
    made = now_utc()
    parts = [
        sections.overview(ws, version=trusttrace_version(), made=made),
        sections.probe_section(ws, writer, layers),
        sections.mi_section(ws, writer, layers),
        sections.steering_section(ws, writer),
        sections.evaluation_section(ws),
        sections.cards_section(ws),
        sections.provenance_section(ws),
    ]
    heading = title or f"trusttrace report: {ws.root.resolve().name}"
    path = folder / REPORT_FILE
    atomic_write_bytes(path, page(heading, f"Made {made} from {ws.root.resolve()}", parts).encode("utf-8"))
    remove_stale_figures(folder, writer.files())
    return path


def remove_unfinished_writes(folder: Path) -> None:
    """Delete the temporary files of a report write that was killed before its rename (named
    ".<file>.<random>.tmp", see store.atomic_write_bytes): those of report.html, figures.json
    and PNG/SVG figures. Other files in the folder stay."""
    for path in folder.glob(".*.tmp"):
        target = path.name[1:].rsplit(".", 2)[0]
        if path.is_file() and (target in (REPORT_FILE, FIGURE_LIST) or target.endswith((".png", ".svg"))):
            path.unlink(missing_ok=True)


def remove_stale_figures(folder: Path, written: set[str]) -> None:
    """Delete the figures an earlier report wrote in `folder` that this one did not, then list this one's.

    Only files named in the earlier list go, so other files in a user's folder are never touched.
    """
    listing = folder / FIGURE_LIST
    earlier = set(json.loads(listing.read_text())) if listing.exists() else set()
    for name in sorted(earlier - written):
        (folder / Path(name).name).unlink(missing_ok=True)
    atomic_write_bytes(listing, json.dumps(sorted(written), indent=1).encode("utf-8"))


def check_layers(ws: Workspace, layers: list[int] | None) -> None:
    """Refuse requested layers that no probe or MI table holds (when such a table exists)."""
    if layers is None:
        return
    if not layers:
        raise LayerError("layers: name at least one layer (or None for the default choice)")
    known = {int(v) for frame in (ws.probes, ws.mi) if "layer" in frame for v in frame["layer"].dropna().unique()}
    unknown = [layer for layer in layers if layer not in known]
    if known and unknown:
        there = f"{min(known)}..{max(known)}" if len(known) == max(known) - min(known) + 1 else ", ".join(map(str, sorted(known)))
        raise LayerError(f"layers {unknown} are not in the workspace's probe or MI tables (layers there: {there})")
