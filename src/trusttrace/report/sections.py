"""The report's sections, each built from the workspace tables it needs.

A section whose data is absent says in one line what is missing and which command makes it.
Figures are written through a `FigureWriter`, which gives each a unique file name.
"""

from __future__ import annotations

import hashlib
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from trusttrace.evaluation.grid import SIGNIFICANCE
from trusttrace.info import ESTIMATOR_CAVEAT, FALL_NOISE, MIN_TURNING_CHECKPOINTS, turning_points
from trusttrace.provenance import earlier_copies
from trusttrace.report import figures
from trusttrace.report.html import (
    Section, bullet_list, definition_list, esc, figure, heading, link, missing, paragraph, span, table,
)
from trusttrace.report.inputs import INTERRUPTED, Workspace, checkpoint_order, missing_columns, short, with_checkpoint
from trusttrace.steering_stage import STEERING_KEYS
from trusttrace.store import BASELINES_TABLE, EVALUATE_TABLE, MANIFEST_FILE, MI_TABLE, PROBES_TABLE, STEERING_TABLE

PROBE_REMEDY = "run `trusttrace probe WORKSPACE` (or the whole sweep with `trusttrace run`)"
MI_REMEDY = "run `trusttrace mi WORKSPACE` (or the whole sweep with `trusttrace run`)"
STEERING_REMEDY = "run `trusttrace run` with the steering and evaluation stages"
EVALUATE_REMEDY = "add evaluate to the stages of `trusttrace run` (or see `trusttrace evaluate -o`)"
# What an evaluation table shows of evaluate.parquet, in this order, where present.
EVALUATION_COLUMNS = ("task", "metric", "value", "low", "high", "n", "dataset", "protocol", "seed", "target_revision")
# Per task, the one configuration an evaluation table shows (besides the dataset version with the most rows).
EVALUATION_CONFIGURATION = (
    ("target_model_id", None), ("target_revision", None), ("protocol", "default"), ("seed", None), ("max_rows", 0),
)
DEFAULT_CURVE_LAYERS = 4
IMPROVES = f"beyond chance (a paired one-sided test on the same examples, Holm-corrected over the grid's settings, at {SIGNIFICANCE * 100:g} %)"
SELECT_HINT = "show another with `trusttrace report --select KEY=VALUE`, a column and one of its values named here"
MAX_FIGURE_NAME = 100  # characters of a figure's file name before its suffix
# The probe configuration the figures show where probes.parquet holds several: preferred values
# first (the defaults), else the smallest; the caption names what was left out.
PROBE_CONFIGURATION = (
    ("method", "logreg"), ("solver", "optimum"), ("split", "grouped"), ("folds", 5), ("test_size", 0.2), ("C", 1.0), ("seed", None),
)
# Columns that name one steering grid, when present: the steering table's keys but layer and α
# (so rows the table keeps apart are never drawn as one grid), and the demo's source and target.
STEERING_GROUPS = (*(key for key in STEERING_KEYS if key not in ("layer", "alpha")), "source", "target")


@dataclass
class FigureWriter:
    """Saves figures into the report folder under unique, file-system-safe names."""

    folder: Path
    used: set[str] = field(default_factory=set)

    def save(self, fig, *parts: Any) -> figures.SavedFigure:
        base = re.sub(r"[^a-z0-9]+", "-", "-".join(str(p) for p in parts).lower()).strip("-") or "figure"
        if len(base) > MAX_FIGURE_NAME:  # parts may hold whole model paths: keep names within file-system limits
            base = f"{base[:MAX_FIGURE_NAME - 13].rstrip('-')}-{hashlib.sha256(base.encode()).hexdigest()[:12]}"
        name, n = base, 1
        while name in self.used:
            n += 1
            name = f"{base}-{n}"
        self.used.add(name)
        return figures.save_figure(fig, self.folder, name)

    def files(self) -> set[str]:
        """The names of the PNG and SVG files written so far."""
        return {f"{name}.{kind}" for name in self.used for kind in ("png", "svg")}


