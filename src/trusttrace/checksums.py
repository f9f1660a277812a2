"""The sha256 of files, and weight files' sha256 remembered between runs.

A 7B checkpoint's sha256 is the slowest part of loading it from local disk: about 10 s on a
host that hashes at 1 GB/s, against about 2 s for transformers to put the weights on a GPU.
A local checkpoint is loaded many times with unchanged files (one `trusttrace extract` per
dataset, a steering evaluation per strength, a rerun after a crash), so `remembered_sha256`
keeps each large file's sha256 in a small sqlite database, keyed by the file's path and
identity (device, inode, size, modification and change time in ns). A later read of a file
with the same identity takes the sha256 from there instead of hashing the file again.

On a local file system an ordinary write moves the file's change time, which tools that keep
modification times (`cp -p`, `rsync -t`, `touch -d`) cannot set back; the write identity can
miss is one in the same clock tick as the identity recorded, so, as git does for its index, a
file changed less than `RACY_NS` before its hash started is not remembered. Not covered: file
systems without a real change time (some FUSE object-store mounts, vfat, some SMB shares),
writes through a shared memory map (recorded in the times only at the first write to a page),
and a clock set back on a file system with coarse times; there, set `TRUSTTRACE_CACHE=off`.
The file is opened before its identity is read, which makes an NFS client fetch the server's.

The database is `checksums.sqlite` in $TRUSTTRACE_CACHE (default: $XDG_CACHE_HOME/trusttrace,
else ~/.cache/trusttrace); `TRUSTTRACE_CACHE=off` turns it off. Files under `MIN_BYTES` are
always hashed. A database that cannot be opened, written or locked within `LOCK_TIMEOUT_S` is
passed over with a warning, and files are hashed as without it.

The weights checksum names the weights; it does not verify them: a bit flipped on disk that
leaves the identity alone goes unseen, as it would in a Hub blob's name. Activation sets,
whose checksums are verified on load, are always read (`sha256_file`).
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import threading
import time
import warnings
from contextlib import closing
from pathlib import Path
from typing import BinaryIO

CACHE_ENV = "TRUSTTRACE_CACHE"
CACHE_FILE = "checksums.sqlite"
# Smaller files are always hashed: 64 MiB take about 40 ms, too little to be worth a row (a
# checkpoint's config and tokenizer files, and tiny test models, never reach the database).
MIN_BYTES = 1 << 26
# A file changed this recently before its hash started is not remembered (2 s: the coarsest
# common file-time resolution, FAT's, with room for a coarse kernel clock).
RACY_NS = 2_000_000_000
# How long to wait for another process's lock on the database before hashing without it.
LOCK_TIMEOUT_S = 1.0

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS checksums (path TEXT PRIMARY KEY, device INTEGER, inode INTEGER, "
    "size INTEGER, mtime_ns INTEGER, ctime_ns INTEGER, sha256 TEXT NOT NULL)"
)
_WARNED: set[str] = set()
_WARNED_LOCK = threading.Lock()


def sha256_file(path: Path) -> str:
    """The sha256 of a file's bytes (see `sha256_of`)."""
    with open(path, "rb", buffering=0) as handle:
        return sha256_of(handle)


def sha256_of(handle: BinaryIO) -> str:
    """The sha256 of an open file's bytes from where it stands, read in chunks into one reused
    buffer: hashing costs a read, not the file's size in memory, nor a fresh allocation per chunk."""
    digest = hashlib.sha256()
    buffer = bytearray(1 << 24)
    view = memoryview(buffer)
    while size := handle.readinto(buffer):
        digest.update(view[:size])
    return digest.hexdigest()


def remembered_sha256(path: Path) -> str:
    """The sha256 of the file at `path`: the one remembered for its identity, else hashed now
    (and remembered when the file is large and was not changed just before or while hashed)."""
    path = Path(path).resolve()
    with open(path, "rb", buffering=0) as handle:
        before = os.fstat(handle.fileno())
        database = cache_file() if before.st_size >= MIN_BYTES else None
        if database is None:
            return sha256_of(handle)
        identity = file_identity(before)
        found = _lookup(database, path, identity)
        if found is not None:
            return found
        started = time.time_ns()
        digest = sha256_of(handle)
        after = os.fstat(handle.fileno())
    if file_identity(after) == identity and max(after.st_mtime_ns, after.st_ctime_ns) < started - RACY_NS:
        _remember(database, path, identity, digest)
    return digest


def cache_file() -> Path | None:
    """Where checksums are remembered (None when $TRUSTTRACE_CACHE is "off", or when it is unset
    and the user has no home folder to hold it)."""
    setting = os.environ.get(CACHE_ENV, "").strip()
    if setting.lower() == "off":
        return None
    try:
        if setting:
            folder = Path(setting).expanduser()
        else:
            folder = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "trusttrace"
    except RuntimeError as error:  # no home folder (a container's user without a passwd entry)
        _warn_once(setting or "~/.cache/trusttrace", error)
        return None
    return folder / CACHE_FILE


def file_identity(stat: os.stat_result) -> tuple[int, int, int, int, int]:
    """What changes when a file is written anew or in place: device, inode, size, mtime, ctime (ns)."""
    return (stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns)


def _lookup(database: Path, path: Path, identity: tuple[int, ...]) -> str | None:
    """The sha256 remembered for `path` with this identity, if any."""
    try:
        if not database.exists():
            return None
        with closing(_connect(database)) as connection:
            row = connection.execute(
                "SELECT sha256 FROM checksums WHERE path = ? AND device = ? AND inode = ? AND size = ? "
                "AND mtime_ns = ? AND ctime_ns = ?",
                (str(path), *identity),
            ).fetchone()
    except (sqlite3.Error, OSError) as error:
        _warn_once(database, error)
        return None
    return None if row is None else row[0]


def _remember(database: Path, path: Path, identity: tuple[int, ...], digest: str) -> None:
    """Record `path`'s sha256 for this identity, replacing what was remembered for the path."""
    try:
        database.parent.mkdir(parents=True, exist_ok=True)
        with closing(_connect(database)) as connection, connection:
            connection.execute(
                "INSERT OR REPLACE INTO checksums VALUES (?, ?, ?, ?, ?, ?, ?)", (str(path), *identity, digest)
            )
    except (sqlite3.Error, OSError) as error:
        _warn_once(database, error)


def _connect(database: Path) -> sqlite3.Connection:
    """A connection to the database, its table created if new (waiting for another's lock at most
    `LOCK_TIMEOUT_S`: hashing is better than a load stalled on a stuck lock)."""
    connection = sqlite3.connect(database, timeout=LOCK_TIMEOUT_S)
    connection.execute(_SCHEMA)
    return connection


def _warn_once(where: Path | str, error: Exception) -> None:
    """Say once per place that weight checksums cannot be remembered there, and why."""
    with _WARNED_LOCK:
        if str(where) in _WARNED:
            return
        _WARNED.add(str(where))
    warnings.warn(
        f"{where}: cannot remember weight checksums there ({error}); large weight files are hashed "
        f"on every load (set {CACHE_ENV} to a writable folder, or to off)",
        stacklevel=2,
    )
