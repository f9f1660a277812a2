"""`--select KEY=VALUE`: restrict the report to the result rows of one configuration.

A workspace may hold several configurations of a stage (folds 5 and 10, two values of C, two
seeds); without a selection the report shows the defaults and names the rest. A selection keeps
only the rows whose column KEY equals VALUE, in every result table that has that column.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Mapping

import numpy as np
import pandas as pd

from trusttrace.errors import ReportError
from trusttrace.report.inputs import Workspace
from trusttrace.store import BASELINES_TABLE, EVALUATE_TABLE, MI_TABLE, PROBES_TABLE, STEERING_TABLE

# The result tables a selection filters: workspace attribute → file name.
SELECTABLE = {
    "probes": PROBES_TABLE, "baselines": BASELINES_TABLE, "mi": MI_TABLE,
    "steering": STEERING_TABLE, "evaluations": EVALUATE_TABLE,
}


def parse_selection(items: list[str]) -> dict[str, str]:
    """`["folds=10", "C=0.5"]` as `{"folds": "10", "C": "0.5"}`; a malformed or repeated key is refused."""
    chosen: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        key, value = key.strip(), value.strip()
        if not sep or not key or not value:
            raise ReportError(f"select {item!r}: expected KEY=VALUE, e.g. folds=10")
        if key in chosen:
            raise ReportError(f"select {key!r} is given twice ({chosen[key]!r} and {value!r})")
        chosen[key] = value
    return chosen


def matches(column: pd.Series, value: str) -> pd.Series:
    """Rows whose value is `value`: equal as text, or as a number when both are numbers (10 = 10.0)."""
    same = column.astype(str) == value
    if pd.api.types.is_numeric_dtype(column):
        try:
            number = float(value)
        except ValueError:
            return same
        return same | np.isclose(column.astype(float), number, rtol=1e-9, atol=0.0)
    return same


def select_rows(ws: Workspace, selection: Mapping[str, str]) -> Workspace:
    """The workspace with each result table cut to the rows matching every KEY=VALUE it has a column for.

    A key that no result table has, or a value that no row holds, is refused, naming what there
    is. A table that has the key's column but no matching row is emptied, and the report's
    section says which selection left it empty (`Workspace.unmatched`).
    """
    if not selection:
        return ws
    tables = {name: getattr(ws, name) for name in SELECTABLE}
    unmatched: dict[str, str] = {}
    for key, value in selection.items():
        holding = {name: frame for name, frame in tables.items() if key in frame.columns}
        if not holding:
            known = sorted({c for frame in tables.values() for c in frame.columns})
            raise ReportError(f"select {key}={value}: no result table has a column {key!r} (columns: {', '.join(known) or 'none'})")
        if not any(matches(frame[key], value).any() for frame in holding.values()):
            values = sorted({str(v) for frame in holding.values() for v in frame[key].dropna().unique()})
            raise ReportError(f"select {key}={value}: no result row has {key} {value} (values there: {', '.join(values)})")
        for name, frame in holding.items():
            kept = frame[matches(frame[key], value)]
            if kept.empty and not frame.empty:
                values = ", ".join(sorted({str(v) for v in frame[key].dropna().unique()}))
                unmatched.setdefault(SELECTABLE[name], f"no row matches {key}={value} ({key} there: {values})")
            tables[name] = kept
    return replace(ws, **tables, unmatched={**ws.unmatched, **unmatched})
