"""The report's figures: matplotlib (Agg), one clean academic style, colour-blind-safe colours.

Each figure function takes tidy frames and returns a `matplotlib.figure.Figure` built without
pyplot, so no figure is ever registered globally and nothing accumulates across a report;
`save_figure` writes it as PNG and SVG (atomically, with reproducible metadata) and returns the
PNG as base64 for embedding.
"""

from __future__ import annotations

import base64
import functools
import io
import textwrap
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
import pandas as pd
from cycler import cycler
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import ListedColormap, Normalize
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FuncFormatter, NullFormatter

from trusttrace.provenance import trusttrace_version
from trusttrace.report.inputs import checkpoint_order
from trusttrace.store import atomic_write_bytes

# Okabe & Ito (2008), ordered for contrast on white; distinguishable with every colour-vision deficiency.
OKABE_ITO = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000", "#F0E442")
# Many layers: viridis without its palest yellow (perceptually uniform and colour-blind safe).
LAYER_CMAP = ListedColormap(matplotlib.colormaps["viridis"](np.linspace(0.0, 0.88, 256)), name="layers")
HEATMAP_CMAP = matplotlib.colormaps["cividis"].with_extremes(bad="#e4e4e4")
BASELINE_STYLES = {
    "majority": ("#444444", (0, (5, 3))), "bag_of_words": ("#999999", (0, (2, 2))), "first_word": ("#b07aa1", (0, (1, 2))),
}
MAX_LEGEND_LAYERS = len(OKABE_ITO)
MAX_ANNOTATED_CELLS = 160
MAX_TICKS = 12
MAX_MARKED_POINTS = 30
ARROWS_PER_LINE = 6
WIDTH = 7.0

STYLE: dict[str, Any] = {
    "font.family": "DejaVu Sans",
    "font.size": 8.5,
    "axes.titlesize": 9.5,
    "axes.labelsize": 8.5,
    "figure.titlesize": 10,
    "legend.fontsize": 7.5,
    "legend.frameon": False,
    "xtick.labelsize": 7.5,
    "ytick.labelsize": 7.5,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.color": "#e0e0e0",
    "grid.linewidth": 0.6,
    "axes.axisbelow": True,
    "axes.prop_cycle": cycler(color=OKABE_ITO),
    "lines.linewidth": 1.4,
    "lines.markersize": 3.5,
    "savefig.dpi": 150,
    "savefig.facecolor": "white",
    "svg.fonttype": "none",
    "svg.hashsalt": "trusttrace",
}

ESTIMATOR_UNITS = {"nhsic": "nHSIC score", "hsic": "normalised HSIC", "gaussian": "nats", "ksg": "nats"}


@dataclass(frozen=True)
class SavedFigure:
    """A figure written beside the report: its PNG and SVG paths and the PNG as base64."""

    name: str
    png: Path
    svg: Path
    png_base64: str


@dataclass(frozen=True)
class TimeAxis:
    """The training-time axis of a frame: training step, tokens seen, or checkpoint order."""

    column: str
    label: str
    scale: str = "linear"
    linthresh: float = 1.0
    ticks: tuple[str, ...] = ()

    def apply(self, ax) -> None:
        """Label and scale the x axis of `ax` (log when time spans two orders of magnitude)."""
        ax.set_xlabel(self.label + (" (log scale)" if self.scale != "linear" else ""))
        if self.scale == "log":
            ax.set_xscale("log")
        elif self.scale == "symlog":
            ax.set_xscale("symlog", linthresh=self.linthresh, linscale=0.5)
            low, high = ax.get_xlim()  # steps are never negative: no empty negative decades
            ax.set_xlim(max(low, -0.2 * self.linthresh), high)
        if self.column == "order":
            shown = thin(len(self.ticks))
            ax.set_xticks(shown, [plain(self.ticks[i]) for i in shown], rotation=45, ha="right")
        else:
            ax.xaxis.set_major_formatter(FuncFormatter(lambda value, _: format_count(value)))
            ax.xaxis.set_minor_formatter(NullFormatter())


