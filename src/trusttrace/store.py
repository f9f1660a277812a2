"""The workspace: activation sets on disk as safetensors shards with provenance sidecars.

Layout of a workspace folder:

    trusttrace-workspace.json           format version (an incompatible workspace is refused)
    .lock                               held by the one process writing (see `ActivationStore.locked`)
    activations/<key>/meta.json         provenance, shard checksums, layers, row count
    activations/<key>/shard-00000.safetensors   tensors "rows" and "layer.<i>" ([rows, hidden],
                                        in the dtype the model ran in)
    datasets/<content hash>.parquet     the statements, labels and groups of each dataset used
    datasets/<content hash>.json        its card
    manifest.sqlite                     the sweep's units of work and checkpoints (trusttrace.manifest)
    probes.parquet, probe_baselines.parquet, mi.parquet, steering.parquet, evaluate.parquet
                                        result tables, one row per layer/setting (see `append_table`)
    steering/<name>.safetensors         steering vectors with their provenance

The key of an activation set is a hash of its provenance identity (model, commit, weights,
dataset hash, position, layers, dtype, ...), so "is it done?" is one `stat`. Every write goes
to a temporary file or folder first and is renamed into place, so a crash leaves either the
whole artefact or nothing; a load verifies checksums (once per set where a caller reads it in
chunks, or a sweep has just verified it), so a damaged file is reported and never used.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save as save_safetensors

from trusttrace.checksums import sha256_file
from trusttrace.data import DatasetCard, TrustDataset
from trusttrace.data.hub import first_line
from trusttrace.errors import CorruptArtefactError, DatasetError, StoreError
from trusttrace.extract import ActivationBatch
from trusttrace.provenance import identity, trusttrace_version

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; one writer at a time is then up to the user
    fcntl = None

# 2: "first"/"mean" read the statement's own tokens (not BOS), units are named by their settings,
# tables carry page checksums and more baselines; a format-1 workspace would be reused as if current.
WORKSPACE_FORMAT = 2
WORKSPACE_FILE = "trusttrace-workspace.json"
LOCK_FILE = ".lock"
ACTIVATIONS_DIR = "activations"
DATASETS_DIR = "datasets"
STEERING_DIR = "steering"
MANIFEST_FILE = "manifest.sqlite"
PROBES_TABLE = "probes.parquet"
BASELINES_TABLE = "probe_baselines.parquet"
MI_TABLE = "mi.parquet"
STEERING_TABLE = "steering.parquet"
EVALUATE_TABLE = "evaluate.parquet"

# A name longer than this keeps its end in a file name (a digest of the whole tells it apart).
FILE_PART_LENGTH = 40

# A shard holds at most this many bytes of states (or one batch), which bounds the memory used
# when an activation set is streamed in (see `ActivationStore.save_batches`): writing a shard
# holds its batches, their concatenation and the serialised bytes, about four times this.
DEFAULT_SHARD_BYTES = 64 * 1024**2


def file_part(name: str) -> str:
    """`name` as part of a file name: itself when it is safe already, else its safe characters
    (the end of them when long) and a digest of the whole name, so different names stay apart."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._-")
    if safe == name and len(name) <= FILE_PART_LENGTH:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:8]
    tail = safe[-FILE_PART_LENGTH:]
    if len(safe) > FILE_PART_LENGTH and "_" in tail:  # begin at a word, not within one
        tail = tail[tail.index("_") + 1 :]
    return f"{tail.lstrip('._-')}-{digest}"


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write `data` to `path` through a temporary file in the same folder and a rename."""
    _atomic_write(Path(path), lambda handle: handle.write(data))


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write `obj` as indented, key-sorted JSON, atomically."""
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n").encode())


def check_store(value: object) -> "ActivationStore":
    """`value` when it is an ActivationStore, else a StoreError saying how to make one (a path is
    not taken as one: opening a folder that is not a workspace would make it one)."""
    if isinstance(value, ActivationStore):
        return value
    raise StoreError(f"expected an ActivationStore, e.g. tt.ActivationStore({str(value)!r}); got a {type(value).__name__}")


def writer_active(root: Path) -> bool | None:
    """Whether a trusttrace process holds the workspace's lock now: a sweep or extraction is
    writing to it (None where locks are not supported: not known)."""
    if fcntl is None:
        return None
    try:
        with open(root / LOCK_FILE) as handle:
            fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError:
        return False
    return False