def table_problem(ws: Workspace, frame: pd.DataFrame, file: str, what: str, required: tuple[str, ...], remedy: str) -> str | None:
    """The line a section shows instead of its figures when its table is absent, left empty by
    the report's selection, or lacks columns, else None."""
    if frame.empty and file in ws.unmatched:
        return missing(f"No {what} selected: {file} has rows, but {ws.unmatched[file]}", "select another value, or leave --select out")
    if frame.empty:
        return missing(f"No {what} ({file} is absent)", remedy)
    lacking = missing_columns(frame, required)
    if lacking:
        return missing(f"{file} lacks column(s) {', '.join(lacking)}", f"re-create it: {remedy}")
    return None


# ----- 1. overview -------------------------------------------------------------------


def overview(ws: Workspace, *, version: str, made: str) -> Section:
    """Workspace, models, checkpoints, datasets, which tables exist, versions and time."""
    section = Section("overview", "Overview")
    points = all_checkpoints(ws)
    tables = (PROBES_TABLE, BASELINES_TABLE, MI_TABLE, STEERING_TABLE, EVALUATE_TABLE, MANIFEST_FILE)
    present = [name for name in tables if (ws.root / name).exists()]
    made_by = sorted({str(p.get("trusttrace_version")) for p in ws.provenance if p.get("trusttrace_version")})
    per_model = [
        f"{model}: {len(group)} ({_checkpoint_span(group)})" for model, group in points.groupby("model", sort=True)
    ] if len(points) else []
    section.add(definition_list([
        ("Workspace", span(str(ws.root.resolve()), "mono")),
        ("Models", esc(", ".join(ws.models()) or "none recorded")),
        ("Checkpoints", esc("; ".join(per_model) or "none recorded")),
        ("Datasets", esc(", ".join(ws.dataset_names()) or "none recorded")),
        ("Tables", esc(", ".join(present) or "none")),
        ("Activation sets", esc(str(len(ws.provenance)))),
        ("trusttrace", esc(version + (f" (artefacts made by {', '.join(made_by)})" if made_by else ""))),
        ("Made", esc(made)),
    ]))
    return section


def all_checkpoints(ws: Workspace) -> pd.DataFrame:
    """Every (model, checkpoint) any input mentions, with its step and tokens, in training order."""
    frames = [with_checkpoint(f) for f in (ws.probes, ws.mi) if len(f)]
    if len(ws.checkpoints):
        frames.append(with_checkpoint(ws.checkpoints.rename(columns={"name": "checkpoint"})))
    if ws.provenance:
        frames.append(with_checkpoint(pd.DataFrame(ws.provenance)))
    columns = ["model", "checkpoint", "step", "tokens"]
    if not frames:
        return pd.DataFrame(columns=columns)
    merged = pd.concat([f.reindex(columns=columns) for f in frames], ignore_index=True)
    merged = merged.drop_duplicates(["model", "checkpoint"])
    return merged.sort_values(["model", "step", "tokens", "checkpoint"], na_position="last").reset_index(drop=True)


def _checkpoint_span(group: pd.DataFrame) -> str:
    names = group["checkpoint"].tolist()
    return ", ".join(names) if len(names) <= 6 else f"{names[0]} … {names[-1]}"


# ----- 2. probes ---------------------------------------------------------------------


def probe_section(ws: Workspace, writer: FigureWriter, layers: list[int] | None) -> Section:
    """Per model and dataset: the layer × checkpoint accuracy heatmap and accuracy curves."""
    section = Section("probes", "Probe accuracy")
    problem = table_problem(ws, ws.probes, PROBES_TABLE, "probe results", ("dataset", "layer", "accuracy"), PROBE_REMEDY)
    if problem:
        section.add(problem)
        return section
    if ws.baselines.empty:
        section.add(missing(f"No baselines ({BASELINES_TABLE} is absent)", "rerun `trusttrace probe` to make them"))
    probes = with_checkpoint(ws.probes)
    for (model, dataset), group in probes.groupby(["model", "dataset"], sort=True):
        section.add(heading(f"{dataset} · {model}"))
        section.add(*_probe_figures(group, ws.baselines, writer, layers, model=model, dataset=dataset, times=ws.dataset_times))
    return section