def time_axis(frame: pd.DataFrame) -> tuple[TimeAxis, pd.DataFrame]:
    """The time axis for `frame` (needs `checkpoint`; uses `step`, else `tokens`, when complete and
    one value per checkpoint) and `frame` with an `x` column in that axis."""
    for column, label in (("step", "training step"), ("tokens", "tokens seen")):
        if column in frame and len(frame) and frame[column].notna().all() and frame.groupby(column)["checkpoint"].nunique().max() == 1:
            values = frame[column].astype(float)
            positive = np.unique(values[values > 0])
            if len(positive) >= 2 and positive[-1] / positive[0] >= 100:
                scale = "symlog" if (values <= 0).any() else "log"
                return TimeAxis(column, label, scale, float(positive[0])), frame.assign(x=values)
            return TimeAxis(column, label), frame.assign(x=values)
    order = checkpoint_order(frame)
    position = {name: float(i) for i, name in enumerate(order)}
    return TimeAxis("order", "checkpoint (training order)", ticks=tuple(order)), frame.assign(x=frame["checkpoint"].map(position))


def format_count(value: float) -> str:
    """A step or token count in a short form: 950, 12k, 1.5M, 2B."""
    for size, suffix in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= size:
            return f"{value / size:.3g}{suffix}"
    return f"{value:.3g}"


def plain(text: str) -> str:
    """`text` shown literally by matplotlib (a `$` would otherwise start mathtext)."""
    return str(text).replace("$", r"\$")


def title(fig: Figure, text: str) -> None:
    """The figure's title, wrapped to the figure's width so that a long name is never cut off."""
    width = int(fig.get_figwidth() * 13)
    fig.suptitle(textwrap.fill(plain(text), width))
    fig.set_label(text)


def marker(points: int) -> str | None:
    """Dots on a line of few points; a bare line when dots would merge."""
    return "o" if points <= MAX_MARKED_POINTS else None


