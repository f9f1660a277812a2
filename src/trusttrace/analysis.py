"""Probes and mutual information over the activation sets of a workspace, as tidy Parquet tables.

`probe_record` and `mi_record` compute one stored activation set and write its rows to the
workspace's `probes.parquet` (+ `probe_baselines.parquet`) or `mi.parquet` (the sweep calls
these). `run_probes` and `run_mi` do it for every set not yet in the table, writing after each
set, so an interrupted run resumes where it stopped and a second run adds nothing. A missing or
corrupt activation set (or dataset snapshot) is reported in the returned problems and skipped,
never used. Rows are keyed by the set (its provenance), the layer and the setting; writes are
atomic.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Any, TypeVar

import pandas as pd
from tqdm.auto import tqdm

from trusttrace.baselines import BASELINES
from trusttrace.data import TrustDataset
from trusttrace.devices import default_device
from trusttrace.errors import LayerError, ProbeError, StoreError
from trusttrace.info import ESTIMATORS, check_max_rows, plane_layers, plane_reference
from trusttrace.intervals import INTERVAL_RULE
from trusttrace.probes import check_options, fit_probes, solver
from trusttrace.provenance import trusttrace_version
from trusttrace.splits import check_split_options, make_splits, resolve_split
from trusttrace.store import (
    BASELINES_TABLE, MI_TABLE, PROBES_TABLE, ActivationRecord, ActivationStore, append_table, check_store, read_table,
)

T = TypeVar("T")


# Provenance copied onto every row, so a table can be read without the workspace.
PROVENANCE_COLUMNS = [
    "model", "revision", "commit", "weights_sha256", "checkpoint", "step", "tokens", "dataset", "dataset_hash",
    "position", "dtype", "tokenizer", "template",
]
SET_KEYS = ["activation_key", "model", "revision", "checkpoint", "step", "tokens", "dataset", "dataset_hash"]
PROBE_KEYS = SET_KEYS + ["layer", "method", "solver", "split", "seed", "folds", "test_size", "C"]
BASELINE_KEYS = ["dataset", "dataset_hash", "baseline", "split", "seed", "folds", "test_size"]
MI_KEYS = SET_KEYS + ["layer", "estimator", "x_layer", "split", "seed", "folds", "test_size", "mi_max_rows"]


def legacy_solver(table: pd.DataFrame) -> pd.Series:
    """The `solver` of probe rows written before rows named theirs (0.7.0 and earlier): the one
    `backend="auto"` (the sweep's, and the CLI's default) chooses for their method and split."""
    return pd.Series([solver(m, "auto", s) for m, s in zip(table["method"], table["split"])], index=table.index, dtype=object)


PROBE_LEGACY_SETTINGS = {"solver": legacy_solver}
# What MI rows of former versions were computed with: one 80/20 split (0.2.0 and earlier), every
# training row (mi_max_rows 0, before 0.5.0).
MI_LEGACY_SETTINGS = {"folds": 1, "test_size": 0.2, "mi_max_rows": 0}
# Probes and the information plane take a set a chunk of layers at a time, each chunk holding at
# most this many bytes of float32 states (peak memory is about 4.5 times that): Amber's toxigen
# set, 3.4 GB, would otherwise need 15 GB.
LAYER_CHUNK_BYTES = 2**30


def holding_lock(function: Callable[..., T]) -> Callable[..., T]:
    """Run a function whose first argument is a store while holding that workspace's write lock."""

    @wraps(function)
    def locked(store: ActivationStore, *args: Any, **kwargs: Any) -> T:
        with store.locked():
            return function(store, *args, **kwargs)

    return locked