def _probe_figures(
    group: pd.DataFrame, baselines: pd.DataFrame, writer: FigureWriter, layers: list[int] | None, *, model: str, dataset: str,
    times: dict[str, str],
) -> list[str]:
    data, chosen, others = pick_configuration(group, (dataset_version(group, times), *extraction_choices(group), *PROBE_CONFIGURATION))
    data = one_set_per_checkpoint(data)
    axis, data = figures.time_axis(data)
    order = checkpoint_order(data)
    grid = data.pivot_table(index="layer", columns="checkpoint", values="accuracy", aggfunc="mean").reindex(columns=order).sort_index()
    position = data.drop_duplicates("checkpoint").set_index("checkpoint")["x"]
    ticks = order if axis.column == "order" else [figures.format_count(position[c]) for c in order]
    xlabel = axis.label if axis.column == "order" else f"checkpoint, by {axis.label} (one column each)"
    title = f"{dataset} · {model}"
    setting = _describe_configuration(chosen)
    parts = [figure(
        writer.save(figures.accuracy_heatmap(grid, ticks, name=f"Probe accuracy by layer and checkpoint: {title}", xlabel=xlabel), "probe-heatmap", model, dataset),
        f"Probe accuracy of every layer (rows) at every checkpoint (columns, in training order) on {dataset}, {model}; "
        f"{setting}. Grey cells have no result.",
        alt=f"heatmap of probe accuracy by layer and checkpoint for {dataset}, {model}",
    )]
    means = data.groupby("layer")["accuracy"].mean()
    best = int(means.idxmax()) if means.notna().any() else None
    shown = curve_layers(sorted(int(v) for v in means.index), best, layers)
    lines = baseline_values(baselines, dataset, model, chosen, set(data.get("dataset_hash", pd.Series(dtype=str)).dropna()))
    curves = data[data["layer"].isin(shown)]
    caption = (
        f"Probe accuracy against {axis.label} on {dataset}, {model}, for layers {', '.join(map(str, shown))}"
        + (f"; best layer {best} (highest mean accuracy over checkpoints, {means[best]:.3f}; the highest of "
           f"{means.notna().sum()} layers, so it overstates that layer's accuracy on new data)" if best is not None else "")
        + f"; {setting}. Bands: 95 % intervals (acc_low to acc_high). "
        + ("Dashed lines: " + ", ".join(f"{k.replace('_', ' ')} baseline {v:.3f}" for k, v in lines.items()) + " on the same split."
           if lines else "No baseline for this dataset and split in probe_baselines.parquet.")
    )
    if not curves.empty:
        fig = figures.accuracy_curves(curves, lines, axis, name=f"Probe accuracy during training: {title}", best_layer=best)
        parts.append(figure(writer.save(fig, "probe-curves", model, dataset), caption, alt=f"probe accuracy against training step for {dataset}, {model}"))
    else:
        parts.append(missing(f"None of the requested layers {layers} is in the probe table for {dataset}, {model}", "choose others with --layers"))
    if others:
        parts.append(paragraph(f"{PROBES_TABLE} also holds {others}; the figures show the configuration named above ({SELECT_HINT}).", "missing"))
    return parts


def pick_configuration(
    frame: pd.DataFrame, choices: tuple[tuple[str, Any], ...]
) -> tuple[pd.DataFrame, dict[str, Any], str]:
    """Keep one value of each configuration column (the preferred one, else the smallest).

    Returns the filtered frame, the chosen values and a description of the values left out.
    """
    chosen: dict[str, Any] = {}
    others = []
    for column, preferred in choices:
        if column not in frame or frame[column].isna().all():
            continue
        values = sorted(frame[column].dropna().unique(), key=str)
        value = preferred if preferred in values else values[0]
        chosen[column] = value
        frame = frame[frame[column] == value]
        rest = [str(v) for v in values if v != value]
        if rest and column == "dataset_hash":
            others.append(f"other versions of the dataset file, dataset_hash {', '.join(rest)} (shown: {value})")
        elif rest:
            others.append(f"{column} {', '.join(rest)}")
    return frame, chosen, "; ".join(others)


def one_set_per_checkpoint(data: pd.DataFrame) -> pd.DataFrame:
    """One row per checkpoint and layer: the last written, where two activation sets of one
    checkpoint share the configuration shown (extracted again with another `layers` list, say;
    their shared layers hold the same states)."""
    return data.drop_duplicates(["checkpoint", "layer"], keep="last") if {"checkpoint", "layer"} <= set(data.columns) else data