def stride(n: int, most: int) -> list[int]:
    """Every k-th index of n items (k chosen so at most `most` remain), for regular tick labels."""
    return list(range(0, n, max(1, -(-n // most))))


def thin(n: int, most: int = MAX_TICKS) -> list[int]:
    """At most `most` evenly spaced indices of n items, first and last included."""
    return sorted({int(i) for i in np.linspace(0, n - 1, min(n, most)).round()}) if n else []


def styled(function: Callable[..., Figure]) -> Callable[..., Figure]:
    """Build the figure under the report's style (rcParams are read when artists are made)."""

    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Figure:
        with matplotlib.rc_context(STYLE):
            return function(*args, **kwargs)

    return wrapper


def save_figure(fig: Figure, folder: Path, name: str) -> SavedFigure:
    """Write `fig` as `folder/name.png` and `.svg` and return them with the PNG as base64.

    Each file names its title and the trusttrace version that drew it; no date, so the same
    results draw the same bytes.
    """
    FigureCanvasAgg(fig)
    rendered = {}
    made_by, label = f"trusttrace {trusttrace_version()}", fig.get_label() or name
    with matplotlib.rc_context(STYLE):
        for kind, metadata in (
            ("png", {"Software": made_by, "Title": label}), ("svg", {"Date": None, "Creator": made_by, "Title": label}),
        ):
            buffer = io.BytesIO()
            fig.savefig(buffer, format=kind, metadata=metadata)
            rendered[kind] = buffer.getvalue()
    fig.clear()
    png, svg = folder / f"{name}.png", folder / f"{name}.svg"
    atomic_write_bytes(png, rendered["png"])
    atomic_write_bytes(svg, rendered["svg"])
    return SavedFigure(name, png, svg, base64.b64encode(rendered["png"]).decode("ascii"))


def layer_colours(layers: list[int]) -> dict[int, Any]:
    """A colour per layer: Okabe-Ito for a few layers, the layer colormap for many."""
    if len(layers) <= MAX_LEGEND_LAYERS:
        return {layer: OKABE_ITO[i] for i, layer in enumerate(layers)}
    norm = _layer_norm(layers)
    return {layer: LAYER_CMAP(norm(layer)) for layer in layers}


def _layer_norm(layers: list[int]) -> Normalize:
    return Normalize(vmin=min(layers), vmax=max(layers) if max(layers) > min(layers) else min(layers) + 1)


def _layer_key(fig: Figure, axes: list, layers: list[int], extra: list[Line2D] = ()) -> None:
    """A legend naming each layer (few layers) or a colour bar of layers (many), plus `extra` entries."""
    if len(layers) <= MAX_LEGEND_LAYERS:
        handles = [Line2D([], [], color=c, label=f"layer {layer}") for layer, c in layer_colours(layers).items()]
        fig.legend(handles=handles + list(extra), loc="outside right center")
        return
    mappable = matplotlib.cm.ScalarMappable(norm=_layer_norm(layers), cmap=LAYER_CMAP)
    fig.colorbar(mappable, ax=axes, label="layer", fraction=0.04, pad=0.02)
    if extra:
        fig.legend(handles=list(extra), loc="outside lower center", ncols=len(extra))


@styled
def accuracy_heatmap(grid: pd.DataFrame, tick_labels: list[str], *, name: str, xlabel: str) -> Figure:
    """Probe accuracy per layer (rows of `grid`, bottom = layer 0) and checkpoint (columns, in order).

    Missing cells (a failed or absent unit) are grey.
    """
    values = grid.to_numpy(dtype=float)
    layers = [int(v) for v in grid.index]
    height = float(np.clip(0.24 * len(layers) + 1.6, 2.6, 8.0))
    fig = Figure(figsize=(WIDTH, height), layout="constrained")
    ax = fig.add_subplot()
    low = np.nanmin(values) if np.isfinite(values).any() else 0.5
    image = ax.imshow(
        np.ma.masked_invalid(values), aspect="auto", origin="lower", cmap=HEATMAP_CMAP,
        vmin=min(0.5, np.floor(low * 20) / 20), vmax=1.0, interpolation="nearest",
    )
    ax.grid(False)
    rows, columns = stride(len(layers), 16), thin(len(tick_labels))
    ax.set_yticks(rows, [str(layers[i]) for i in rows])
    ax.set_xticks(columns, [plain(tick_labels[i]) for i in columns], rotation=45 if len(tick_labels) > 6 else 0, ha="right" if len(tick_labels) > 6 else "center")
    ax.set_ylabel("layer (output of decoder block)")
    ax.set_xlabel(xlabel)
    title(fig, name)
    if values.size <= MAX_ANNOTATED_CELLS:
        for (row, column), value in np.ndenumerate(values):
            if np.isfinite(value):
                shade = image.cmap(image.norm(value))
                ink = "black" if 0.299 * shade[0] + 0.587 * shade[1] + 0.114 * shade[2] > 0.55 else "white"
                ax.text(column, row, f"{value:.2f}", ha="center", va="center", fontsize=6.5, color=ink)
    fig.colorbar(image, ax=ax, label="probe accuracy (test)", fraction=0.04, pad=0.02)
    return fig


@styled
def accuracy_curves(
    curves: pd.DataFrame, baselines: dict[str, float], axis: TimeAxis, *, name: str, best_layer: int | None
) -> Figure:
    """Accuracy against training time for a few layers, with 95 % interval bands and baselines.

    `curves` has columns x, layer, accuracy and optionally acc_low, acc_high; `baselines` maps a
    baseline name (majority, bag_of_words, first_word) to its accuracy, drawn as a dashed line.
    """
    fig = Figure(figsize=(WIDTH, 3.4), layout="constrained")
    ax = fig.add_subplot()
    layers = sorted(int(v) for v in curves["layer"].unique())
    colours = layer_colours(layers)
    bands = {"acc_low", "acc_high"} <= set(curves.columns)
    for layer, group in curves.groupby("layer"):
        group = group.sort_values("x")
        best = int(layer) == best_layer
        label = f"layer {layer}" + (" (best)" if best else "")
        ax.plot(group["x"], group["accuracy"], marker=marker(len(group)), color=colours[int(layer)], label=label, lw=2.2 if best else 1.3, zorder=3)
        if bands:
            ax.fill_between(group["x"], group["acc_low"], group["acc_high"], color=colours[int(layer)], alpha=0.15, lw=0, zorder=2)
    for baseline, value in baselines.items():
        colour, dashes = BASELINE_STYLES.get(baseline, ("#666666", (0, (4, 2))))
        ax.axhline(value, color=colour, linestyle=dashes, lw=1.1, label=f"{baseline.replace('_', ' ')} baseline ({value:.2f})", zorder=1)
    axis.apply(ax)
    ax.set_ylabel("probe accuracy (test)")
    title(fig, name)
    top = float(np.nanmax(curves[["accuracy"] + (["acc_high"] if bands else [])].to_numpy(float)))
    bottom = float(np.nanmin(curves[["accuracy"] + (["acc_low"] if bands else [])].to_numpy(float)))
    ax.set_ylim(max(0.0, min(bottom, *baselines.values(), 0.5) - 0.03), min(1.0, top) + 0.03)
    fig.legend(loc="outside right center")
    return fig


@styled
def mi_curves(frame: pd.DataFrame, turning: pd.DataFrame, axis: TimeAxis, *, name: str, estimator: str) -> Figure:
    """I(X;T) and I(T;Y) against training time, one line per layer; I(X;T) peaks starred
    (hollow unless the peak is a rise then fall beyond the noise: see info.turning_points)."""
    fig = Figure(figsize=(WIDTH, 3.2), layout="constrained")
    left, right = fig.subplots(1, 2, sharex=True)
    layers = sorted(int(v) for v in frame["layer"].unique())
    colours = layer_colours(layers)
    for layer, group in frame.groupby("layer"):
        group = group.sort_values("x")
        left.plot(group["x"], group["i_xt"], color=colours[int(layer)], marker=marker(len(group)), ms=2.5)
        right.plot(group["x"], group["i_ty"], color=colours[int(layer)], marker=marker(len(group)), ms=2.5)
    for row in turning.itertuples():
        if int(row.layer) in colours:
            _star(left, row.peak_x, row.peak_i_xt, colours[int(row.layer)], bool(row.interior))
    unit = ESTIMATOR_UNITS.get(estimator, "estimate")
    for ax, quantity in ((left, "I(X;T)"), (right, "I(T;Y)")):
        axis.apply(ax)
        ax.set_ylabel(f"{quantity}, {unit}")
        ax.set_title(quantity)
    title(fig, f"{name} · estimator: {estimator}")
    _layer_key(fig, [left, right], layers, _peak_handles(turning) + _shuffled_floor(right, frame))
    return fig


def _shuffled_floor(ax, frame: pd.DataFrame) -> list[Line2D]:
    """Draw, per checkpoint, the highest I(T;Y) any shown layer reads with the labels shuffled
    (dashed): each layer's reading of one seeded shuffle of the labels, what the estimator gives
    by chance. Returns its legend entry
    (none for rows written before the baseline existed)."""
    if "i_ty_shuffled" not in frame:
        return []
    floor = frame.assign(value=frame["i_ty_shuffled"].astype(float)).groupby("x")["value"].max().dropna()
    if floor.empty:
        return []
    style = {"color": "#333333", "ls": "--", "lw": 1.2}
    ax.plot(floor.index, floor.to_numpy(), marker=marker(len(floor)), ms=2.5, **style)
    return [Line2D([], [], label="I(T;Y), labels shuffled (highest layer)", **style)]


@styled
def information_plane(frame: pd.DataFrame, turning: pd.DataFrame, *, name: str, estimator: str) -> Figure:
    """The information plane: x = I(X;T), y = I(T;Y), one line per layer through the checkpoints
    in training order (arrows point forward in time; ○ first checkpoint, ■ last)."""
    fig = Figure(figsize=(WIDTH * 0.85, 4.6), layout="constrained")
    ax = fig.add_subplot()
    layers = sorted(int(v) for v in frame["layer"].unique())
    colours = layer_colours(layers)
    peaks = turning.set_index("layer") if len(turning) else pd.DataFrame()
    for layer, group in frame.groupby("layer"):
        group = group.sort_values("x")
        colour = colours[int(layer)]
        xs, ys = group["i_xt"].to_numpy(float), group["i_ty"].to_numpy(float)
        ax.plot(xs, ys, color=colour, lw=1.1, alpha=0.9)
        ax.plot(xs[:1], ys[:1], marker="o", mfc="white", mec=colour, ms=4.5, ls="none")
        ax.plot(xs[-1:], ys[-1:], marker="s", color=colour, ms=4, ls="none")
        for i in thin(len(xs) - 1, ARROWS_PER_LINE) if len(xs) > 1 else []:
            middle = ((xs[i] + xs[i + 1]) / 2, (ys[i] + ys[i + 1]) / 2)
            ax.annotate("", xy=middle, xytext=(xs[i], ys[i]),
                        arrowprops={"arrowstyle": "-|>", "color": colour, "lw": 0.9, "mutation_scale": 8, "shrinkA": 0, "shrinkB": 0})
        if int(layer) in peaks.index:
            peak = peaks.loc[int(layer)]
            at = group[group["x"] == peak["peak_x"]]
            if len(at):
                _star(ax, float(peak["peak_i_xt"]), float(at["i_ty"].iloc[0]), colour, bool(peak["interior"]))
    unit = ESTIMATOR_UNITS.get(estimator, "estimate")
    ax.set_xlabel(f"I(X;T), {unit}")
    ax.set_ylabel(f"I(T;Y), {unit}")
    title(fig, f"{name} · estimator: {estimator}")
    time_handles = [
        Line2D([], [], marker="o", mfc="white", mec="#333333", ls="none", label="first checkpoint"),
        Line2D([], [], marker="s", color="#333333", ls="none", label="last checkpoint"),
    ]
    _layer_key(fig, [ax], layers, time_handles + _peak_handles(turning))
    return fig


@styled
def steering_curves(frame: pd.DataFrame, *, name: str, metric: str, baseline: dict[str, float]) -> Figure:
    """The steered metric against α per layer (with its interval when given) and, beside it, the
    side effects (KL to the unsteered model, perplexity); the best setting is starred.

    `frame` has columns layer, alpha, value and optionally low, high, kl, perplexity, best;
    `baseline` holds the unsteered model's values, drawn as dashed lines.
    """
    side = (("kl", "KL(steered ‖ unsteered), nats"), ("perplexity", "perplexity"))
    panels = [("value", plain(metric))] + [(c, label) for c, label in side if c in frame and frame[c].notna().any()]
    fig = Figure(figsize=(WIDTH, 2.9), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(panels), sharex=True))
    layers = sorted(int(v) for v in frame["layer"].unique())
    colours = layer_colours(layers)
    best = frame[frame["best"].fillna(False).astype(bool)] if "best" in frame else frame.iloc[:0]
    for ax, (column, label) in zip(axes, panels):
        for layer, group in frame.groupby("layer"):
            group = group.sort_values("alpha")
            ax.plot(group["alpha"], group[column], marker="o", color=colours[int(layer)])
            if column == "value" and {"low", "high"} <= set(group.columns) and group["low"].notna().any():
                ax.fill_between(group["alpha"], group["low"], group["high"], color=colours[int(layer)], alpha=0.15, lw=0)
        if column in baseline and np.isfinite(baseline[column]):
            ax.axhline(baseline[column], color="#444444", linestyle=(0, (5, 3)), lw=1.0)
        for row in best.itertuples():
            ax.plot(row.alpha, getattr(row, column), marker="*", ms=13, mfc=colours[int(row.layer)], mec="black", mew=0.8, ls="none", zorder=5)
        ax.set_xlabel("steering strength α")
        ax.set_ylabel(label)
    title(fig, name)
    extra = [Line2D([], [], color="#444444", linestyle=(0, (5, 3)), label="unsteered")] if baseline else []
    if len(best):
        extra.append(Line2D([], [], marker="*", ms=10, mfc="white", mec="black", ls="none", label="best setting"))
    _layer_key(fig, list(axes), layers, extra)
    return fig


def _star(ax, x: float, y: float, colour: Any, interior: bool) -> None:
    """Mark an I(X;T) peak: a filled star for a rise then fall beyond the noise, else a hollow one."""
    face = colour if interior else "white"
    ax.plot([x], [y], marker="*", ms=11, mfc=face, mec="black", mew=0.7, ls="none", zorder=5)


def _peak_handles(turning: pd.DataFrame) -> list[Line2D]:
    handles = []
    if len(turning) and turning["interior"].any():
        handles.append(Line2D([], [], marker="*", ms=10, mfc="#777777", mec="black", ls="none", label="I(X;T) peak, then a fall"))
    if len(turning) and (~turning["interior"].astype(bool)).any():
        handles.append(Line2D([], [], marker="*", ms=10, mfc="white", mec="black", ls="none", label="highest I(X;T), no fall beyond noise"))
    return handles
