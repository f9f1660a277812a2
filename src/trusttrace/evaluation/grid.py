"""A grid of steering settings (layer × alpha) on one task, and the best setting within a side-effect limit.

The study kept the settings whose perplexity stayed under 6.0 and reported the best of
those; `steering_grid` does the same, and also takes a KL limit. The unsteered model is
evaluated once, as the baseline row (alpha 0, no layer).

Where the study took the highest point estimate, a setting here must improve on the unsteered
model beyond chance: each setting is compared with the unsteered model on the same examples
(a paired one-sided test), and the p-values are Holm-corrected over the grid's settings. With
many settings and a few hundred examples, the highest of the raw values beats the unsteered
one most of the time even when no setting helps.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from scipy.stats import binomtest, wilcoxon
from tqdm.auto import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from trusttrace.data import TrustDataset
from trusttrace.evaluation.results import EvalResult
from trusttrace.errors import SteeringError
from trusttrace.evaluation.runner import evaluate, get_task, resolve_dataset
from trusttrace.steering import Steering, check_alpha

STUDY_MAX_PERPLEXITY = 6.0
SIGNIFICANCE = 0.05  # family-wise error rate of the grid's `improves` (Holm over its settings)
# The name of the `improves` rule, in the settings of a sweep's steering units (as INTERVAL_RULE is).
IMPROVES_RULE = f"paired one-sided, Holm-corrected, level {SIGNIFICANCE}"
# The per-example column of EvalResult.records behind each primary metric ("truth_info" is truth and info).
OUTCOMES = {"accuracy": "correct", "toxic_ratio": "toxic", "mc1": "mc1", "mc2": "mc2", "truth": "truth", "info": "info"}


@dataclass
class GridResult:
    """`table`: one row per setting (grid, layer, alpha, metric, value, low, high, n, interval, kl,
    perplexity, perplexity_unsteered, within_limit, p_value, p_holm, improves), the baseline
    first; `best`: the chosen row as a dict, or None. `grid` names the grid's layers and alphas
    (`grid_name`), the settings its Holm correction and best row are taken over, so rows of two
    grids are never read as one.

    `p_value` is the paired one-sided p-value of the setting against the unsteered model on the
    same examples, `p_holm` the same Holm-corrected over the grid's settings, and `improves`
    means p_holm < SIGNIFICANCE. The best row's value is the highest of several, so it is
    optimistic as an estimate of that setting's effect."""

    table: pd.DataFrame
    best: dict[str, Any] | None
    results: dict[tuple[int, float], EvalResult]
    baseline: EvalResult
    provenance: dict[str, Any] = field(default_factory=dict)  # of the steering vectors

    def combined(self) -> EvalResult:
        """Every setting's evaluation as one result: the tables stacked (the unsteered model's
        first) and the records tagged with their layer and alpha (None and 0 when unsteered)."""
        records = pd.concat(
            [self.baseline.records.assign(layer=None, alpha=0.0)]
            + [result.records.assign(layer=layer, alpha=alpha) for (layer, alpha), result in self.results.items()],
            ignore_index=True,
        )
        table = pd.concat([self.baseline.table] + [result.table for result in self.results.values()], ignore_index=True)
        return EvalResult(table, records, {**self.baseline.settings, "steering": None, "grid": self.provenance})


def grid_name(layers: Sequence[int], alphas: Sequence[float]) -> str:
    """A grid's layers and alphas in words, each sorted once: "layers 4, 8; alpha -2, 2" (so a
    config listing them in another order names the same grid)."""
    shown_layers = ", ".join(str(layer) for layer in sorted({int(layer) for layer in layers}))
    return f"layers {shown_layers}; alpha {', '.join(f'{alpha:g}' for alpha in sorted({float(a) for a in alphas}))}"