def dataset_version(group: pd.DataFrame, times: dict[str, str]) -> tuple[str, Any]:
    """The configuration choice of a dataset's content, when the table holds several versions (a
    file changed under the same name): the one last used (`Workspace.dataset_times`), which is
    the file as it is now after a rerun, else the one with the most rows. Rows of two versions
    are never averaged."""
    versions = [v for v in group["dataset_hash"].dropna().unique() if v in times] if "dataset_hash" in group else []
    if len(versions) > 1:
        return ("dataset_hash", max(versions, key=lambda version: times[version]))
    return most_rows(group, "dataset_hash")


def extraction_choices(group: pd.DataFrame) -> tuple[tuple[str, Any], ...]:
    """The configuration choices of how activations were read: the position (last preferred) and
    the dtype with the most rows, so rows of two extractions are never averaged as one."""
    return (("position", "last"), most_rows(group, "dtype"))


def most_rows(group: pd.DataFrame, column: str) -> tuple[str, Any]:
    """The configuration choice of `column`: its value with the most rows (None when absent)."""
    if column not in group or group[column].isna().all():
        return (column, None)
    return (column, group[column].value_counts().idxmax())


def _describe_configuration(chosen: dict[str, Any]) -> str:
    """The chosen probe configuration in words: "method logreg, split grouped, 5 folds, C 1.0"."""
    parts = [f"{key} {value}" for key, value in chosen.items() if key not in ("folds", "test_size", "dataset_hash")]
    folds = chosen.get("folds")
    if folds is not None:
        test_share = f" (test share {chosen['test_size']})" if "test_size" in chosen and chosen.get("split") != "paper" else ""
        parts.append(f"{int(folds)} folds" if int(folds) > 1 else f"one train/test split{test_share}")
    return ", ".join(parts) or "the probe table's only configuration"


def curve_layers(available: list[int], best: int | None, requested: list[int] | None) -> list[int]:
    """The layers drawn as curves: the requested ones, else a few evenly spaced plus the best."""
    if requested is not None:
        return [layer for layer in requested if layer in available]
    chosen = {available[i] for i in figures.thin(len(available), DEFAULT_CURVE_LAYERS)}
    if best is not None:
        chosen.add(best)
    return sorted(chosen)


def baseline_values(
    baselines: pd.DataFrame, dataset: str, model: str, chosen: dict[str, Any], hashes: set[str]
) -> dict[str, float]:
    """Mean accuracy of each baseline on the dataset (the versions in `hashes`, when known), for
    the split, seed, folds and test share the probes used."""
    if baselines.empty or missing_columns(baselines, ("dataset", "baseline", "accuracy")):
        return {}
    rows = baselines[baselines["dataset"].astype(str) == dataset]
    if "model" in rows and rows["model"].notna().any():
        rows = rows[rows["model"].astype(str) == model]
    if hashes and "dataset_hash" in rows:
        rows = rows[rows["dataset_hash"].isin(hashes)]
    for column in ("split", "seed", "folds", "test_size"):
        if column in chosen and column in rows:
            rows = rows[rows[column] == chosen[column]]
    means = rows.groupby("baseline")["accuracy"].mean()
    return {str(name): float(value) for name, value in means.items() if np.isfinite(value)}


# ----- 3. mutual information ---------------------------------------------------------


def mi_section(ws: Workspace, writer: FigureWriter, layers: list[int] | None) -> Section:
    """Per model, dataset and estimator: MI curves, the information plane and turning points."""
    section = Section("mutual-information", "Mutual information")
    required = ("dataset", "layer", "estimator", "i_xt", "i_ty")
    problem = table_problem(ws, ws.mi, MI_TABLE, "mutual-information estimates", required, MI_REMEDY)
    if problem:
        section.add(problem)
        return section
    section.add(f'<div class="caveat"><strong>Caveat.</strong> {esc(ESTIMATOR_CAVEAT)}</div>')
    mi = with_checkpoint(ws.mi)
    for (model, dataset, estimator), group in mi.groupby(["model", "dataset", "estimator"], sort=True):
        section.add(heading(f"{dataset} · {model} · estimator {estimator}"))
        section.add(*_mi_figures(group, writer, layers, model=model, dataset=dataset, estimator=estimator, times=ws.dataset_times))
    return section


