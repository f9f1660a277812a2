"""The sweep's manifest: one SQLite file recording every unit of work and every checkpoint.

A unit is (checkpoint × dataset × stage × the settings its result depends on). Each status
change is its own transaction, so a process killed at any moment (SIGKILL included) leaves the
manifest consistent; a unit that was "running" when killed is simply redone. Statuses: running,
done, failed, stale (to redo: its inputs changed) and pruned (an extract unit whose set was
deleted once read, to be extracted again only if a unit needs it).
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Iterable
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trusttrace.errors import CorruptArtefactError, StoreError
from trusttrace.provenance import earlier_copies, now_utc

if TYPE_CHECKING:
    from trusttrace.checkpoints import Checkpoint

SCHEMA = """
CREATE TABLE IF NOT EXISTS units (
    unit TEXT PRIMARY KEY, checkpoint TEXT, dataset TEXT, stage TEXT, status TEXT,
    error TEXT, seconds REAL, artefact TEXT, checksum TEXT, started TEXT, finished TEXT, settings TEXT
);
CREATE TABLE IF NOT EXISTS checkpoints (
    name TEXT, model TEXT, revision TEXT, step INTEGER, tokens INTEGER,
    commit_sha TEXT, weights_sha256 TEXT, duplicate_of TEXT, status TEXT, error TEXT, fingerprint TEXT,
    cached_before TEXT, PRIMARY KEY (model, name)
);
CREATE TABLE IF NOT EXISTS held_snapshots (model TEXT, commit_sha TEXT, PRIMARY KEY (model, commit_sha));
"""


@dataclass(frozen=True)
class UnitRow:
    """One unit's last recorded state."""

    unit: str
    checkpoint: str
    dataset: str
    stage: str
    status: str
    error: str | None
    seconds: float | None
    artefact: str | None
    checksum: str | None


def unit_id(suite: str, checkpoint: str, dataset: str, stage: str, settings: dict[str, Any]) -> str:
    """The name of a unit: suite, checkpoint, dataset and stage, then a digest of the settings
    its result depends on, so that a changed setting (or dataset content) is a new unit, not one
    already done. The suite is part of it, since suites share checkpoint names (step1000)."""
    return f"{suite}:{checkpoint}/{dataset}/{stage}#{settings_digest(settings)}"


def settings_digest(settings: dict[str, Any]) -> str:
    """A short hash of a unit's settings, the same for the same settings in any order."""
    return hashlib.sha256(settings_json(settings).encode()).hexdigest()[:12]


def settings_json(settings: dict[str, Any]) -> str:
    """A unit's settings as key-sorted JSON (values JSON lacks, such as paths, as their text)."""
    return json.dumps(settings, sort_keys=True, default=str)