def check_settings(
    model: PreTrainedModel, vectors: Mapping[int, torch.Tensor], alphas: Sequence[float], positions: str
) -> dict[int, torch.Tensor]:
    """The vectors keyed by the model's blocks (-1 of 4 is 3, as each result records it), after the
    SteeringError or LayerError a grid setting would meet (a layer the model lacks, a vector of the
    wrong size, an alpha that is not finite), raised before the unsteered baseline spends its time."""
    if not len(alphas):
        raise SteeringError("no alphas: a grid needs at least one steering strength")
    for alpha in alphas:
        check_alpha(alpha)
    every = Steering(dict(vectors), 0.0, positions).on(model)
    with every.apply(model):  # steer checks each vector against its block, then the hooks come off
        pass
    return dict(every.vectors)


def steering_grid(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    vectors: Mapping[int, torch.Tensor],
    alphas: Sequence[float],
    *,
    task: str,
    dataset: TrustDataset | str | Path | None = None,
    positions: str = "last",
    max_perplexity: float | None = STUDY_MAX_PERPLEXITY,
    max_kl: float | None = None,
    provenance: Mapping[str, Any] | None = None,
    data_dir: str | Path | None = None,
    progress: bool = False,
    **options: Any,
) -> GridResult:
    """Evaluate `task` steered by each layer's vector at each alpha, one layer at a time (with a
    progress bar over the settings, the unsteered model's included, when `progress`).

    A setting is within the limit when its steered perplexity is at most `max_perplexity`
    and its KL at most `max_kl` (a None limit is not checked), and `improves` when its primary
    metric is better than the unsteered model's on the same examples beyond chance (see the
    module's docstring). The best setting has the best primary metric (e.g. highest accuracy,
    lowest toxic ratio) among those that do both, ties going to the smaller |alpha| and then
    the lower layer; there is none when no setting does both.
    """
    spec = get_task(task)
    if options.get("side_effect_texts", "builtin") is None and (max_perplexity is not None or max_kl is not None):
        raise SteeringError(
            "side_effect_texts=None measures no side effects, so no setting could be checked against the limit "
            f"({limit_text(max_perplexity, max_kl)}); pass side-effect texts, or None for both limits"
        )
    dataset = resolve_dataset(spec, dataset, data_dir)
    vectors = check_settings(model, vectors, alphas, positions)
    bar = tqdm(total=1 + len(vectors) * len(alphas), desc=f"steering {task}", unit="setting", disable=not progress)
    with bar:
        baseline = evaluate(model, tokenizer, task, dataset, data_dir=data_dir, **options)
        bar.update()
        metric = next((name for name in spec.primary if name in set(baseline.table["metric"])), baseline.table["metric"].iloc[0])
        results: dict[tuple[int, float], EvalResult] = {}
        rows = [_grid_row(None, 0.0, metric, baseline)]
        for layer, vector in vectors.items():
            for alpha in alphas:
                steering = Steering({layer: vector}, float(alpha), positions, provenance)
                result = evaluate(model, tokenizer, task, dataset, steering=steering, data_dir=data_dir, **options)
                results[(int(layer), float(alpha))] = result
                rows.append(_grid_row(int(layer), float(alpha), metric, result))
                bar.update()
    table = pd.DataFrame(rows).astype({"layer": "Int64"})
    table.insert(0, "grid", grid_name(list(vectors), alphas))
    unsteered = table["perplexity_unsteered"].dropna()
    table.loc[0, ["kl", "perplexity"]] = [0.0, unsteered.iloc[0] if len(unsteered) else math.nan]
    table["within_limit"] = [
        (max_perplexity is None or row.perplexity <= max_perplexity) and (max_kl is None or row.kl <= max_kl)
        for row in table.itertuples()
    ]
    unsteered_value = table.loc[0, "value"]
    before = outcomes(baseline, metric)
    p_values = [math.nan] + [paired_p_value(before, outcomes(result, metric), spec.higher_is_better) for result in results.values()]
    table["p_value"] = p_values
    table["p_holm"] = [math.nan, *holm(p_values[1:])]
    table["improves"] = (table["p_holm"] < SIGNIFICANCE).tolist()
    best = _best(table.iloc[1:], spec.higher_is_better)
    if best is None and len(table) > 1:
        within = table.iloc[1:]["within_limit"].any()
        warnings.warn(
            f"no steering setting within the limit improves on the unsteered {metric} of {unsteered_value:.3g} beyond "
            f"chance (paired one-sided test, Holm-corrected over {len(table) - 1} settings, level {SIGNIFICANCE})"
            if within else
            f"no steering setting stays within the limit ({limit_text(max_perplexity, max_kl)}); "
            f"the unsteered perplexity is {table.loc[0, 'perplexity']:.3g}",
            stacklevel=2,
        )
    return GridResult(table, best, results, baseline, dict(provenance or {}))