def foreign_folder(path: Path) -> bool:
    """Whether `path` is a folder that holds other files and is not a workspace: one trusttrace
    would fill with its own folders among somebody's files. Hidden entries (.gitkeep) and a
    volume's lost+found do not count."""
    if not path.is_dir() or (path / WORKSPACE_FILE).exists():
        return False
    return any(not entry.name.startswith(".") and entry.name != "lost+found" for entry in path.iterdir())


def write_table(path: str | os.PathLike, frame: pd.DataFrame) -> None:
    """Write a DataFrame as Parquet with page checksums, atomically."""
    atomic_write_bytes(path, table_bytes(frame))


def table_bytes(frame: pd.DataFrame) -> bytes:
    """A DataFrame as Parquet bytes with page checksums."""
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False, write_page_checksum=True)
    return buffer.getvalue()


def read_table(path: str | os.PathLike, defaults: Mapping[str, Any] | None = None) -> pd.DataFrame:
    """Read a Parquet table, verifying its page checksums; a missing file is an empty table, an
    unreadable or damaged one a CorruptArtefactError.

    `defaults` gives columns an older version did not write the value they were computed with
    (a constant, or a function of the table giving a column), so its rows compare equal to new
    ones of the same setting.
    """
    path = Path(path)
    if not path.exists():
        return pd.DataFrame()
    try:
        table = pd.read_parquet(path, page_checksum_verification=True)
    except Exception as error:  # pyarrow raises several unrelated types for a damaged file
        raise CorruptArtefactError(f"{path}: unreadable Parquet table ({error})") from None
    lacking = {column: value for column, value in (defaults or {}).items() if column not in table}
    return table.assign(**lacking) if lacking and len(table) else table


def append_table(
    path: str | os.PathLike, rows: pd.DataFrame, key_columns: Iterable[str], defaults: Mapping[str, Any] | None = None,
    superseded: Callable[[pd.DataFrame], pd.Series] | None = None,
) -> pd.DataFrame:
    """Add `rows` to the table at `path`, replacing rows with the same key; returns the table.

    `defaults` fills key columns older rows lack (see `read_table`); `superseded` marks older
    rows the new ones replace although their keys differ (a key an older version left empty).
    """
    existing = read_table(path, defaults)
    if superseded is not None and len(existing):
        existing = existing[~superseded(existing)]
    combined = pd.concat([existing, rows], ignore_index=True) if len(existing) else rows.reset_index(drop=True)
    keys = [c for c in key_columns if c in combined.columns]
    combined = combined.drop_duplicates(subset=keys, keep="last").reset_index(drop=True)
    write_table(path, combined)
    return combined