@holding_lock
def probe_record(
    store: ActivationStore,
    record: ActivationRecord,
    *,
    split: str = "grouped",
    method: str = "logreg",
    folds: int = 5,
    test_size: float = 0.2,
    seed: int = 0,
    C: float = 1.0,
    backend: str = "auto",
    device: str | None = None,
    dataset: TrustDataset | None = None,
    checksums: bool = True,
) -> pd.DataFrame:
    """Fit probes on one activation set and write its rows (replacing older ones of the same
    setting) to probes.parquet, and its baselines to probe_baselines.parquet; returns the rows.

    `grouped` falls back to random where the dataset has no groups. A missing or corrupt set
    raises CorruptArtefactError (a StoreError). `device` defaults to CUDA when available.
    Baselines depend on the dataset and split only, so they are fitted once per dataset and
    setting (at its first checkpoint) and kept. The set's shards are hashed once before the
    first chunk is read; `checksums=False` skips that for a caller that has just verified or
    written the set (a sweep), since hashing Amber's sets takes seconds per checkpoint.
    """
    dataset = dataset if dataset is not None else store.load_dataset(record)
    dataset_columns = {key: record.provenance.get(key) for key in ("dataset", "dataset_hash")}
    baseline_setting = dataset_columns | split_setting(resolve_split(split, dataset.groups), folds, test_size, seed) | {"interval": INTERVAL_RULE}
    baselines_done = _has_baselines(read_table(store.root / BASELINES_TABLE), baseline_setting)
    tables, baselines = [], None
    store.check(record, checksums=checksums)  # once: each chunk then reads only its own layers
    for chunk in layer_chunks(record.layers, store.layer_bytes(record)):  # each layer's probe is its own
        results = fit_probes(
            store.load(record, layers=chunk, checksums=False), dataset.labels, split=split, groups=dataset.groups, folds=folds,
            test_size=test_size, seed=seed, method=method, C=C, backend=backend, device=_device(device),
            statements=None if baselines_done or baselines is not None else dataset.statements, layers=chunk,
        )
        tables.append(results.table)
        baselines = results.baselines if baselines is None else baselines
    rows = _with_provenance(pd.concat(tables, ignore_index=True).assign(test_size=test_size, C=C), record)
    append_table(store.root / PROBES_TABLE, rows, PROBE_KEYS, PROBE_LEGACY_SETTINGS)
    if not baselines_done:
        baselines = baselines.assign(test_size=test_size, **dataset_columns, trusttrace_version=trusttrace_version())
        append_table(store.root / BASELINES_TABLE, baselines, BASELINE_KEYS)
    return rows


