"""A grid of steering settings (layer × alpha) on one task, and the best setting within a side-effect limit.

The study kept the settings whose perplexity stayed under 6.0 and reported the best of
those; `steering_grid` does the same, and also takes a KL limit. The unsteered model is
evaluated once, as the baseline row (alpha 0, no layer).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd
import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from trusttrace.evaluation.results import EvalResult
from trusttrace.evaluation.runner import evaluate, get_task, resolve_dataset
from trusttrace.steering import Steering

STUDY_MAX_PERPLEXITY = 6.0


@dataclass
class GridResult:
    """`table`: one row per setting (layer, alpha, metric, value, low, high, n, kl, perplexity,
    within_limit, improves), the baseline first; `best`: the chosen row as a dict, or None."""

    table: pd.DataFrame
    best: dict[str, Any] | None
    results: dict[tuple[int, float], EvalResult]
    baseline: EvalResult


def steering_grid(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    vectors: Mapping[int, torch.Tensor],
    alphas: Sequence[float],
    *,
    task: str,
    dataset=None,
    positions: str = "last",
    max_perplexity: float | None = STUDY_MAX_PERPLEXITY,
    max_kl: float | None = None,
    provenance: Mapping[str, Any] | None = None,
    data_dir=None,
    **options: Any,
) -> GridResult:
    """Evaluate `task` steered by each layer's vector at each alpha, one layer at a time.

    A setting is within the limit when its steered perplexity is at most `max_perplexity`
    and its KL at most `max_kl` (a None limit is not checked), and `improves` when its primary
    metric is better than the unsteered model's. The best setting has the best primary metric
    (e.g. highest accuracy, lowest toxic ratio) among those that do both, ties going to the
    smaller |alpha| and then the lower layer; there is none when no setting does both.
    """
    spec = get_task(task)
    dataset = resolve_dataset(spec, dataset, data_dir)
    baseline = evaluate(model, tokenizer, task, dataset, data_dir=data_dir, **options)
    metric = next((name for name in spec.primary if name in set(baseline.table["metric"])), baseline.table["metric"].iloc[0])
    results: dict[tuple[int, float], EvalResult] = {}
    rows = [_grid_row(None, 0.0, metric, baseline)]
    for layer, vector in vectors.items():
        for alpha in alphas:
            steering = Steering({layer: vector}, float(alpha), positions, provenance)
            result = evaluate(model, tokenizer, task, dataset, steering=steering, data_dir=data_dir, **options)
            results[(int(layer), float(alpha))] = result
            rows.append(_grid_row(int(layer), float(alpha), metric, result))
    table = pd.DataFrame(rows).astype({"layer": "Int64"})
    unsteered = table["perplexity_unsteered"].dropna()
    table.loc[0, ["kl", "perplexity"]] = [0.0, unsteered.iloc[0] if len(unsteered) else math.nan]
    table["within_limit"] = [
        (max_perplexity is None or row.perplexity <= max_perplexity) and (max_kl is None or row.kl <= max_kl)
        for row in table.itertuples()
    ]
    unsteered_value = table.loc[0, "value"]
    sign = 1 if spec.higher_is_better else -1
    table["improves"] = [bool(sign * (value - unsteered_value) > 0) for value in table["value"]]
    best = _best(table.iloc[1:], spec.higher_is_better)
    if best is None and len(table) > 1:
        within = table.iloc[1:]["within_limit"].any()
        warnings.warn(
            f"no steering setting within the limit improves on the unsteered {metric} of {unsteered_value:.3g}"
            if within else
            f"no steering setting stays within the limit (perplexity <= {max_perplexity}, KL <= {max_kl}); "
            f"the unsteered perplexity is {table.loc[0, 'perplexity']:.3g}",
            stacklevel=2,
        )
    return GridResult(table, best, results, baseline)


def _grid_row(layer: int | None, alpha: float, metric: str, result: EvalResult) -> dict[str, Any]:
    values = result.table.set_index("metric")
    main = values.loc[metric]
    side = {name: float(values.loc[name, "value"]) if name in values.index else math.nan for name in ("kl", "perplexity", "perplexity_unsteered")}
    return {"layer": layer, "alpha": alpha, "metric": metric, "value": main["value"], "low": main["low"], "high": main["high"], "n": main["n"], **side}


def _best(table: pd.DataFrame, higher_is_better: bool) -> dict[str, Any] | None:
    allowed = table[table["within_limit"] & table["improves"] & table["value"].notna()]
    if allowed.empty:
        return None
    ranked = allowed.assign(score=-allowed["value"] if higher_is_better else allowed["value"], size=allowed["alpha"].abs())
    return ranked.sort_values(["score", "size", "layer"]).iloc[0].drop(["score", "size"]).to_dict()