def _atomic_write(path: Path, write: Callable[[Any], Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = tempfile.NamedTemporaryFile("wb", dir=path.parent, prefix=f".{path.name}.", suffix=".tmp", delete=False)
    try:
        with handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(handle.name, 0o644)  # temporary files are private; artefacts are meant to be shared
        os.replace(handle.name, path)
    except BaseException:
        Path(handle.name).unlink(missing_ok=True)
        raise


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def provenance_key(provenance: dict[str, Any]) -> str:
    """The content key of an artefact: a hash of its provenance identity."""
    text = json.dumps(identity(provenance), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:20]


@dataclass(frozen=True)
class ActivationRecord:
    """One stored activation set: its key, folder and provenance (layers, dataset, model...)."""

    key: str
    path: Path
    provenance: dict[str, Any]

    @property
    def layers(self) -> list[int]:
        return list(self.provenance["layers"])

    @property
    def n(self) -> int:
        return int(self.provenance["n"])


def dataset_provenance(provenance: dict[str, Any], dataset: TrustDataset) -> dict[str, Any]:
    """`provenance` with the dataset's name, content hash and size, which make part of a set's key;
    a StoreError where it contradicts them or names no layers."""
    described = {"dataset": dataset.name, "dataset_hash": dataset.content_hash, "n": len(dataset)}
    for key, value in described.items():
        if provenance.get(key, value) != value:
            raise StoreError(f"provenance {key} {provenance[key]!r} does not match the dataset's ({value!r})")
    if not provenance.get("layers"):
        raise StoreError("provenance needs 'layers': the block number of each stored layer, in order")
    return described | provenance


class ActivationStore:
    """Activation sets and dataset snapshots in a workspace folder (created when absent)."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        self._check_workspace()
        self._lock_depth = 0
        self._older: dict[str, ActivationRecord] | None = None

    @contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the workspace's write lock: one writing process at a time, or a StoreError at once.

        Two processes appending to one table would each rewrite it from what they read and lose
        the other's rows. Re-entrant within this store object. On taking the lock, staging files
        a killed process left behind are removed, since no writer can be using them.
        """
        if self._lock_depth:
            self._lock_depth += 1
            try:
                yield
            finally:
                self._lock_depth -= 1
            return
        try:
            handle = open(self.root / LOCK_FILE, "a+")
        except OSError as error:
            raise StoreError(f"{self.root}: cannot lock the workspace ({error.strerror or error}); it must be writable") from None
        with handle:
            if fcntl is not None:
                try:
                    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    raise StoreError(f"{self.root}: another trusttrace process is writing to this workspace; wait for it to end") from None
            self._lock_depth = 1
            try:
                if fcntl is not None:  # without a lock, a leftover may be another writer's work in progress
                    self._remove_leftovers()
                yield
            finally:
                self._lock_depth = 0

    def _remove_leftovers(self) -> None:
        """Delete the staging folders and temporary files of writes that never finished."""
        for folder in (self.root, self.activations_dir, self.datasets_dir, self.root / STEERING_DIR):
            if not folder.is_dir():
                continue
            for path in folder.iterdir():
                if path.name.startswith((".tmp-", ".old-")) and path.is_dir():
                    shutil.rmtree(path, ignore_errors=True)
                elif path.name.startswith(".") and path.name.endswith(".tmp") and path.is_file():
                    path.unlink(missing_ok=True)

    @property
    def activations_dir(self) -> Path:
        return self.root / ACTIVATIONS_DIR

    @property
    def datasets_dir(self) -> Path:
        return self.root / DATASETS_DIR

    def _check_workspace(self) -> None:
        marker = self.root / WORKSPACE_FILE
        if marker.exists():
            try:
                content = json.loads(marker.read_text())
            except (OSError, ValueError) as error:
                raise StoreError(f"{marker}: unreadable workspace marker ({error})") from None
            if not isinstance(content, dict):
                raise StoreError(f"{marker}: unreadable workspace marker (a JSON {type(content).__name__}, not an object)")
            found = content.get("format")
            if found != WORKSPACE_FORMAT:
                raise StoreError(
                    f"{self.root}: workspace format {found!r} was made by an incompatible trusttrace version "
                    f"(this one reads format {WORKSPACE_FORMAT}); use a new workspace"
                )
            return
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            write_json(marker, {"format": WORKSPACE_FORMAT, "created_by": trusttrace_version()})
        except OSError as error:
            raise StoreError(f"{self.root}: cannot create a workspace here ({error.strerror or error})") from None

    # ----- activation sets -------------------------------------------------------------

    def key(self, provenance: dict[str, Any]) -> str:
        return provenance_key(provenance)

    def find(self, provenance: dict[str, Any]) -> ActivationRecord | None:
        """The stored record with the same identity as `provenance`, or None (no checksum read).

        A set stored by a version whose identity rule differed sits under that rule's key: it is
        found by its provenance, so an upgrade reuses it rather than storing a copy.
        """
        key = self.key(provenance)
        found = self.get(key) or self._older_sets().get(key)
        return found if found is not None and (found.path / "meta.json").exists() else None

    def _older_sets(self) -> dict[str, ActivationRecord]:
        """The sets whose folder is not named by the current identity rule, by their current key
        (read once per store object: sets stored since are named by the current rule)."""
        if self._older is None:
            self._older = {}
            for record in self.records():
                if (key := self.key(record.provenance)) != record.key:
                    self._older[key] = record
        return self._older

    def get(self, key: str) -> ActivationRecord | None:
        """The stored record with this key, or None (no checksum read)."""
        folder = self.activations_dir / key
        return self._read_record(folder) if (folder / "meta.json").exists() else None

    def _as_record(self, record: ActivationRecord | str) -> ActivationRecord:
        """A record as given, or the one stored under a key (a StoreError naming it when absent)."""
        if isinstance(record, ActivationRecord):
            return record
        is_key = isinstance(record, str) and record == Path(record).name and not record.startswith(".")
        found = self.get(record) if is_key else None
        if found is None:
            raise StoreError(f"{self.activations_dir}: no activation set with key {record!r} (see records())")
        return found

    def records(self) -> list[ActivationRecord]:
        """Every activation set in the workspace, sorted by model, step, checkpoint and dataset."""
        if not self.activations_dir.exists():
            return []
        found = []
        for folder in sorted(self.activations_dir.iterdir()):
            if folder.name.startswith(".") or not (folder / "meta.json").exists():
                continue
            try:
                found.append(self._read_record(folder))
            except CorruptArtefactError:
                continue
        return sorted(found, key=_record_order)

    def broken(self) -> list[Path]:
        """Folders under activations/ whose sidecar is missing or unreadable."""
        if not self.activations_dir.exists():
            return []
        bad = []
        for folder in sorted(self.activations_dir.iterdir()):
            if folder.name.startswith("."):
                continue
            try:
                self._read_record(folder)
            except CorruptArtefactError:
                bad.append(folder)
        return bad

    def _read_record(self, folder: Path) -> ActivationRecord:
        try:
            meta = json.loads((folder / "meta.json").read_text())
            return ActivationRecord(key=folder.name, path=folder, provenance=meta["provenance"])
        except (OSError, ValueError, KeyError) as error:
            raise CorruptArtefactError(f"{folder / 'meta.json'}: unreadable sidecar ({error})") from None

    def save(self, acts: torch.Tensor, dataset: TrustDataset, provenance: dict[str, Any]) -> ActivationRecord:
        """Store a complete activation tensor `[n_layers, n, hidden]` for `dataset`.

        `provenance` says how the states were made (`extract_to_store` writes the full record);
        its `layers` default to 0..n_layers-1, and the dataset's name, content hash and size are
        filled in, so that two datasets never share a key.
        """
        acts = torch.as_tensor(acts)
        if acts.ndim != 3 or acts.shape[1] != len(dataset):
            raise StoreError(f"activations of shape {tuple(acts.shape)} for the {len(dataset)} rows of {dataset.name}: "
                             f"expected [n_layers, {len(dataset)}, hidden]")
        provenance = {"layers": list(range(acts.shape[0]))} | provenance
        if len(provenance["layers"]) != acts.shape[0]:
            raise StoreError(f"provenance names {len(provenance['layers'])} layers for activations of {acts.shape[0]}")
        step = max(1, DEFAULT_SHARD_BYTES // max(1, acts.shape[0] * acts.shape[2] * acts.element_size()))
        batches = (ActivationBatch(rows=np.arange(start, min(start + step, acts.shape[1])), states=acts[:, start : start + step])
                   for start in range(0, acts.shape[1], step))  # shards of the usual size, as if streamed
        return self.save_batches(batches, dataset, provenance, shard_bytes=DEFAULT_SHARD_BYTES)

    def save_batches(
        self,
        batches: Iterable[ActivationBatch],
        dataset: TrustDataset,
        provenance: dict[str, Any],
        *,
        shard_bytes: int = DEFAULT_SHARD_BYTES,
    ) -> ActivationRecord:
        """Stream batches into shards of at most about `shard_bytes`, then publish the set.

        Nothing is visible under the record's key until every shard and the sidecar are
        written: a crash midway leaves only a hidden temporary folder. `provenance` must name
        the stored `layers`; the dataset's name, content hash and size are filled in (and a
        provenance that contradicts them is an error).
        """
        provenance = dataset_provenance(provenance, dataset)
        with self.locked():
            self.save_dataset(dataset)
            key = self.key(provenance)
            staging = self.activations_dir / f".tmp-{key}-{uuid.uuid4().hex[:8]}"
            staging.mkdir(parents=True)
            try:
                files, seen, truncated = self._write_shards(batches, staging, provenance["layers"], shard_bytes)
                if seen != provenance["n"]:
                    raise StoreError(f"activation set {key}: {seen} rows written for the {provenance['n']} rows of {dataset.name}")
                meta = {"provenance": provenance | {"truncated": truncated}, "files": files, "format": WORKSPACE_FORMAT}
                write_json(staging / "meta.json", meta)
                self._publish(staging, self.activations_dir / key)
            except BaseException:
                shutil.rmtree(staging, ignore_errors=True)
                raise
            return self._read_record(self.activations_dir / key)

    def _write_shards(
        self, batches: Iterable[ActivationBatch], folder: Path, layers: list[int], shard_bytes: int
    ) -> tuple[dict[str, str], int, int | None]:
        """Write the batches as shards; (file checksums, rows seen, truncated statements or None
        when a batch does not say)."""
        files: dict[str, str] = {}
        pending: list[ActivationBatch] = []
        pending_bytes = seen = 0
        truncated: int | None = 0

        def flush() -> None:
            nonlocal pending_bytes
            if not pending:
                return
            tensors = {"rows": torch.from_numpy(np.concatenate([b.rows for b in pending]).astype(np.int64))}
            states = torch.cat([b.states for b in pending], dim=1)
            for j, layer in enumerate(layers):
                tensors[f"layer.{layer}"] = states[j].contiguous()
            data = save_safetensors(tensors)
            name = f"shard-{len(files):05d}.safetensors"
            atomic_write_bytes(folder / name, data)
            files[name] = sha256_bytes(data)
            pending.clear()
            pending_bytes = 0

        for batch in batches:
            if batch.states.shape[0] != len(layers):
                raise StoreError(f"a batch has {batch.states.shape[0]} layers, provenance lists {len(layers)}")
            size = batch.states.numel() * batch.states.element_size()
            if pending and pending_bytes + size > shard_bytes:  # before, not after: a shard stays within the budget
                flush()
            pending.append(batch)
            pending_bytes += size
            seen += len(batch.rows)
            truncated = None if truncated is None or batch.truncated is None else truncated + batch.truncated
        flush()
        return files, seen, truncated

    @staticmethod
    def _publish(staging: Path, final: Path) -> None:
        """Move a finished folder into place, replacing an older (e.g. corrupt) one."""
        if final.exists():
            trash = final.with_name(f".old-{final.name}-{uuid.uuid4().hex[:8]}")
            os.rename(final, trash)
            os.rename(staging, final)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            os.rename(staging, final)

    def load(
        self, record: ActivationRecord | str, layers: Iterable[int] | None = None, *, checksums: bool = True
    ) -> torch.Tensor:
        """The activations `[n_layers, n, hidden]` as float32, in dataset row order, of a record or
        the key of one (as `records()` lists them).

        `layers` picks stored layer indices (default: all, in the stored order). Only those
        tensors are read from each shard, so a chunk of layers costs its own size in memory.
        With `checksums` every shard is hashed first (one streamed read of the set), so a
        damaged shard raises CorruptArtefactError and is never partly used; a caller that has
        just checked the set (see `check`), to read it in several chunks, passes False. A
        missing shard is an error either way.
        """
        record = self._as_record(record)
        stored = record.layers
        wanted = stored if layers is None else list(layers)
        if not wanted:
            raise StoreError(f"activation set {record.key}: no layers asked for (stored: {stored})")
        missing = [layer for layer in wanted if layer not in stored]
        if missing:
            raise StoreError(f"activation set {record.key}: layers {missing} are not stored (stored: {stored})")
        self.check(record, checksums=checksums)
        result: torch.Tensor | None = None
        filled = torch.zeros(record.n, dtype=torch.int64)
        for name in sorted(self._meta(record)["files"]):
            with self._open_shard(record.path / name) as shard:
                rows = shard.get_tensor("rows").clone()  # a copy: no view of the mapped file outlives the block
                if len(rows) and (rows.min() < 0 or rows.max() >= record.n):
                    raise CorruptArtefactError(f"{record.path / name}: rows outside the set's {record.n}")
                filled.index_add_(0, rows, torch.ones_like(rows))
                for j, layer in enumerate(wanted):
                    if result is None:
                        hidden = shard.get_slice(f"layer.{layer}").get_shape()[1]
                        result = torch.empty((len(wanted), record.n, hidden), dtype=torch.float32)
                    result[j, rows] = shard.get_tensor(f"layer.{layer}").float()
        if not (filled == 1).all():  # a shard left out of meta.json, or one listed twice: never uninitialised rows
            row = int(torch.nonzero(filled != 1)[0])
            raise CorruptArtefactError(f"{record.path}: row {row} is stored {int(filled[row])} times in the shards meta.json lists")
        return result

    @staticmethod
    @contextmanager
    def _open_shard(path: Path) -> Iterator[Any]:
        """A shard opened for reading single tensors (memory-mapped); a missing file, bad header
        or absent tensor is a CorruptArtefactError naming the file."""
        if not path.is_file():
            raise CorruptArtefactError(f"{path}: shard is missing")
        try:
            with safe_open(path, framework="pt") as handle:
                yield handle
        except (OSError, SafetensorError, KeyError) as error:
            raise CorruptArtefactError(f"{path}: unreadable shard ({error})") from None

    def layer_bytes(self, record: ActivationRecord) -> int:
        """Bytes one layer of the set takes in memory as float32 (n x hidden x 4), read from a
        shard's header, so that a caller can load the layers in chunks that fit a budget."""
        files = sorted(self._meta(record)["files"])
        if not files:
            raise CorruptArtefactError(f"{record.path}: no shards listed in meta.json")
        with self._open_shard(record.path / files[0]) as shard:
            hidden = shard.get_slice(f"layer.{record.layers[0]}").get_shape()[1]
        return record.n * int(hidden) * 4

    def check(self, record: ActivationRecord, *, checksums: bool = True) -> None:
        """Raise CorruptArtefactError naming the first shard of the record that is missing,
        unreadable or (with `checksums`) does not match its checksum, or when none is listed.

        Shards are hashed in chunks, not parsed, so checking one costs a read, not its size in
        memory. Without `checksums` only their presence is checked (no read).
        """
        files = self._meta(record)["files"]
        if not files:
            raise CorruptArtefactError(f"{record.path}: no shards listed in meta.json")
        for name, digest in files.items():
            path = record.path / name
            try:
                if not path.is_file():
                    raise CorruptArtefactError(f"{path}: shard is missing")
                if checksums and sha256_file(path) != digest:
                    raise CorruptArtefactError(f"{path}: checksum mismatch, the file is damaged")
            except OSError as error:
                raise CorruptArtefactError(f"{path}: unreadable shard ({error})") from None

    def verify(self, record: ActivationRecord, *, checksums: bool = True) -> bool:
        """Whether every shard of the record is present and (with `checksums`) intact; see `check`."""
        try:
            self.check(record, checksums=checksums)
        except CorruptArtefactError:
            return False
        return True

    def _meta(self, record: ActivationRecord) -> dict[str, Any]:
        try:
            return json.loads((record.path / "meta.json").read_text())
        except (OSError, ValueError) as error:
            raise CorruptArtefactError(f"{record.path / 'meta.json'}: unreadable sidecar ({error})") from None

    def remove(self, record: ActivationRecord) -> None:
        """Delete an activation set (e.g. a corrupt one before recomputing it)."""
        trash = record.path.with_name(f".old-{record.key}-{uuid.uuid4().hex[:8]}")
        os.rename(record.path, trash)
        shutil.rmtree(trash, ignore_errors=True)

    # ----- dataset snapshots -----------------------------------------------------------

    def save_dataset(self, dataset: TrustDataset) -> Path:
        """Keep a copy of the dataset's rows and card, keyed by its content hash."""
        path = self.datasets_dir / f"{dataset.content_hash}.parquet"
        if not (path.exists() and path.with_suffix(".json").exists()):
            try:  # rows Parquet cannot hold fail here, before anything is written
                table = table_bytes(dataset.to_frame())
            except (pa.ArrowException, OverflowError) as error:
                raise DatasetError(f"{dataset.name}: its rows cannot be stored as a table ({first_line(error)})") from None
            # The card first: the table's presence is what says the snapshot is complete.
            write_json(path.with_suffix(".json"), {"name": dataset.name, "source": dataset.source, "card": asdict(dataset.card)})
            atomic_write_bytes(path, table)
        return path

    def load_dataset(self, record: ActivationRecord) -> TrustDataset:
        """The dataset an activation set was extracted from, as a TrustDataset."""
        digest = record.provenance["dataset_hash"]
        path = self.datasets_dir / f"{digest}.parquet"
        try:
            frame = pd.read_parquet(path)
            info = json.loads(path.with_suffix(".json").read_text())
        except Exception as error:
            raise CorruptArtefactError(f"{path}: dataset snapshot missing or unreadable ({error})") from None
        card = info["card"]
        card = DatasetCard(**{k: tuple(v) if isinstance(v, list) else v for k, v in card.items()})
        groups = frame["group"].to_numpy() if "group" in frame and frame["group"].notna().all() else None
        dataset = TrustDataset(
            name=record.provenance.get("dataset") or info["name"],  # one snapshot can serve files of other names
            statements=frame["statement"].tolist(),
            labels=frame["label"].to_numpy(dtype=np.int64),
            groups=groups,
            card=card,
            source=info["source"],
        )
        if dataset.content_hash != digest:
            raise CorruptArtefactError(f"{path}: content hash {dataset.content_hash} does not match {digest}")
        return dataset


def _record_order(record: ActivationRecord) -> tuple:
    p = record.provenance
    step = p.get("step")
    return (str(p.get("model")), step if step is not None else -1, str(p.get("checkpoint")), str(p.get("dataset")))
