"""The result of an evaluation: a tidy table of metrics with intervals, and one row per example."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from trusttrace.errors import EvaluationError
from trusttrace.intervals import INTERVAL_RULE, MEAN_INTERVAL_RULE, mean_interval, share_interval

TABLE_COLUMNS = ["task", "metric", "value", "low", "high", "n", "interval"]


@dataclass
class EvalResult:
    """`table`: task, metric, value, low, high, n, interval (the rule of low and high; plus the
    steering setting when steered);
    `records`: one row per example; `settings`: what was run, for provenance."""

    table: pd.DataFrame
    records: pd.DataFrame
    settings: dict[str, Any] = field(default_factory=dict)

    def value(self, metric: str) -> float:
        """The value of one metric of the table."""
        rows = self.table[self.table["metric"] == metric]
        if rows.empty:
            raise EvaluationError(f"no metric {metric!r} in the result; it has {', '.join(self.table['metric'])}")
        return float(rows["value"].iloc[0])


def metric_row(
    task: str, metric: str, value: float, n: int, low: float = math.nan, high: float = math.nan, interval: str | None = None
) -> dict[str, Any]:
    """One row of a result table; `interval` names the rule of `low` and `high` (None without one)."""
    return {"task": task, "metric": metric, "value": float(value), "low": float(low), "high": float(high), "n": int(n),
            "interval": interval}


def rate_row(task: str, metric: str, flags: Sequence[bool] | np.ndarray, groups: Sequence | np.ndarray | None = None) -> dict[str, Any]:
    """The share of true flags with its 95 % Wilson interval (NaN for no examples); flags of one
    of `groups` count as fewer independent examples (see trusttrace.intervals)."""
    flags = np.asarray(flags, dtype=bool)
    n = len(flags)
    if n == 0:
        return metric_row(task, metric, math.nan, 0)
    low, high = share_interval(flags, None if groups is None else np.asarray(groups))
    return metric_row(task, metric, flags.mean(), n, low[0], high[0], INTERVAL_RULE)


def make_table(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """A result table with the standard columns, in order."""
    return pd.DataFrame(rows, columns=TABLE_COLUMNS)


def mean_row(task: str, metric: str, values: Sequence[float] | np.ndarray) -> dict[str, Any]:
    """The mean of scores in [0, 1] (such as MC2) with its 95 % interval, within [0, 1] and honest
    on a few questions (see trusttrace.intervals.mean_interval); NaN for no examples."""
    values = np.asarray(values, dtype=float)
    n = len(values)
    if n == 0:
        return metric_row(task, metric, math.nan, 0)
    low, high = mean_interval(values)
    return metric_row(task, metric, values.mean(), n, low[0], high[0], MEAN_INTERVAL_RULE)