def limit_text(max_perplexity: float | None, max_kl: float | None) -> str:
    """The side-effect limit in words: "perplexity <= 6, KL <= 0.5", leaving out a limit not set."""
    return ", ".join(f"{name} <= {limit:g}" for name, limit in (("perplexity", max_perplexity), ("KL", max_kl)) if limit is not None)


def _grid_row(layer: int | None, alpha: float, metric: str, result: EvalResult) -> dict[str, Any]:
    values = result.table.set_index("metric")
    main = values.loc[metric]
    side = {name: float(values.loc[name, "value"]) if name in values.index else math.nan for name in ("kl", "perplexity", "perplexity_unsteered")}
    return {"layer": layer, "alpha": alpha, "metric": metric, "value": main["value"], "low": main["low"], "high": main["high"], "n": main["n"],
            "interval": main["interval"], **side}


def outcomes(result: EvalResult, metric: str) -> pd.Series:
    """The per-example outcome behind `metric` (1/0 flags or scores), by example row; NaN where missing."""
    records = result.records.set_index("row") if "row" in result.records else result.records
    if metric == "truth_info" and {"truth", "info"} <= set(records):
        both = records["truth"].astype("Float64") * records["info"].astype("Float64")
        return both.astype(float)
    column = OUTCOMES.get(metric)
    if column is None or column not in records:
        raise ValueError(f"no per-example outcome for metric {metric!r} in the records (columns: {', '.join(records)})")
    return records[column].astype("Float64").astype(float)


def paired_p_value(before: pd.Series, after: pd.Series, higher_is_better: bool) -> float:
    """One-sided p-value that `after` is better than `before` on the examples both scored.

    Flags (0/1): the exact sign test on the examples that changed (McNemar's exact test);
    scores: the Wilcoxon signed-rank test. 1.0 when nothing changed.
    """
    pairs = pd.concat({"before": before, "after": after}, axis=1, join="inner").dropna()
    gain = (pairs["after"] - pairs["before"]) * (1 if higher_is_better else -1)
    changed = gain[gain != 0]
    if changed.empty:
        return 1.0
    values = np.unique(pairs.to_numpy())
    if set(values) <= {0.0, 1.0}:
        return float(binomtest(int((changed > 0).sum()), len(changed), 0.5, alternative="greater").pvalue)
    return float(wilcoxon(changed, alternative="greater").pvalue)


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjustment of `p_values` (NaN stays NaN and does not count)."""
    p = np.asarray(p_values, dtype=float)
    adjusted = np.full_like(p, math.nan)
    known = np.flatnonzero(~np.isnan(p))
    order = known[np.argsort(p[known], kind="stable")]
    running = 0.0
    for rank, index in enumerate(order):
        running = max(running, min(1.0, (len(order) - rank) * p[index]))
        adjusted[index] = running
    return adjusted.tolist()


def _best(table: pd.DataFrame, higher_is_better: bool) -> dict[str, Any] | None:
    allowed = table[table["within_limit"] & table["improves"] & table["value"].notna()]
    if allowed.empty:
        return None
    ranked = allowed.assign(score=-allowed["value"] if higher_is_better else allowed["value"], size=allowed["alpha"].abs())
    return ranked.sort_values(["score", "size", "layer"]).iloc[0].drop(["score", "size"]).to_dict()