def _mi_figures(
    group: pd.DataFrame, writer: FigureWriter, layers: list[int] | None, *, model: str, dataset: str, estimator: str,
    times: dict[str, str],
) -> list[str]:
    data, chosen, others = pick_configuration(group, (
        dataset_version(group, times), *extraction_choices(group), ("x_layer", None), ("split", None), ("seed", None), ("folds", 5), ("test_size", 0.2),
        ("mi_max_rows", 0),
    ))
    chosen.pop("dataset_hash", None)
    data = one_set_per_checkpoint(data)
    if layers is not None:
        data = data[data["layer"].isin(layers)]
    finite = data.groupby("layer")["i_xt"].transform(lambda values: np.isfinite(values.astype(float)).any())
    unbounded = sorted(int(layer) for layer in data.loc[~finite, "layer"].unique())
    data = data[finite]
    if data.empty:
        return [missing(f"None of the requested layers {layers} is in the MI table for {dataset}, {model}", "choose others with --layers")]
    axis, data = figures.time_axis(data)
    turning = turning_points(data.assign(step=data["x"])).rename(columns={"peak_step": "peak_x"})
    title = f"{dataset} · {model}"
    setting = ", ".join(f"{k} {v}" for k, v in chosen.items())
    note = f"Estimator: {estimator}" + (f" ({setting})" if setting else "") + "; its reading of fitting and compression depends on the estimator (see the caveat above)."
    if unbounded:
        note += f" Layer(s) {', '.join(map(str, unbounded))} left out: I(X;T) is infinite there (T is X itself)."
    parts = [
        figure(
            writer.save(figures.mi_curves(data, turning, axis, name=f"Mutual information during training: {title}", estimator=estimator), "mi-curves", model, dataset, estimator),
            f"I(X;T) (left) and I(T;Y) (right) against {axis.label}, one line per layer, on {dataset}, {model}. "
            f"Stars: the checkpoint where I(X;T) is highest per layer; filled only where it rises then falls by more than "
            f"{FALL_NOISE:g} times the noise between checkpoints (hollow: at the first or last checkpoint, or no fall beyond noise). "
            f"{_shuffled_note(data)}{note}",
            alt=f"I(X;T) and I(T;Y) against training step for {dataset}, {model}, estimator {estimator}",
        ),
        figure(
            writer.save(figures.information_plane(data, turning, name=f"Information plane: {title}", estimator=estimator), "info-plane", model, dataset, estimator),
            f"Information plane of {dataset}, {model}: each line is one layer moving through the checkpoints in training order "
            f"(arrows point forward in time; circle = first checkpoint, square = last; star = I(X;T) peak). {note}",
            alt=f"information plane trajectories for {dataset}, {model}, estimator {estimator}",
        ),
        _turning_table(turning, axis, data),
    ]
    if others:
        parts.append(paragraph(f"{MI_TABLE} also holds {others}; the figures show the configuration named above ({SELECT_HINT}).", "missing"))
    return parts


def _shuffled_note(data: pd.DataFrame) -> str:
    """The caption's words on the dashed shuffled-label floor, or why it is missing."""
    values = data["i_ty_shuffled"].astype(float) if "i_ty_shuffled" in data else pd.Series(dtype=float)
    if values.notna().any():
        return ("Dashed: the highest I(T;Y) any shown layer reads with the labels shuffled (one seeded shuffle), "
                "what the estimator gives with no relation to the labels; an I(T;Y) near it is within chance. ")
    return ("No shuffled-label floor: these rows were estimated before trusttrace 0.9.0 recorded it (move "
            f"{MI_TABLE} aside and run trusttrace mi, or trusttrace run, again to add it). ")


def _turning_table(turning: pd.DataFrame, axis: figures.TimeAxis, data: pd.DataFrame) -> str:
    if turning.empty:
        return missing("No turning points: every layer has a single checkpoint or no finite I(X;T)", MI_REMEDY)
    at = data.drop_duplicates("x").set_index("x")["checkpoint"]
    rows = pd.DataFrame({
        "layer": turning["layer"].astype(int),
        f"I(X;T) peak at ({axis.label})": [at.get(x, x) if axis.column == "order" else x for x in turning["peak_x"]],
        "checkpoint": [at.get(x, "") for x in turning["peak_x"]],
        "peak I(X;T)": turning["peak_i_xt"].astype(float),
        "rise then fall": [_turning_verdict(row) for row in turning.itertuples()],
    })
    return table(rows, raw_columns=["rise then fall"])


