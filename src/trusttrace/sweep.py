"""`trusttrace run`: a resumable sweep of the stages over checkpoints × datasets.

For each selected checkpoint (in training order) the sweep fetches its files (the next
checkpoint downloads in the background meanwhile), loads it once, extracts every dataset,
then probes and estimates MI on what it stored. Each unit (checkpoint × dataset × stage) is a
function of its inputs and the workspace: the manifest records it, and a re-run skips units
that are done and whose artefacts verify, so a killed sweep resumes where it stopped and ends
with the same tables. A checkpoint that cannot be fetched or loaded is recorded as failed and
the sweep goes on.
"""

from __future__ import annotations

import gc
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from trusttrace.analysis import mi_record, probe_record
from trusttrace.checkpoints import Checkpoint, CheckpointSuite, checkpoint_suite
from trusttrace.config import SweepConfig
from trusttrace.data import TrustDataset, load_dataset
from trusttrace.devices import check_device
from trusttrace.errors import CorruptArtefactError, StoreError, TrustTraceError
from trusttrace.extract_stage import extract_to_store
from trusttrace.intervals import INTERVAL_RULE
from trusttrace.manifest import Manifest, unit_id
from trusttrace.models import checkpoint_fingerprint, fingerprint_matches, load_model
from trusttrace.prefetch import Fetcher, Prefetcher, delete_fetched, hub_fetch, in_hub_cache, snapshot_refs
from trusttrace.splits import held_out_rule, resolve_split
from trusttrace.steering_stage import run_steering_stages
from trusttrace.store import (
    BASELINES_TABLE, EVALUATE_TABLE, MANIFEST_FILE, MI_TABLE, PROBES_TABLE, STEERING_TABLE, ActivationRecord, ActivationStore,
    read_table, write_table,
)

RECORD_STAGES = ("probes", "mi")
# The stage whose units write each result table (the baselines are written with the probes).
TABLE_STAGES = {
    PROBES_TABLE: "probes", BASELINES_TABLE: "probes", MI_TABLE: "mi", STEERING_TABLE: "steering", EVALUATE_TABLE: "evaluate",
}


@dataclass
class SweepSummary:
    """What a sweep did: units run, skipped because done, and failures with their errors."""

    ran: int = 0
    skipped: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    repaired: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    duplicates: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.failed


