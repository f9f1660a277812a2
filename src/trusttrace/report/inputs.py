"""What a report reads from a workspace: its tables, manifest, dataset cards and activation sets.

Everything is optional: a table that does not exist is an empty frame, so each section of the
report can say what is missing instead of failing. A file that exists but cannot be read is
an error (CorruptArtefactError), never silently skipped.
"""

from __future__ import annotations

import json
import sqlite3
from contextlib import closing
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from trusttrace.errors import CorruptArtefactError, StoreError
from trusttrace.store import (
    BASELINES_TABLE, DATASETS_DIR, EVALUATE_TABLE, MANIFEST_FILE, MI_TABLE, PROBES_TABLE, STEERING_TABLE, WORKSPACE_FILE,
    ActivationStore, read_table, writer_active,
)

# The status shown for a unit left "running" (a checkpoint left "fetching") by a run that stopped.
INTERRUPTED = "interrupted"


@dataclass
class Workspace:
    """The report's inputs, each an empty frame or list when the workspace lacks it."""

    root: Path
    probes: pd.DataFrame
    baselines: pd.DataFrame
    mi: pd.DataFrame
    steering: pd.DataFrame
    evaluations: pd.DataFrame
    units: pd.DataFrame
    checkpoints: pd.DataFrame
    datasets: list[dict[str, Any]] = field(default_factory=list)
    provenance: list[dict[str, Any]] = field(default_factory=list)
    # Result files a `--select` left without rows, with the reason (see report/selection.py).
    unmatched: dict[str, str] = field(default_factory=dict)

    @property
    def empty(self) -> bool:
        """True when there is nothing to report: no results, no manifest, no activations."""
        frames = (self.probes, self.mi, self.steering, self.evaluations, self.units, self.checkpoints)
        return all(frame.empty for frame in frames) and not self.provenance

    def models(self) -> list[str]:
        return _union(self._frames(), "model", [p.get("model") for p in self.provenance])

    def dataset_names(self) -> list[str]:
        names = [d.get("name") for d in self.datasets] + [p.get("dataset") for p in self.provenance]
        return _union(self._frames(), "dataset", names)

    def _frames(self) -> list[pd.DataFrame]:
        return [self.probes, self.mi, self.steering, self.checkpoints]

    @cached_property
    def dataset_times(self) -> dict[str, str]:
        """When each dataset version (content hash) was last used: the latest time a unit that
        names it finished, an activation set of it was stored, or a steering or evaluation row of
        it was made (ISO-8601 UTC, so they compare as text)."""
        times: list[tuple[Any, Any]] = [(p.get("dataset_hash"), p.get("created")) for p in self.provenance]
        for frame in (self.steering, self.evaluations):
            if {"dataset_hash", "created"} <= set(frame.columns):
                times += list(zip(frame["dataset_hash"], frame["created"]))
        if {"settings", "finished"} <= set(self.units.columns):
            times += [(_settings(text).get("dataset_hash"), finished) for text, finished in zip(self.units["settings"], self.units["finished"])]
        latest: dict[str, str] = {}
        for version, time in times:
            if isinstance(version, str) and isinstance(time, str):
                latest[version] = max(time, latest.get(version, time))
        return latest


def _settings(text: Any) -> dict[str, Any]:
    """A unit's settings JSON as a dict (empty when absent or not an object)."""
    try:
        value = json.loads(text) if isinstance(text, str) else None
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def read_workspace(root: str | Path) -> Workspace:
    """Read every report input that exists in the workspace folder `root`."""
    root = Path(root)
    if not root.is_dir():
        raise StoreError(f"{root}: {'a file, not a workspace folder' if root.exists() else 'no such workspace folder'}")
    units, checkpoints = read_manifest(root / MANIFEST_FILE)
    if writer_active(root) is False:  # work a stopped run left open: the next run redoes it
        units = units.replace({"status": {"running": INTERRUPTED}}) if "status" in units else units
        checkpoints = checkpoints.replace({"status": {"fetching": INTERRUPTED}}) if "status" in checkpoints else checkpoints
    return Workspace(
        root=root,
        probes=read_table(root / PROBES_TABLE),
        baselines=read_table(root / BASELINES_TABLE),
        mi=read_table(root / MI_TABLE),
        steering=read_table(root / STEERING_TABLE),
        evaluations=read_table(root / EVALUATE_TABLE),
        units=units,
        checkpoints=checkpoints,
        datasets=read_dataset_files(root / DATASETS_DIR),
        provenance=read_provenance(root),
    )