def _turning_verdict(row: Any) -> str:
    """Whether a layer's I(X;T) peak is a rise then fall beyond the noise, and if not, why not."""
    if row.interior:
        return f"yes: falls by {row.fall:.3g}, over {FALL_NOISE:g} × the noise {row.noise:.2g}"
    if row.fall <= 0:  # the highest value is the first or the last
        return span("no: highest at the first or last checkpoint", "flag")
    if not np.isfinite(row.noise):
        return span(f"cannot tell: fewer than {MIN_TURNING_CHECKPOINTS} checkpoints to estimate the noise", "flag")
    return span(f"no: the fall {row.fall:.3g} is within {FALL_NOISE:g} × the noise {row.noise:.2g}", "flag")


# ----- 4. steering -------------------------------------------------------------------


def steering_section(ws: Workspace, writer: FigureWriter) -> Section:
    """Per steering grid: the metric and side effects against α per layer, the best setting starred."""
    section = Section("steering", "Steering")
    problem = table_problem(ws, ws.steering, STEERING_TABLE, "steering results", ("layer", "alpha", "value"), STEERING_REMEDY)
    if problem:
        section.add(problem)
        return section
    keys = [c for c in STEERING_GROUPS if c in ws.steering.columns]
    groups = ws.steering.groupby(keys, sort=True, dropna=False) if keys else [((), ws.steering)]
    best_rows = []
    for values, group in groups:
        named = dict(zip(keys, values if isinstance(values, tuple) else (values,)))
        title = " · ".join(f"{k.replace('_', ' ')} {v}" for k, v in named.items() if not _blank(v)) or "steering grid"
        section.add(heading(title))
        part, best = _steering_figure(group, writer, named, title)
        section.add(part)
        best_rows.extend({**named, **row} for row in best)
    if best_rows:
        section.add(heading("Best settings"), table(pd.DataFrame(best_rows)))
    return section


def _blank(value: Any) -> bool:
    """A grid key without a value (a limit left unset is stored as missing): left out of titles."""
    return value is None or (isinstance(value, float) and math.isnan(value))


def _steering_figure(group: pd.DataFrame, writer: FigureWriter, named: dict[str, Any], title: str) -> tuple[str, list[dict[str, Any]]]:
    steered = group[group["layer"].notna()]
    unsteered = group[group["layer"].isna()]
    baseline = {c: float(unsteered[c].iloc[0]) for c in ("value", "kl", "perplexity") if c in unsteered and len(unsteered)}
    metric = str(named.get("metric", "metric"))
    if steered.empty:
        return missing(f"Only the unsteered model is in {STEERING_TABLE} for {title}", STEERING_REMEDY), []
    fig = figures.steering_curves(steered, name=title, metric=metric, baseline=baseline)
    saved = writer.save(fig, "steering", *named.values())
    columns = [c for c in ("layer", "alpha", "value", "low", "high", "kl", "perplexity", "p_holm") if c in steered]
    best = steered[steered["best"].fillna(False).astype(bool)][columns] if "best" in steered else steered.iloc[:0][columns]
    if "best" not in steered:
        verdict = f"{STEERING_TABLE} has no best flag, so no setting is marked."
    elif best.empty and not ("p_holm" in steered and steered["p_holm"].notna().any()):
        verdict = "No setting is marked best: these rows were not tested against the unsteered model."
    elif best.empty:
        verdict = f"No setting is marked best: none both stayed within the side-effect limit and improved on the unsteered model {IMPROVES}."
    else:
        row = best.iloc[0]
        verdict = f"Best setting (star): layer {int(row['layer'])}, α = {row['alpha']:g}, {metric} {row['value']:.3f}" + "".join(
            f", {name} {row[name]:.3g}" for name in ("kl", "perplexity") if name in row and pd.notna(row[name])) + (
            f"; it improves on the unsteered model {IMPROVES} (Holm-corrected p = {row['p_holm']:.2g}). "
            if "p_holm" in row and pd.notna(row["p_holm"]) else ". ") + (
            f"Its value is the highest of {len(steered)} settings, so it overstates that setting's effect on new data.")
    caption = (
        f"{metric} against steering strength α, one line per steered layer (bands: 95 % interval where given), "
        f"beside the side effects (KL divergence from the unsteered model's next-token distribution, perplexity); "
        f"dashed: the unsteered model. {verdict}"
    )
    return figure(saved, caption, alt=f"steering curves for {title}"), best.to_dict("records")


# ----- 5. trust evaluations of target models ---------------------------------------------