def layer_chunks(layers: list[int], layer_bytes: int) -> list[list[int]]:
    """`layers` in runs whose float32 states take at most LAYER_CHUNK_BYTES (one layer at least):
    fitting or standardising holds several times its states, so a set is read a chunk at a time."""
    size = max(1, LAYER_CHUNK_BYTES // max(1, layer_bytes))
    return [layers[start : start + size] for start in range(0, len(layers), size)]


@holding_lock
def mi_record(
    store: ActivationStore,
    record: ActivationRecord,
    *,
    estimator: str = "nhsic",
    x_layer: int = 0,
    split: str = "grouped",
    folds: int = 5,
    test_size: float = 0.2,
    seed: int = 0,
    max_rows: int | None = None,
    device: str | None = None,
    dataset: TrustDataset | None = None,
    checksums: bool = True,
) -> pd.DataFrame:
    """The information plane of one activation set, written to mi.parquet; returns its rows.

    I(X;T) and I(T;Y) are computed on the training rows of the first fold of the probes'
    split with these `folds`, `test_size` and `seed` (`paper`: the first 80 % of rows, as the
    reference did), or on a seeded subsample of at most `max_rows` of them, recorded in the
    rows' `mi_max_rows` (0 for every row; steering rows have a `max_rows` of their own). X's
    side of the plane is computed once; the set is then read a chunk of layers at a time, and
    `checksums` is as for `probe_record`. A set that does not store `x_layer` raises LayerError.
    """
    if x_layer not in record.layers:
        raise LayerError(f"x_layer {x_layer} is not stored (stored layers: {record.layers})")
    dataset = dataset if dataset is not None else store.load_dataset(record)
    kind = resolve_split(split, dataset.groups)
    train = make_splits(dataset.labels, split=kind, groups=dataset.groups, folds=folds, test_size=test_size, seed=seed)[0][0]
    store.check(record, checksums=checksums)
    reference = plane_reference(
        store.load(record, layers=[x_layer], checksums=False)[0], dataset.labels, estimator=estimator,
        x_layer=x_layer, rows=train, device=_device(device), max_rows=max_rows, seed=seed,
    )
    plane = pd.concat(
        [
            plane_layers(reference, store.load(record, layers=chunk, checksums=False), chunk)
            for chunk in layer_chunks(record.layers, store.layer_bytes(record))
        ],
        ignore_index=True,
    )
    setting = split_setting(kind, folds, test_size, seed) | {"mi_max_rows": max_rows or 0}
    rows = _with_provenance(plane.assign(x_layer=x_layer, **setting), record)
    append_table(store.root / MI_TABLE, rows, MI_KEYS, MI_LEGACY_SETTINGS)
    return rows


def run_probes(
    store: ActivationStore,
    *,
    split: str = "grouped",
    method: str = "logreg",
    folds: int = 5,
    test_size: float = 0.2,
    seed: int = 0,
    C: float = 1.0,
    backend: str = "auto",
    device: str | None = None,
    progress: bool = True,
) -> tuple[pd.DataFrame, list[str]]:
    """`probe_record` on every activation set not yet in probes.parquet; returns (table, problems).

    The options are checked before any set is touched, so bad input fails at once.
    """
    check_store(store)
    check_options(method, backend, C)
    check_split_options(folds, test_size)
    resolve_split(split, None)

    def setting(kind: str) -> dict[str, Any]:
        fitted_by = {"solver": solver(method, backend, kind)}
        return {"method": method, "C": C, "interval": INTERVAL_RULE} | fitted_by | split_setting(kind, folds, test_size, seed)

    def compute(record: ActivationRecord, dataset: TrustDataset) -> None:
        probe_record(
            store, record, split=split, method=method, folds=folds, test_size=test_size, seed=seed, C=C,
            backend=backend, device=device, dataset=dataset,
        )

    with store.locked():  # once for the whole workspace: a busy one is one error, not one per set
        return _run_all(store, store.root / PROBES_TABLE, split, setting, compute, progress, "probe", PROBE_LEGACY_SETTINGS)


def run_mi(
    store: ActivationStore,
    *,
    estimator: str = "nhsic",
    x_layer: int = 0,
    split: str = "grouped",
    folds: int = 5,
    test_size: float = 0.2,
    seed: int = 0,
    max_rows: int | None = None,
    device: str | None = None,
    progress: bool = True,
) -> tuple[pd.DataFrame, list[str]]:
    """`mi_record` on every activation set not yet in mi.parquet; returns (table, problems).

    A set that does not store `x_layer` is reported as a problem and skipped; an `x_layer` that no
    set stores is a LayerError. The options are checked before any set is touched.
    """
    check_store(store)
    if estimator not in ESTIMATORS:
        raise ProbeError(f"unknown estimator {estimator!r}; choose one of {', '.join(ESTIMATORS)}")
    check_split_options(folds, test_size)
    resolve_split(split, None)
    check_max_rows(max_rows)
    stored = sorted({layer for record in store.records() for layer in record.layers})
    if stored and x_layer not in stored:
        raise LayerError(f"x_layer {x_layer} is stored in no activation set (stored layers: {stored})")

    def setting(kind: str) -> dict[str, Any]:
        return {"estimator": estimator, "x_layer": x_layer, "mi_max_rows": max_rows or 0} | split_setting(kind, folds, test_size, seed)

    def compute(record: ActivationRecord, dataset: TrustDataset) -> None:
        mi_record(
            store, record, estimator=estimator, x_layer=x_layer, split=split, folds=folds, test_size=test_size,
            seed=seed, max_rows=max_rows, device=device, dataset=dataset,
        )

    with store.locked():  # once for the whole workspace: a busy one is one error, not one per set
        return _run_all(store, store.root / MI_TABLE, split, setting, compute, progress, "mi", MI_LEGACY_SETTINGS)


def _run_all(
    store: ActivationStore,
    path: Path,
    split: str,
    setting: Callable[[str], dict[str, Any]],
    compute: Callable[[ActivationRecord, TrustDataset], None],
    progress: bool,
    label: str,
    defaults: dict[str, Any] | None = None,
) -> tuple[pd.DataFrame, list[str]]:
    """`compute` each record that has no rows of its setting in the table (older rows read with
    `defaults`, see `read_table`); (table, problems).

    A set the options do not fit (too few rows or groups for the folds) is a problem of that set;
    when they fit no set at all, the options are at fault: a ProbeError.
    """
    problems = [f"{folder}: unreadable activation set, skipped" for folder in store.broken()]
    done = read_table(path, defaults)
    records = store.records()
    unfit: list[ProbeError] = []
    for record in tqdm(records, desc=label, unit="set", disable=not progress):
        try:
            dataset = store.load_dataset(record)
            if not _has_rows(done, record.key, setting(resolve_split(split, dataset.groups))):
                compute(record, dataset)
        except (StoreError, LayerError, ProbeError) as error:  # this set only: too small to split, unreadable...
            if isinstance(error, ProbeError):
                unfit.append(error)
            problems.append(f"activation set {record.key} ({_describe(record)}): {error}")
    if records and len(unfit) == len(records):
        raise ProbeError(f"{unfit[0]} (the options fit none of the {len(records)} activation set(s))")
    return read_table(path, defaults), problems


def split_setting(kind: str, folds: int, test_size: float, seed: int) -> dict[str, Any]:
    """The split columns a probe or baseline row is keyed by (`paper` is one fold whatever `folds` says)."""
    return {"split": kind, "seed": seed, "folds": 1 if kind == "paper" else folds, "test_size": test_size}


def _has_rows(table: pd.DataFrame, key: str | None, setting: dict[str, Any]) -> bool:
    """Whether `table` has rows of this activation set (any set when `key` is None) and setting."""
    mask = _matching(table, key, setting)
    return mask is not None and bool(mask.any())


def _matching(table: pd.DataFrame, key: str | None, setting: dict[str, Any]) -> pd.Series | None:
    """The rows of this activation set (any when `key` is None) and setting; None when the table
    is empty or lacks a column of the setting."""
    if table.empty or any(column not in table for column in setting):
        return None
    mask = pd.Series(True, index=table.index) if key is None else table["activation_key"] == key
    for column, value in setting.items():
        mask &= table[column] == value
    return mask


def _has_baselines(table: pd.DataFrame, setting: dict[str, Any]) -> bool:
    """Whether `table` holds every baseline of `BASELINES` for this dataset and split setting."""
    mask = _matching(table, None, setting)
    return mask is not None and set(BASELINES) <= set(table.loc[mask, "baseline"])


def _with_provenance(frame: pd.DataFrame, record: ActivationRecord) -> pd.DataFrame:
    meta = (
        {"activation_key": record.key}
        | {column: record.provenance.get(column) for column in PROVENANCE_COLUMNS}
        | {"trusttrace_version": trusttrace_version()}  # the version that computed these rows
    )
    columns = pd.DataFrame({column: [value] * len(frame) for column, value in meta.items()}, index=frame.index)
    return pd.concat([columns, frame], axis=1)


def _describe(record: ActivationRecord) -> str:
    """"model checkpoint dataset" of a set (the checkpoint left out where it repeats the model's path)."""
    p = record.provenance
    names = [p.get("model"), p.get("checkpoint") if p.get("checkpoint") != p.get("model") else None, p.get("dataset")]
    return " ".join(str(name) for name in names if name is not None)


def _device(device: str | None) -> str:
    """The given device, else the default one (MPS runs as the CPU: see trusttrace.devices)."""
    return device or default_device()