class Manifest:
    """Read and record unit and checkpoint states in `<workspace>/manifest.sqlite`."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        try:
            with closing(self._connect()) as db:
                db.executescript(SCHEMA)
                # Columns added since the first manifests, which lack them.
                for table, column in (("checkpoints", "fingerprint"), ("units", "settings"), ("checkpoints", "cached_before")):
                    if column not in {row[1] for row in db.execute(f"PRAGMA table_info({table})")}:
                        db.execute(f"ALTER TABLE {table} ADD COLUMN {column} TEXT")
        except sqlite3.OperationalError as error:  # a read-only folder, a full disk: not damage, keep the file
            raise StoreError(f"{self.path}: cannot open the manifest ({error})") from None
        except sqlite3.DatabaseError as error:  # not a database, or a damaged one
            raise CorruptArtefactError(
                f"{self.path}: unreadable manifest ({error}); move it aside and run again "
                "(stored activation sets are found by their content and reused)"
            ) from None

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        return db

    def _write(self, sql: str, params: tuple) -> None:
        with closing(self._connect()) as db:
            db.execute("BEGIN IMMEDIATE")
            db.execute(sql, params)
            db.execute("COMMIT")

    def unit(self, unit: str) -> UnitRow | None:
        with closing(self._connect()) as db:
            row = db.execute(
                "SELECT unit, checkpoint, dataset, stage, status, error, seconds, artefact, checksum FROM units WHERE unit = ?",
                (unit,),
            ).fetchone()
        return UnitRow(*row) if row else None

    def units(self) -> list[UnitRow]:
        with closing(self._connect()) as db:
            rows = db.execute(
                "SELECT unit, checkpoint, dataset, stage, status, error, seconds, artefact, checksum FROM units ORDER BY unit"
            ).fetchall()
        return [UnitRow(*row) for row in rows]

    def start(self, unit: str, checkpoint: str, dataset: str, stage: str, settings: dict[str, Any] | None = None) -> None:
        """Record a unit as running, with the settings its name's digest stands for (as JSON)."""
        self._write(
            "INSERT INTO units (unit, checkpoint, dataset, stage, status, started, settings) VALUES (?, ?, ?, ?, 'running', ?, ?) "
            "ON CONFLICT(unit) DO UPDATE SET status='running', error=NULL, started=excluded.started, settings=excluded.settings",
            (unit, checkpoint, dataset, stage, now_utc(), None if settings is None else settings_json(settings)),
        )

    def settings(self, unit: str) -> dict[str, Any] | None:
        """The settings a unit was recorded with (None for a unit recorded before they were kept)."""
        with closing(self._connect()) as db:
            row = db.execute("SELECT settings FROM units WHERE unit = ?", (unit,)).fetchone()
        return json.loads(row[0]) if row and row[0] else None

    def finish(self, unit: str, seconds: float, artefact: str | None = None, checksum: str | None = None) -> None:
        self._write(
            "UPDATE units SET status='done', error=NULL, seconds=?, artefact=?, checksum=?, finished=? WHERE unit=?",
            (seconds, artefact, checksum, now_utc(), unit),
        )

    def fail(self, unit: str, error: str, seconds: float | None = None) -> None:
        self._write(
            "UPDATE units SET status='failed', error=?, seconds=?, finished=? WHERE unit=?",
            (error, seconds, now_utc(), unit),
        )

    def pruned(self) -> int:
        """How many extract units had their activation set deleted on purpose (keep_activations: false)."""
        with closing(self._connect()) as db:
            return db.execute("SELECT COUNT(*) FROM units WHERE status='pruned'").fetchone()[0]

    def prune(self, unit: str) -> None:
        """Mark a done extract unit whose activation set was deleted on purpose (keep_activations: false)."""
        self._write("UPDATE units SET status='pruned' WHERE unit=? AND status='done'", (unit,))

    def mark_stale(self, stage: str) -> int:
        """Mark every done unit of `stage` stale (its table was lost), so the sweep redoes it; returns how many."""
        with closing(self._connect()) as db:
            return db.execute("UPDATE units SET status='stale' WHERE stage=? AND status='done'", (stage,)).rowcount

    def record_checkpoint(
        self, name: str, model: str, revision: str | None, step: int | None, tokens: int | None,
        *, status: str, commit: str | None = None, weights_sha256: str | None = None, error: str | None = None,
        fingerprint: str | None = None,
    ) -> None:
        """Record a checkpoint's state; known commit, checksum and fingerprint are kept when a later call lacks them."""
        self._write(
            "INSERT INTO checkpoints (name, model, revision, step, tokens, commit_sha, weights_sha256, status, error, fingerprint) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(model, name) DO UPDATE SET status=excluded.status, "
            "error=excluded.error, revision=COALESCE(excluded.revision, revision), step=COALESCE(excluded.step, step), "
            "tokens=COALESCE(excluded.tokens, tokens), commit_sha=COALESCE(excluded.commit_sha, commit_sha), "
            "weights_sha256=COALESCE(excluded.weights_sha256, weights_sha256), "
            "fingerprint=COALESCE(excluded.fingerprint, fingerprint)",
            (name, model, revision, step, tokens, commit, weights_sha256, status, error, fingerprint),
        )

    def cached_before(self, model: str, name: str) -> bool | None:
        """Whether this checkpoint's files were on disk before the sweep first fetched it (None: not
        recorded), so that only what the sweep downloaded is deleted, even after a resume."""
        with closing(self._connect()) as db:
            row = db.execute("SELECT cached_before FROM checkpoints WHERE model=? AND name=?", (model, name)).fetchone()
        return None if row is None or row[0] is None else row[0] == "1"

    def fetched_revisions(self, model: str) -> set[str]:
        """The revisions of `model` a sweep of this workspace fetched (not on disk before it)."""
        with closing(self._connect()) as db:
            rows = db.execute(
                "SELECT revision FROM checkpoints WHERE model=? AND cached_before='0' AND revision IS NOT NULL", (model,)
            ).fetchall()
        return {revision for (revision,) in rows}

    def hold_snapshots(self, model: str, commits: Iterable[str]) -> None:
        """Record snapshot commits of `model` the cache held that no sweep here fetched (the user's),
        seen before a checkpoint's first fetch: never deleted, whatever refs later name them."""
        with closing(self._connect()) as db:
            db.execute("BEGIN IMMEDIATE")
            db.executemany("INSERT OR IGNORE INTO held_snapshots (model, commit_sha) VALUES (?, ?)", [(model, c) for c in commits])
            db.execute("COMMIT")

    def held_snapshots(self, model: str) -> set[str]:
        """The snapshot commits of `model` recorded by `hold_snapshots`."""
        with closing(self._connect()) as db:
            rows = db.execute("SELECT commit_sha FROM held_snapshots WHERE model=?", (model,)).fetchall()
        return {commit for (commit,) in rows}

    def record_cached_before(self, name: str, model: str, revision: str | None, cached: bool) -> None:
        """Record, before the first fetch, whether a checkpoint was on disk already (kept once recorded)."""
        self._write(
            "INSERT INTO checkpoints (name, model, revision, status, cached_before) VALUES (?, ?, ?, 'fetching', ?) "
            "ON CONFLICT(model, name) DO UPDATE SET cached_before=COALESCE(cached_before, excluded.cached_before)",
            (name, model, revision, "1" if cached else "0"),
        )

    def fingerprint(self, model: str, name: str) -> str | None:
        """The files' fingerprint recorded when this local checkpoint was last loaded, if any."""
        with closing(self._connect()) as db:
            row = db.execute("SELECT fingerprint FROM checkpoints WHERE model=? AND name=?", (model, name)).fetchone()
        return row[0] if row else None

    def set_fingerprint(self, model: str, name: str, fingerprint: str) -> None:
        """Replace a checkpoint's recorded fingerprint (one of an older form, whose files are unchanged)."""
        self._write("UPDATE checkpoints SET fingerprint=? WHERE model=? AND name=?", (fingerprint, model, name))

    def mark_checkpoint_stale(self, suite: str, checkpoint: str) -> int:
        """Mark every done unit of `suite`'s `checkpoint` stale (its weights changed), so the sweep
        redoes it; returns how many. Other suites' checkpoints of the same name are left alone."""
        prefix = f"{suite}:{checkpoint}/"
        with closing(self._connect()) as db:
            return db.execute(
                "UPDATE units SET status='stale' WHERE substr(unit, 1, length(?)) = ? AND status='done'", (prefix, prefix)
            ).rowcount

    def fill_steps(self, model: str, checkpoints: Iterable[Checkpoint]) -> None:
        """Give `model`'s recorded checkpoints their step and tokens where a row lacks them (rows
        first written before the checkpoint loaded, by 0.7.0 and earlier), so that they are
        ordered by training step, not by name."""
        with closing(self._connect()) as db:
            db.execute("BEGIN IMMEDIATE")
            db.executemany(
                "UPDATE checkpoints SET step=COALESCE(step, ?), tokens=COALESCE(tokens, ?) WHERE model=? AND name=?",
                [(c.step, c.tokens, model, c.name) for c in checkpoints],
            )
            db.execute("COMMIT")

    def mark_duplicates(self, model: str) -> dict[str, str]:
        """Flag `model`'s checkpoints whose weights equal an earlier one's; returns {name: duplicate_of}."""
        with closing(self._connect()) as db:
            rows = db.execute(
                "SELECT name, weights_sha256 FROM checkpoints WHERE model = ? AND weights_sha256 IS NOT NULL "
                "ORDER BY COALESCE(step, -1), name",
                (model,),
            ).fetchall()
        duplicates = earlier_copies(rows)
        for name, _ in rows:
            self._write("UPDATE checkpoints SET duplicate_of=? WHERE model=? AND name=?", (duplicates.get(name), model, name))
        return duplicates

    def checkpoints(self) -> list[dict]:
        with closing(self._connect()) as db:
            db.row_factory = sqlite3.Row
            rows = db.execute("SELECT * FROM checkpoints ORDER BY COALESCE(step, -1), name").fetchall()
        return [dict(row) for row in rows]