def evaluation_section(ws: Workspace) -> Section:
    """Per target model: each trust task's metrics with their 95 % intervals, unsteered."""
    section = Section("evaluations", "Trust evaluations")
    problem = table_problem(ws, ws.evaluations, EVALUATE_TABLE, "trust evaluations", ("task", "metric", "value"), EVALUATE_REMEDY)
    if problem:
        section.add(problem)
        return section
    frame = ws.evaluations
    models = frame.groupby("target_model", sort=True, dropna=False) if "target_model" in frame else [(None, frame)]
    for model, group in models:
        shown, left_out = [], []
        for task, rows in group.groupby("task", sort=True):
            rows, _, others = pick_configuration(rows, (dataset_version(rows, ws.dataset_times), most_rows(rows, "target_dtype"), *EVALUATION_CONFIGURATION))
            shown.append(rows)
            left_out += [f"{task}: {others}"] if others else []
        rows = pd.concat(shown)
        columns = [c for c in EVALUATION_COLUMNS if c in rows]
        ids = sorted(rows["target_model_id"].dropna().astype(str).unique()) if "target_model_id" in rows else []
        title = "evaluations" if model is None or pd.isna(model) else f"target model {model}"
        section.add(heading(title + (f" ({', '.join(ids)})" if ids else "")), table(rows[columns].reset_index(drop=True)))
        if left_out:
            section.add(paragraph(f"{EVALUATE_TABLE} also holds {'; '.join(left_out)}; the table shows the configuration above ({SELECT_HINT}).", "missing"))
    section.add(paragraph(
        "The unsteered target model on each task of the sweep (95 % intervals: Wilson for rates, with the rows of one group "
        "counted as fewer examples; for means, Wilson at the number of scores their spread is worth, with Student t); "
        "steered results are in the steering section."
    ))
    return section


# ----- 6. dataset cards --------------------------------------------------------------


def cards_section(ws: Workspace) -> Section:
    """The card of every dataset snapshot in the workspace: label meanings, source, licence, quirks."""
    section = Section("datasets", "Dataset cards")
    if not ws.datasets:
        section.add(missing("No dataset snapshots (datasets/*.json is absent)", "they are written by `trusttrace extract` and `trusttrace run`"))
        return section
    for info in ws.datasets:
        card = info.get("card") or {}
        section.add(heading(str(info.get("name", card.get("name", info["hash"])))))
        items = [(label, esc(card[key])) for key, label in (
            ("dimension", "Dimension"), ("label_1", "Label 1"), ("label_0", "Label 0"), ("source", "Source"),
            ("licence", "Licence"), ("grouping", "Grouping"), ("citation", "Citation"),
        ) if card.get(key)]
        if card.get("url"):
            items.append(("URL", link(str(card["url"]))))
        for key, label in (("quirks", "Quirks"), ("cleanups", "Cleanups")):
            if card.get(key):
                items.append((label, bullet_list(str(q) for q in card[key])))
        items.append(("Loaded from", esc(info.get("source", ""))))
        items.append(("Content hash", span(info["hash"], "mono")))
        section.add(definition_list(items))
    carded = {str(info.get("name")) for info in ws.datasets}
    uncarded = [name for name in ws.dataset_names() if name not in carded]
    if uncarded:
        section.add(missing(f"No card for {', '.join(uncarded)}", "extract each into this workspace (`trusttrace extract` or `run`) to store its card"))
    return section


# ----- 7. provenance and failures ----------------------------------------------------


def provenance_section(ws: Workspace) -> Section:
    """Per checkpoint its revision, commit, weight checksum and duplicate flag; the failed units."""
    section = Section("provenance", "Provenance and failures")
    checkpoints = checkpoint_table(ws)
    if checkpoints.empty:
        section.add(missing("No checkpoint provenance (no manifest.sqlite and no activation sets)", "run `trusttrace run` or `trusttrace extract`"))
    else:
        source = MANIFEST_FILE if len(ws.checkpoints) else "the activation sets' provenance"
        duplicates = int((checkpoints["duplicate"] != "").sum())
        section.add(paragraph(
            f"{len(checkpoints)} checkpoints, from {source}; {duplicates} with weights identical to an earlier checkpoint's."
            + (" Results of a duplicate repeat those of the checkpoint it copies." if duplicates else "")
        ))
        checkpoints["duplicate"] = [span(f"duplicate of {d}", "flag") if d else "" for d in checkpoints["duplicate"]]
        section.add(table(checkpoints, raw_columns=["duplicate"]))
    section.add(heading("Failures"))
    section.add(*_failures(ws))
    return section