def read_manifest(path: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The manifest's `units` and `checkpoints` tables (empty frames when absent), read-only.

    With no write-ahead log beside it (no sweep writing, none killed mid-write) the file is
    opened as immutable, which leaves no -wal/-shm files behind; otherwise as a plain reader.
    """
    if not path.exists():
        return pd.DataFrame(), pd.DataFrame()
    settled = not path.with_name(path.name + "-wal").exists()
    uri = f"{path.resolve().as_uri()}?mode=ro" + ("&immutable=1" if settled else "")
    try:
        with closing(sqlite3.connect(uri, uri=True)) as db:
            tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            return tuple(  # type: ignore[return-value]
                pd.read_sql_query(f"SELECT * FROM {name}", db) if name in tables else pd.DataFrame()
                for name in ("units", "checkpoints")
            )
    except (sqlite3.Error, pd.errors.DatabaseError) as error:
        raise CorruptArtefactError(f"{path}: unreadable manifest ({error})") from None


def read_dataset_files(folder: Path) -> list[dict[str, Any]]:
    """The `datasets/<hash>.json` snapshots (name, source, card), each with its `hash`, by name."""
    if not folder.is_dir():
        return []
    found = []
    for path in sorted(folder.glob("*.json")):
        try:
            info = json.loads(path.read_text())
        except (OSError, ValueError) as error:
            raise CorruptArtefactError(f"{path}: unreadable dataset card ({error})") from None
        if not isinstance(info, dict):
            raise CorruptArtefactError(f"{path}: a dataset card must be a JSON object")
        found.append({**info, "hash": path.stem})
    return sorted(found, key=lambda info: (str(info.get("name")), info["hash"]))


def read_provenance(root: Path) -> list[dict[str, Any]]:
    """The provenance of every stored activation set (none when the folder is not a workspace).

    A folder without the workspace marker is not opened as a store, which would create one.
    """
    if not (root / WORKSPACE_FILE).exists():
        return []
    return [record.provenance for record in ActivationStore(root).records()]


def missing_columns(frame: pd.DataFrame, required: tuple[str, ...]) -> list[str]:
    """The `required` columns that `frame` lacks."""
    return [column for column in required if column not in frame.columns]


def checkpoint_order(frame: pd.DataFrame) -> list[str]:
    """The distinct checkpoints of `frame`, in training order (by step, then tokens, then name)."""
    rows = frame.reindex(columns=["checkpoint", "step", "tokens"]).drop_duplicates("checkpoint")
    rows = rows.assign(checkpoint=rows["checkpoint"].astype(str))
    return rows.sort_values(["step", "tokens", "checkpoint"], na_position="last")["checkpoint"].tolist()


def with_checkpoint(frame: pd.DataFrame) -> pd.DataFrame:
    """`frame` with a string `checkpoint` column (from revision or step when absent) and a `model`."""
    frame = frame.copy()
    if "checkpoint" not in frame:
        source = next((c for c in ("revision", "step", "tokens") if c in frame), None)
        frame["checkpoint"] = frame[source].astype(str) if source else "checkpoint"
    frame["checkpoint"] = frame["checkpoint"].astype(str)
    if "model" not in frame:
        frame["model"] = "model"
    frame["model"] = frame["model"].fillna("unknown model").astype(str)
    return frame


def short(value: Any, length: int = 12) -> str:
    """A checksum or commit cut to `length` characters ('' for a missing value)."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return ""
    return str(value)[:length]


def _union(frames: list[pd.DataFrame], column: str, extra: list[Any]) -> list[str]:
    values = set(str(v) for v in extra if v is not None)
    for frame in frames:
        if column in frame.columns:
            values.update(str(v) for v in frame[column].dropna().unique())
    return sorted(values)
