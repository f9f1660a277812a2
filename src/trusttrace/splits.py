"""Train/test splits shared by probes, mutual information and steering.

Three kinds: `paper` (the reference study: first 80 % of rows train, last 20 % test, file
order), `random` (stratified, seeded) and `grouped` (rows that share a group id never sit on
both sides, stratified as far as the groups allow). With `folds > 1` the non-paper kinds give
k-fold cross-validation; with `folds == 1` one split holding out about `test_size` of the rows.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Sequence

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold, train_test_split

from trusttrace.errors import ProbeError, TrustTraceError

SPLITS = ("grouped", "random", "paper")

# The reference study trains on the first int(n * PAPER_TRAIN_FRACTION) rows of the CSV.
PAPER_TRAIN_FRACTION = 0.8

Split = tuple[np.ndarray, np.ndarray]
# A one-fold grouped split holds out whole group folds: their share may miss `test_size` by this
# much, and is made of at most this many folds.
SHARE_TOLERANCE = 0.01
MAX_SHARE_FOLDS = 100


def check_labels(labels: Sequence, n: int | None = None) -> np.ndarray:
    """Labels as an int64 array of 0/1, of length `n` when given; anything else is a ProbeError."""
    values = np.asarray(labels)
    if values.ndim != 1:
        raise ProbeError(f"labels must be one-dimensional, got shape {values.shape}")
    if n is not None and len(values) != n:
        raise ProbeError(f"{len(values)} labels for {n} rows of activations")
    bad = ~np.isin(values, (0, 1))
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        value = values[row].item() if isinstance(values[row], np.generic) else values[row]
        raise ProbeError(f"label {value!r} at row {row} is not 0 or 1")
    return values.astype(np.int64)


def row_indices(rows: Sequence | np.ndarray, n: int, name: str = "rows", error: type[TrustTraceError] = ProbeError) -> np.ndarray:
    """`rows` of `n` as an int64 array of positions: row numbers 0..n-1 in the order given, or a
    boolean mask of length n (its true rows).

    Anything else is an `error` naming `name`: a mask cast to integers would silently pick rows
    0 and 1, fractional numbers would be truncated, and negative ones would wrap around.
    """
    values = np.asarray(rows)
    if values.ndim != 1:
        raise error(f"{name} must be a list of row numbers or a boolean mask, got shape {values.shape}")
    if values.dtype == bool:
        if len(values) != n:
            raise error(f"{name}: a boolean mask of {len(values)} entries for {n} rows")
        return np.flatnonzero(values)
    if values.size == 0:
        return np.zeros(0, dtype=np.int64)
    if not np.issubdtype(values.dtype, np.integer):
        raise error(f"{name} must be row numbers (integers) or a boolean mask, got {values.dtype} values such as {values[0]!r}")
    outside = values[(values < 0) | (values >= n)]
    if outside.size:
        raise error(f"{name}: row {int(outside[0])} is outside the {n} rows (0..{n - 1})")
    return values.astype(np.int64)


def resolve_split(split: str, groups: Sequence | None) -> str:
    """The split kind actually used: `grouped` without groups is a stratified `random` split."""
    if split not in SPLITS:
        raise ProbeError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    return "random" if split == "grouped" and groups is None else split


def paper_split(n: int) -> Split:
    """The reference split: the first 80 % of rows (rounded down) train, the rest test."""
    n_train = int(n * PAPER_TRAIN_FRACTION)
    return np.arange(n_train), np.arange(n_train, n)


def check_split_options(folds: int, test_size: float) -> None:
    """A ProbeError for fewer than one fold or a test share outside (0, 1)."""
    if folds < 1:
        raise ProbeError(f"folds must be at least 1, got {folds}")
    if not 0 < test_size < 1:
        raise ProbeError(f"test_size must be between 0 and 1, got {test_size}")


def make_splits(
    labels: Sequence,
    *,
    split: str = "grouped",
    groups: Sequence | None = None,
    folds: int = 5,
    test_size: float = 0.2,
    seed: int = 0,
) -> list[Split]:
    """(train_idx, test_idx) pairs of row positions, sorted, for the requested kind of split.

    `paper` ignores `folds`, `test_size` and `seed` (it is one fixed split). Every training
    side holds both classes, or a ProbeError says which fold does not.
    """
    y = check_labels(labels)
    kind = resolve_split(split, groups)
    check_split_options(folds, test_size)
    checked = None if groups is None else check_groups(groups, len(y))  # whatever the kind: intervals count them
    if kind == "paper":
        splits = [paper_split(len(y))]
    elif kind == "random":
        splits = _random_splits(y, folds, test_size, seed)
    else:
        _check_group_count(checked, folds)
        splits = _grouped_splits(tuple(y.tolist()), tuple(checked.astype(str).tolist()), folds, test_size, seed)
    for fold, (train, test) in enumerate(splits):
        if len(test) == 0:
            raise ProbeError(f"fold {fold} of the {kind} split has no test rows ({len(y)} rows)")
        if len(np.unique(y[train])) < 2:
            raise ProbeError(f"fold {fold} of the {kind} split trains on one class only (label {y[train][0]})")
    return [(np.sort(train), np.sort(test)) for train, test in splits]


def check_groups(groups: Sequence, n: int) -> np.ndarray:
    """One group id per row, none missing (None or NaN would silently form a group of their own), else a ProbeError."""
    values = np.asarray(groups)
    if values.shape != (n,):
        raise ProbeError(f"groups of shape {values.shape} for {n} rows")
    missing = pd.isna(values)
    if missing.any():
        row = int(np.flatnonzero(missing)[0])
        raise ProbeError(f"group of row {row} is missing ({values[row]!r}); give every row a group, or pass groups=None")
    return values


def _check_group_count(groups: np.ndarray, folds: int) -> None:
    n_groups = len(np.unique(groups.astype(str)))
    needed = max(folds, 2)
    if n_groups < needed:
        raise ProbeError(f"a grouped split with {folds} fold(s) needs at least {needed} groups, found {n_groups}")


def _random_splits(y: np.ndarray, folds: int, test_size: float, seed: int) -> list[Split]:
    rows = np.arange(len(y))
    try:
        if folds == 1:
            train, test = train_test_split(rows, test_size=test_size, stratify=y, random_state=seed)
            return [(train, test)]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # a rare class smaller than `folds`
            return list(StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed).split(rows, y))
    except ValueError as error:
        raise ProbeError(f"cannot make a random split of {len(y)} rows into {folds} fold(s): {error}") from None


@functools.lru_cache(maxsize=32)
def _grouped_splits(y: tuple[int, ...], groups: tuple[str, ...], folds: int, test_size: float, seed: int) -> list[Split]:
    """Stratified group k-fold; with one fold, the first `held` of `n_splits` folds held out
    together (`held_out_folds`).

    Cached (callers get sorted copies): scikit-learn's group assignment is a Python loop over
    groups, and a sweep asks for the same dataset's splits at every checkpoint.
    """
    held, n_splits = (0, min(folds, len(set(groups)))) if folds > 1 else held_out_folds(test_size, len(set(groups)))
    splitter = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    rows = np.arange(len(y))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            splits = list(splitter.split(rows, np.asarray(y), np.asarray(groups)))
    except ValueError as error:
        raise ProbeError(f"cannot make a grouped split of {len(y)} rows into {n_splits} fold(s): {error}") from None
    if folds > 1:
        return splits
    test = np.concatenate([test for _, test in splits[:held]])
    return [(np.setdiff1d(rows, test), test)]


def held_out_rule(test_size: float, n_groups: int) -> str | None:
    """How a one-fold grouped split holds out `test_size`, where that differs from 0.7.0 and
    earlier (one of round(1/test_size) folds, whatever its share): part of the names of the
    sweep units it makes, so their results are not mixed with the former rule's. None where the
    rule is unchanged (0.2, 0.25, 0.5...), or there are too few groups to split (make_splits says so)."""
    if n_groups < 2:
        return None
    former = (1, _fold_count(test_size, n_groups))
    held = held_out_folds(test_size, n_groups)
    return None if held == former else f"{held[0]} of {held[1]} group folds"


def held_out_folds(test_size: float, n_groups: int) -> tuple[int, int]:
    """(held, n_splits): a one-fold grouped split holds out `held` of `n_splits` group folds, so
    about `test_size` of the rows. One of round(1/test_size) folds where that is within
    SHARE_TOLERANCE of `test_size` (0.2: one of five), else the fewest folds that are (0.4: two of
    five); never more folds than groups, the nearest share they allow where none is that close."""
    n_splits = _fold_count(test_size, n_groups)
    if abs(1 / n_splits - test_size) <= SHARE_TOLERANCE:
        return 1, n_splits
    shares = [(min(max(1, round(test_size * n)), n - 1), n) for n in range(2, min(n_groups, MAX_SHARE_FOLDS) + 1)]
    close = [share for share in shares if abs(share[0] / share[1] - test_size) <= SHARE_TOLERANCE]
    return close[0] if close else min(shares, key=lambda share: abs(share[0] / share[1] - test_size))


def _fold_count(test_size: float, n_groups: int) -> int:
    """round(1/test_size) folds, at least two and at most one per group (0.7.0 held out one of them)."""
    return min(max(2, round(1 / test_size)), n_groups)