def checkpoint_table(ws: Workspace) -> pd.DataFrame:
    """One row per checkpoint: from the manifest when there is one, else from the activation sets."""
    columns = ["model", "checkpoint", "revision", "step", "tokens", "commit", "weights sha256", "duplicate", "status"]
    if len(ws.checkpoints):
        frame = ws.checkpoints.rename(columns={"name": "checkpoint", "commit_sha": "commit", "weights_sha256": "weights sha256", "duplicate_of": "duplicate"})
    elif ws.provenance:
        frame = pd.DataFrame(ws.provenance).rename(columns={"weights_sha256": "weights sha256"})
        frame = with_checkpoint(frame).drop_duplicates(["model", "checkpoint"])
        frame["duplicate"] = _duplicates(frame)
    else:
        return pd.DataFrame(columns=columns)
    frame = frame.reindex(columns=columns).sort_values(["model", "step", "tokens", "checkpoint"], na_position="last")
    frame["step"] = frame["step"].astype("Int64")
    frame["tokens"] = frame["tokens"].astype("Int64")
    for column in ("commit", "weights sha256"):
        frame[column] = frame[column].map(short)
    frame["duplicate"] = frame["duplicate"].map(lambda v: "" if pd.isna(v) else str(v))
    frame = frame.astype({"model": str, "checkpoint": str}).reset_index(drop=True)
    return frame.drop(columns="status") if frame["status"].isna().all() else frame


def _duplicates(frame: pd.DataFrame) -> list[str | None]:
    """For each row, the earlier checkpoint (by step) of the same model with the same weight checksum."""
    frame = frame.reindex(columns=[*frame.columns, *({"step", "weights sha256"} - set(frame.columns))])
    order = frame.assign(_step=frame["step"].fillna(-1)).sort_values(["_step", "checkpoint"])
    copies: dict[tuple[str, str], str] = {}
    for model, rows in order.groupby("model", sort=False):
        digests = [None if pd.isna(digest) else digest for digest in rows["weights sha256"]]
        copies |= {(model, name): first for name, first in earlier_copies(zip(rows["checkpoint"], digests)).items()}
    return [copies.get(key) for key in zip(frame["model"], frame["checkpoint"])]


def _failures(ws: Workspace) -> list[str]:
    if ws.units.empty and ws.checkpoints.empty:
        return [missing("No manifest (manifest.sqlite is absent), so no record of failed units", "run the sweep with `trusttrace run`")]
    parts = []
    if len(ws.units) and "status" in ws.units:
        counts = ws.units.pivot_table(index="stage", columns="status", values="unit", aggfunc="count", fill_value=0).reset_index() \
            if {"stage", "unit"} <= set(ws.units.columns) else ws.units["status"].value_counts().rename_axis("status").reset_index()
        parts.append(table(counts))
    failed_units = ws.units[ws.units["status"] == "failed"] if "status" in ws.units else ws.units.iloc[:0]
    failed_checkpoints = ws.checkpoints[ws.checkpoints["status"] == "failed"] if "status" in ws.checkpoints else ws.checkpoints.iloc[:0]
    if INTERRUPTED in set(ws.units.get("status", ())) | set(ws.checkpoints.get("status", ())):
        parts.append(paragraph(f"'{INTERRUPTED}': started by a run that stopped before finishing it; the next run redoes it."))
    if failed_units.empty and failed_checkpoints.empty:
        parts.append(paragraph("No failed units or checkpoints."))
        return parts
    rows = [
        {"what": f"unit {row.get('unit', '')}", "checkpoint": row.get("checkpoint", ""), "dataset": row.get("dataset", ""),
         "stage": row.get("stage", ""), "error": span(str(row.get("error") or "no error recorded"), "error"), "when": row.get("finished", "")}
        for row in failed_units.to_dict("records")
    ] + [
        {"what": "checkpoint", "checkpoint": row.get("name", ""), "dataset": "", "stage": "load",
         "error": span(str(row.get("error") or "no error recorded"), "error"), "when": ""}
        for row in failed_checkpoints.to_dict("records")
    ]
    parts.append(table(pd.DataFrame(rows), raw_columns=["error"]))
    return parts