class Sweep:
    """One configured sweep over a workspace (see the module docstring)."""

    def __init__(self, config: SweepConfig, *, fetcher: Fetcher = hub_fetch, progress: bool = True):
        check_device(config.device, "key 'device':")  # here, not at --check: a GPU config can be checked anywhere
        self.config = config
        self.suite: CheckpointSuite = checkpoint_suite(config.suite)
        self.checkpoints: list[Checkpoint] = self.suite.select(config.checkpoints)
        self.datasets: list[TrustDataset] = [load_dataset(name, data_dir=config.data_dir) for name in config.datasets]
        self.store = ActivationStore(config.workspace)
        self.manifest = Manifest(config.workspace / MANIFEST_FILE)
        self.fetcher = fetcher
        self.progress = progress
        self.summary = SweepSummary()
        self._kept: list[tuple[Checkpoint, Path]] = []
        self._verified: set[str] = set()
        self._cached_before: dict[str, bool] = {}  # checkpoint name -> on disk before this sweep fetched it

    # ----- units ---------------------------------------------------------------------

    def settings(self, stage: str, dataset: TrustDataset) -> dict[str, Any]:
        """What a unit of `stage` on `dataset` depends on besides its checkpoint; part of its name."""
        config = self.config
        layers = config.layers if config.layers == "all" else sorted(set(config.layers))
        extract = {"dataset_hash": dataset.content_hash, "position": config.position, "layers": layers, "dtype": config.dtype}
        if stage == "extract":
            return extract
        if stage == "probes":
            return extract | config.probes.model_dump() | {
                "split": config.probe_split(), "seed": config.probe_seed(), "interval": INTERVAL_RULE,
            } | self._held_out(dataset)
        if stage == "mi":  # on the training rows of the probes' first fold
            probes = config.probes
            return extract | config.mi.model_dump(exclude_none=True) | {  # max_rows named only when set
                "split": config.probe_split(), "seed": config.probe_seed(), "folds": probes.folds, "test_size": probes.test_size,
            } | self._held_out(dataset)
        raise ValueError(f"no settings for stage {stage!r}")

    def _held_out(self, dataset: TrustDataset) -> dict[str, str]:
        """The one-fold grouped split's rule, where it differs from 0.7.0's (see `held_out_rule`)."""
        probes = self.config.probes
        if probes.folds != 1 or resolve_split(self.config.probe_split(), dataset.groups) != "grouped":
            return {}
        rule = held_out_rule(probes.test_size, len(np.unique(np.asarray(dataset.groups).astype(str))))
        return {} if rule is None else {"held_out": rule}

    def unit(self, checkpoint: str, dataset: str, stage: str, settings: dict[str, Any]) -> str:
        return unit_id(self.suite.name, checkpoint, dataset, stage, settings)

    def run_unit(
        self, checkpoint: str, dataset: str, stage: str, settings: dict[str, Any], work: Callable[[], tuple[str | None, str | None]]
    ) -> bool:
        """Run one unit under the manifest: running → done (artefact, checksum) or failed (error)."""
        unit = self.unit(checkpoint, dataset, stage, settings)
        self.manifest.start(unit, checkpoint, dataset, stage, settings)
        start = time.perf_counter()
        try:
            artefact, checksum = work()
        except (TrustTraceError, RuntimeError, ValueError, OSError) as error:
            message = f"{type(error).__name__}: {error}"
            self.manifest.fail(unit, message, time.perf_counter() - start)
            self.summary.failed.append((unit, message))
            return False
        self.manifest.finish(unit, time.perf_counter() - start, artefact, checksum)
        self.summary.ran += 1
        return True

    def extract_unit(self, checkpoint: Checkpoint, dataset: TrustDataset) -> str:
        """The name of this checkpoint's extract unit on `dataset`, with this config's settings."""
        return self.unit(checkpoint.name, dataset.name, "extract", self.settings("extract", dataset))

    def extract_record(self, checkpoint: Checkpoint, dataset: TrustDataset, *, checksums: bool = True) -> ActivationRecord | None:
        """The stored activation set of a done extract unit, if its files verify.

        Checksums are read once per sweep: a set verified (or written) in this run is trusted.
        Without `checksums` only the files' presence is checked, for a set no unit left to run reads.
        """
        row = self.manifest.unit(self.extract_unit(checkpoint, dataset))
        if row is None or row.status != "done" or row.artefact is None:
            return None
        record = self.store.get(row.artefact)
        if record is None:
            return None
        if record.key not in self._verified:
            if not self.store.verify(record, checksums=checksums):
                self.summary.repaired.append(f"{record.path}: a shard is missing or fails its checksum; extracting it again")
                return None
            if checksums:
                self._verified.add(record.key)
        return record

    def needs_activations(self, checkpoint: Checkpoint, dataset: TrustDataset) -> bool:
        """Whether a unit left to run reads this checkpoint's activations of `dataset`: a probe or MI
        unit not done, or the steering stage, whose source it is.

        Only such a set has its checksums read: reading back every set of a finished 360-checkpoint
        sweep on each run would be terabytes of work to skip nothing.
        """
        for stage in (s for s in RECORD_STAGES if s in self.config.stages):
            if not self.stage_done(checkpoint.name, dataset.name, stage, self.settings(stage, dataset)):
                return True
        steering = self.config.steering
        return "steering" in self.config.stages and steering is not None and steering.source == checkpoint.name

    def stage_done(self, checkpoint: str, dataset: str, stage: str, settings: dict[str, Any]) -> bool:
        """Whether the manifest records this unit, with these settings, as done."""
        row = self.manifest.unit(self.unit(checkpoint, dataset, stage, settings))
        return row is not None and row.status == "done"

    # ----- checkpoints ---------------------------------------------------------------

    def _pending(self, checkpoint: Checkpoint) -> list[TrustDataset]:
        """Datasets of this checkpoint whose activations must be (re)extracted: a set deleted on
        purpose (keep_activations: false) only when a unit left to run reads it."""
        pending = []
        for dataset in self.datasets:
            needed = self.needs_activations(checkpoint, dataset)
            row = self.manifest.unit(self.extract_unit(checkpoint, dataset))
            if not needed and row is not None and row.status == "pruned":
                continue
            if self.extract_record(checkpoint, dataset, checksums=needed) is None:
                pending.append(dataset)
        return pending

    def _prune(self, checkpoint: Checkpoint) -> None:
        """Without keep_activations, delete this checkpoint's sets that no unit left to run reads."""
        if self.config.keep_activations:
            return
        for dataset in self.datasets:
            unit = self.extract_unit(checkpoint, dataset)
            row = self.manifest.unit(unit)
            if row is None or row.status not in ("done", "pruned") or self.needs_activations(checkpoint, dataset):
                continue
            self.manifest.prune(unit)  # first: a set a kill left behind is removed by the next run
            record = self.store.get(row.artefact) if row.artefact else None
            if record is not None:
                self.store.remove(record)

    def _extract_checkpoint(self, checkpoint: Checkpoint, prefetcher: Prefetcher, later: list[Checkpoint]) -> None:
        if "extract" not in self.config.stages:
            return
        pending = self._pending(checkpoint)
        self.summary.skipped += len(self.datasets) - len(pending)
        if not pending:
            return
        try:
            self._note_cached(checkpoint)
            folder = prefetcher.get(checkpoint)
            upcoming = next((c for c in later if self._pending(c)), None)
            if upcoming is not None:
                self._note_cached(upcoming)
                prefetcher.schedule(upcoming)
            model, tokenizer = self._load(checkpoint, folder)
        except Exception as error:  # a failed download or load must not stop the sweep
            message = f"{type(error).__name__}: {error}"
            self.manifest.record_checkpoint(
                checkpoint.name, self.suite.model_id, checkpoint.revision, checkpoint.step, checkpoint.tokens,
                status="failed", error=message,
            )
            for dataset in pending:
                unit = self.extract_unit(checkpoint, dataset)
                self.manifest.start(unit, checkpoint.name, dataset.name, "extract", self.settings("extract", dataset))
                self.manifest.fail(unit, f"checkpoint unavailable: {message}")
                self.summary.failed.append((unit, message))
            return
        source = model.trusttrace_source
        self.manifest.record_checkpoint(
            checkpoint.name, self.suite.model_id, checkpoint.revision, checkpoint.step, checkpoint.tokens,
            status="loaded", commit=source.commit, weights_sha256=source.weights_sha256,
            fingerprint=checkpoint_fingerprint(folder) if checkpoint.revision is None else None,
        )
        for dataset in pending:
            self.run_unit(
                checkpoint.name, dataset.name, "extract", self.settings("extract", dataset),
                partial(self._extract, model, tokenizer, checkpoint, dataset),
            )
        del model
        gc.collect()
        self._release(checkpoint, folder)

    def _note_cached(self, checkpoint: Checkpoint) -> None:
        """Whether a checkpoint was on disk before this workspace's sweeps first fetched it: asked of
        the cache once and kept in the manifest, so a checkpoint a killed run downloaded is still
        the sweep's to delete when a later run resumes."""
        if checkpoint.name in self._cached_before:
            return
        cached = self.manifest.cached_before(self.suite.model_id, checkpoint.name)
        if cached is None:
            cached = in_hub_cache(checkpoint)
            self.manifest.hold_snapshots(self.suite.model_id, self._others_snapshots())
            self.manifest.record_cached_before(checkpoint.name, self.suite.model_id, checkpoint.revision, cached)
        self._cached_before[checkpoint.name] = cached

    def _others_snapshots(self) -> set[str]:
        """The snapshots in the cache now that are not this workspace's sweeps' alone (see `_fetched_alone`)."""
        fetched = self.manifest.fetched_revisions(self.suite.model_id)
        return {commit for commit, refs in snapshot_refs(self.suite.model_id).items() if not refs or not refs <= fetched}

    def _fetched_alone(self, commit: str) -> bool:
        """Whether a snapshot is this workspace's sweeps' alone: every ref naming its commit is a
        revision they fetched, and it was not in the cache, held by another, before a fetch of
        theirs. Another ref (the user's main, which Pythia's step143000 also is), none (fetched
        by its commit), or an earlier sighting means someone else holds it too."""
        model = self.suite.model_id
        refs = snapshot_refs(model).get(commit, set())
        return bool(refs) and refs <= self.manifest.fetched_revisions(model) and commit not in self.manifest.held_snapshots(model)

    def _release(self, checkpoint: Checkpoint, folder: Path) -> None:
        """Delete fetched files: at once without keep_weights, else the oldest beyond disk_budget;
        never those of a checkpoint that was on disk before the sweep fetched it."""
        if self._cached_before.get(checkpoint.name) or not self._fetched_alone(folder.name):
            return
        self._kept.append((checkpoint, folder))
        budget = 0 if not self.config.keep_weights else self.config.disk_budget
        if budget is None:
            return
        # One slot stays free for the checkpoint being prefetched.
        while self._kept and len(self._kept) > max(budget - 1, 0):
            delete_fetched(*self._kept.pop(0))

    def _load(self, checkpoint: Checkpoint, folder: Path):
        """Load a fetched checkpoint from its folder, with the Hub id, revision and commit as provenance.

        A Hub snapshot folder is named by its commit, so nothing is asked of the network here.
        """
        model, tokenizer = load_model(
            folder, dtype=self.config.dtype, device=self.config.device, trust_remote_code=self.config.trust_remote_code
        )
        if checkpoint.revision is not None:
            model.trusttrace_source = replace(
                model.trusttrace_source, model=checkpoint.model_id, revision=checkpoint.revision, commit=folder.name
            )
        return model, tokenizer

    def _extract(self, model, tokenizer, checkpoint: Checkpoint, dataset: TrustDataset) -> tuple[str, str]:
        record = extract_to_store(
            model, tokenizer, dataset, self.store, layers=self.config.layers, position=self.config.position,
            batch_size=self.config.batch_size, model_name=self.suite.model_id, checkpoint=checkpoint.name, step=checkpoint.step,
            tokens=checkpoint.tokens,
        )
        self._verified.add(record.key)
        return record.key, record.provenance.get("weights_sha256")

    def _analyse_checkpoint(self, checkpoint: Checkpoint) -> None:
        """Probe and estimate MI on each stored activation set of this checkpoint."""
        for dataset in self.datasets:
            record = self.extract_record(checkpoint, dataset) if self.needs_activations(checkpoint, dataset) else None
            for stage in (s for s in RECORD_STAGES if s in self.config.stages):
                settings = self.settings(stage, dataset)
                if self.stage_done(checkpoint.name, dataset.name, stage, settings):
                    self.summary.skipped += 1
                    continue
                if record is not None:
                    work = partial(self._probe if stage == "probes" else self._mi, record)
                elif "extract" not in self.config.stages:  # with extract, its own failure is recorded
                    work = partial(self._no_activations, checkpoint, dataset)
                else:
                    continue
                self.run_unit(checkpoint.name, dataset.name, stage, settings, work)

    def _no_activations(self, checkpoint: Checkpoint, dataset: TrustDataset) -> tuple[str, None]:
        raise StoreError(
            f"no activation set of {dataset.name} at {checkpoint.name} with these extract settings "
            f"(position {self.config.position}, layers {self.config.layers}, dtype {self.config.dtype}); add extract to stages"
        )

    def _probe(self, record: ActivationRecord) -> tuple[str, None]:
        options = self.config.probes
        probe_record(
            self.store, record, split=self.config.probe_split(), method=options.method, folds=options.folds,
            test_size=options.test_size, seed=self.config.probe_seed(), C=options.C, device=self.config.device,
            checksums=False,  # verified by extract_record in this run
        )
        return PROBES_TABLE, None

    def _mi(self, record: ActivationRecord) -> tuple[str, None]:
        mi_record(
            self.store, record, estimator=self.config.mi.estimator, x_layer=self.config.mi.x_layer,
            split=self.config.probe_split(), folds=self.config.probes.folds, test_size=self.config.probes.test_size,
            seed=self.config.probe_seed(), max_rows=self.config.mi.max_rows, device=self.config.device,
            checksums=False,  # verified by extract_record in this run
        )
        return MI_TABLE, None

    # ----- the whole sweep -----------------------------------------------------------

    def check_local_weights(self) -> None:
        """Redo the units of local checkpoints whose files changed since they were loaded.

        A Hub revision is pinned by its commit; a local folder is not, so the names, sizes and
        times of its weight, config and tokenizer files are compared with those recorded at its
        last load. Steering and evaluation units read checkpoints of the suite too: they are
        redone as well.
        """
        changed, gone = [], []
        for checkpoint in self.checkpoints:
            before = self.manifest.fingerprint(self.suite.model_id, checkpoint.name) if checkpoint.revision is None else None
            if before is None:
                continue
            folder = Path(checkpoint.model_id)
            current = checkpoint_fingerprint(folder)
            if current is None:  # deleted to free the disk, say: nothing replaced the weights its results came from
                gone.append(checkpoint.name)
            elif not fingerprint_matches(before, folder):
                changed.append(checkpoint.name)
            elif current != before:  # recorded in an older form
                self.manifest.set_fingerprint(self.suite.model_id, checkpoint.name, current)
        if gone:
            self.summary.notes.append(
                f"the weight files of {', '.join(gone)} are gone; their results are kept, and a unit still to run "
                "on them fails until the files are back"
            )
        if not changed:
            return
        for name in changed:
            self.manifest.mark_checkpoint_stale(self.suite.name, name)
        for stage in ("steering", "evaluate"):
            self.manifest.mark_stale(stage)
        self._forget(changed)
        self.summary.repaired.append(
            f"files of {', '.join(changed)} (weights, config or tokenizer) changed on disk since they were loaded; "
            "their units, and the steering and evaluation units, are redone"
        )

    def _forget(self, checkpoints: list[str]) -> None:
        """Remove the activation sets and probe/MI rows of these checkpoints' former weights."""
        for record in self.store.records():
            if record.provenance.get("model") == self.suite.model_id and record.provenance.get("checkpoint") in checkpoints:
                self.store.remove(record)
        for table in (PROBES_TABLE, MI_TABLE):
            frame = read_table(self.store.root / table)
            if {"model", "checkpoint"} <= set(frame.columns):
                former = (frame["model"] == self.suite.model_id) & frame["checkpoint"].isin(checkpoints)
                if former.any():
                    write_table(self.store.root / table, frame[~former])

    def check_tables(self) -> None:
        """Redo the units whose result table is unreadable, damaged or gone.

        Only the tables of this run's stages: a damaged one is moved aside (kept for inspection,
        never read again) and the stage's done units are marked stale, so this run rebuilds it;
        each repair is named in the summary.
        """
        for name, stage in TABLE_STAGES.items():
            if stage not in self.config.stages:
                continue
            path = self.store.root / name
            try:
                read_table(path)
                problem = None if path.exists() else "is gone"
            except CorruptArtefactError as error:
                aside = path.with_name(f"{path.name}.damaged-{int(time.time())}")
                os.replace(path, aside)
                problem = f"is damaged ({error}); moved to {aside.name}"
            if problem and self.manifest.mark_stale(stage):
                self.summary.repaired.append(f"{path} {problem}; its {stage} units are redone")

    def run(self) -> SweepSummary:
        """Run every pending unit; returns the summary (failures included, never raised).

        Raises StoreError at once when another process is writing to the workspace.
        """
        with self.store.locked():
            return self._run()

    def _run(self) -> SweepSummary:
        start = time.perf_counter()
        self.check_tables()
        self.check_local_weights()
        prefetcher = Prefetcher(self.fetcher, retries=self.config.retries)
        bar = tqdm(self.checkpoints, desc="checkpoints", unit="ckpt", disable=not self.progress)
        try:
            for index, checkpoint in enumerate(bar):
                bar.set_postfix_str(checkpoint.name)
                later = self.checkpoints[index + 1 :] if self.config.prefetch else []
                self._extract_checkpoint(checkpoint, prefetcher, later)
                self._analyse_checkpoint(checkpoint)
                self._prune(checkpoint)
        finally:
            prefetcher.close()
            bar.close()
        self.manifest.fill_steps(self.suite.model_id, self.checkpoints)
        self.summary.duplicates = self.manifest.mark_duplicates(self.suite.model_id)
        if "steering" in self.config.stages or "evaluate" in self.config.stages:
            run_steering_stages(self)
        self.summary.seconds = time.perf_counter() - start
        return self.summary


def run_sweep(config: SweepConfig, *, fetcher: Fetcher = hub_fetch, progress: bool = True) -> SweepSummary:
    """Run (or resume) the sweep a config describes and return its summary (units run, skipped,
    failed). Every stage's unit of work for every checkpoint and dataset is recorded in the
    workspace's manifest, so a rerun does only what is missing, failed or stale. `fetcher`
    downloads a Hub checkpoint (the Hub by default)."""
    torch.manual_seed(0)
    return Sweep(config, fetcher=fetcher, progress=progress).run()

