"""The sweep: a local suite end to end, resume after a kill, failures, duplicates, config errors."""

from __future__ import annotations

import json
import shutil
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml

from trusttrace.cli import main as cli_main
from trusttrace.config import load_config, parse_config
from trusttrace.config_checks import check_names
from trusttrace.errors import ConfigError, CorruptArtefactError, ModelError, StoreError
from trusttrace.manifest import Manifest, settings_digest, unit_id
from trusttrace.store import ActivationStore
from trusttrace.sweep import run_sweep
from trusttrace.tiny import tiny_model

WORDS = ["red", "blue", "green", "old", "young", "tall", "small", "quiet"]


def make_suite(root: Path, tokenizer, steps=(0, 10, 20), duplicate: tuple[int, int] | None = None) -> Path:
    """A local suite of tiny Llama checkpoints; `duplicate=(a, b)` gives step b the weights of step a."""
    suite = root / "suite"
    for step in steps:
        seed = steps.index(duplicate[0]) if duplicate and step == duplicate[1] else steps.index(step)
        folder = suite / f"step_{step}"
        tiny_model("llama", len(tokenizer), seed=seed).save_pretrained(folder)
        tokenizer.save_pretrained(folder)
        (folder / "trusttrace.json").write_text(json.dumps({"step": step, "tokens": step * 100}))
    return suite


def make_dataset(root: Path) -> Path:
    rows = []
    for i in range(40):
        a, b = WORDS[i % 8], WORDS[(i // 8) % 8]
        rows.append({"statement": f"the {a} cat sees the {b} dog", "label": i % 2, "group": f"g{i // 4}"})
    path = root / "toy.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def write_config(root: Path, suite_dir: Path, dataset: Path, **extra) -> Path:
    """A sweep config over the local suite; `extra` replaces or adds keys."""
    config = {
        "workspace": str(root / "ws"), "suite": f"local:{suite_dir}", "datasets": [str(dataset)],
        "dtype": "float32", "device": "cpu", "stages": ["extract", "probes", "mi"],
        "probes": {"folds": 2, "seed": 0}, "mi": {"estimator": "gaussian"},
    }
    config.update(extra)
    path = root / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def tables(workspace: Path) -> dict[str, pd.DataFrame]:
    """The sweep's result tables, sorted and without run-dependent columns, for comparison."""
    result = {}
    for name in ("probes.parquet", "mi.parquet"):
        frame = pd.read_parquet(workspace / name)
        keys = [c for c in ("checkpoint", "dataset", "layer", "method", "estimator") if c in frame]
        result[name] = frame.sort_values(keys).reset_index(drop=True)
    return result


@pytest.fixture()
def setup(tmp_path, tokenizer):
    suite = make_suite(tmp_path, tokenizer)
    dataset = make_dataset(tmp_path)
    return tmp_path, suite, dataset


def test_local_suite_end_to_end_and_second_run_skips(setup):
    root, suite, dataset = setup
    config = load_config(write_config(root, suite, dataset))
    summary = run_sweep(config, progress=False)
    assert summary.ok and summary.ran == 9  # 3 checkpoints x (extract, probes, mi)
    probes = pd.read_parquet(config.workspace / "probes.parquet")
    assert sorted(probes["checkpoint"].unique()) == ["step_0", "step_10", "step_20"]
    assert set(probes["layer"]) == {0, 1, 2, 3}
    assert probes["step"].notna().all() and probes["tokens"].notna().all()  # step_0 saw 0 tokens, a known count
    mi = pd.read_parquet(config.workspace / "mi.parquet")
    assert len(mi) == 12
    again = run_sweep(config, progress=False)
    assert again.ran == 0 and again.skipped == 9
    unseeded = load_config(write_config(root, suite, dataset, probes={"folds": 2}))  # probes follow `seed: 0`
    assert run_sweep(unseeded, progress=False).ran == 0
    manifest = Manifest(config.workspace / "manifest.sqlite")
    assert manifest.units()[0].status == "done"
    probes_unit = next(unit.unit for unit in manifest.units() if unit.stage == "probes")
    recorded = manifest.settings(probes_unit)  # what the unit's digest stands for, readable
    assert recorded["C"] == config.probes.C and probes_unit.endswith("#" + settings_digest(recorded))



def test_each_local_checkpoint_is_hashed_once_ahead_of_its_load(setup, monkeypatch):
    """The prefetch thread hashes a checkpoint's weights; its load uses that checksum."""
    import threading

    import trusttrace.models as models

    root, suite, dataset = setup
    hashed, original = [], models.folder_checksum

    def spy(folder):
        hashed.append((folder.name, threading.current_thread().name))
        return original(folder)

    monkeypatch.setattr(models, "folder_checksum", spy)
    config = load_config(write_config(root, suite, dataset, stages=["extract"]))
    assert run_sweep(config, progress=False).ok
    assert sorted(hashed) == [(name, f"trusttrace-prefetch-{name}") for name in ("step_0", "step_10", "step_20")]
    checkpoints = Manifest(config.workspace / "manifest.sqlite").checkpoints()
    assert {row["name"]: row["weights_sha256"] for row in checkpoints} == {
        name: original(suite / name) for name in ("step_0", "step_10", "step_20")
    }


def test_a_local_checkpoint_whose_weights_are_replaced_is_redone(setup):
    root, suite, dataset = setup
    config = load_config(write_config(root, suite, dataset))
    run_sweep(config, progress=False)
    before = pd.read_parquet(config.workspace / "probes.parquet").query("checkpoint == 'step_20'")
    shutil.copy(suite / "step_0" / "model.safetensors", suite / "step_20" / "model.safetensors")  # other weights, same name
    summary = run_sweep(config, progress=False)
    assert summary.ran == 3 and summary.skipped == 6  # step_20's extract, probes and mi only
    assert any("files of step_20 (weights, config or tokenizer) changed on disk" in repair for repair in summary.repaired)
    after = pd.read_parquet(config.workspace / "probes.parquet").query("checkpoint == 'step_20'")
    step_0 = pd.read_parquet(config.workspace / "probes.parquet").query("checkpoint == 'step_0'")
    assert set(after["weights_sha256"]) == set(step_0["weights_sha256"]) != set(before["weights_sha256"])
    assert len(after) == len(before)  # the former weights' rows and activation set are gone, not kept beside
    sets = [r for r in ActivationStore(config.workspace).records() if r.provenance["checkpoint"] == "step_20"]
    assert [r.provenance["weights_sha256"] for r in sets] == list(set(step_0["weights_sha256"]))
    assert run_sweep(config, progress=False).ran == 0  # recorded again: nothing more to redo


def test_a_local_checkpoint_whose_weights_were_deleted_keeps_its_results(setup):
    root, suite, dataset = setup
    config = load_config(write_config(root, suite, dataset))
    run_sweep(config, progress=False)
    before = pd.read_parquet(config.workspace / "probes.parquet")
    (suite / "step_20" / "model.safetensors").unlink()  # to free the disk: nothing replaced them
    summary = run_sweep(config, progress=False)
    assert summary.ok and summary.ran == 0 and summary.repaired == []
    assert summary.notes == ["the weight files of step_20 are gone; their results are kept, and a unit still to run on them "
                             "fails until the files are back"]
    pd.testing.assert_frame_equal(pd.read_parquet(config.workspace / "probes.parquet"), before)


def test_a_one_fold_grouped_split_whose_rule_changed_names_its_units(setup):
    from trusttrace.sweep import Sweep

    root, suite, dataset = setup
    for test_size, named in ((0.2, None), (0.4, "2 of 5 group folds")):  # 0.7.0 held out one of 2 folds for 0.4
        config = load_config(write_config(root, suite, dataset, probes={"folds": 1, "test_size": test_size, "seed": 0}))
        sweep = Sweep(config, progress=False)
        assert [sweep.settings(stage, sweep.datasets[0]).get("held_out") for stage in ("probes", "mi")] == [named, named]


def test_a_changed_setting_or_dataset_reruns_what_depends_on_it(setup):
    root, suite, dataset = setup
    run_sweep(load_config(write_config(root, suite, dataset)), progress=False)
    changed = load_config(write_config(root, suite, dataset, probes={"folds": 3, "seed": 0}))
    summary = run_sweep(changed, progress=False)
    assert summary.ran == 6 and summary.skipped == 3  # probes, and MI on their first fold's rows; not extraction
    probes = pd.read_parquet(changed.workspace / "probes.parquet")
    assert sorted(probes["folds"].unique()) == [2, 3] and len(probes) == 2 * 3 * 4

    held_out = load_config(write_config(root, suite, dataset, probes={"folds": 1, "seed": 0, "test_size": 0.5}))
    summary = run_sweep(held_out, progress=False)
    assert summary.ran == 6  # probes and MI: MI reads the training side of the probes' held-out share
    mi = pd.read_parquet(held_out.workspace / "mi.parquet").query("folds == 1")
    probes = pd.read_parquet(held_out.workspace / "probes.parquet").query("folds == 1")
    assert set(mi["test_size"]) == {0.5} and set(mi["n"]) == set(probes["n_train"])

    capped = load_config(write_config(root, suite, dataset, mi={"estimator": "gaussian", "max_rows": 12}))
    assert run_sweep(capped, progress=False).ran == 3  # MI on a subsample: MI only, its rows beside the others
    assert set(pd.read_parquet(capped.workspace / "mi.parquet").query("mi_max_rows == 12")["n"]) == {12}

    paper = load_config(write_config(root, suite, dataset, protocol="paper", probes={"folds": 3, "seed": 0}))
    summary = run_sweep(paper, progress=False)
    assert summary.ran == 6  # the paper split: probes and MI again, extraction kept
    assert "paper" in set(pd.read_parquet(paper.workspace / "probes.parquet")["split"])

    frame = pd.read_csv(dataset)
    frame["label"] = 1 - frame["label"]
    frame.to_csv(dataset, index=False)  # same file name, other content
    summary = run_sweep(changed, progress=False)
    assert summary.ran == 9 and summary.skipped == 0
    assert pd.read_parquet(changed.workspace / "mi.parquet")["dataset_hash"].nunique() == 2

    position = load_config(write_config(root, suite, dataset, position="mean", stages=["probes", "mi"]))
    summary = run_sweep(position, progress=False)  # activations of these settings were never extracted
    assert summary.ran == 0 and len(summary.failed) == 6
    assert all("add extract to stages" in error for _, error in summary.failed)


def test_a_rerun_reads_back_only_the_sets_a_unit_left_to_run_needs(setup, monkeypatch):
    import trusttrace.store as store_module

    root, suite, dataset = setup
    config = load_config(write_config(root, suite, dataset))
    run_sweep(config, progress=False)
    shards = sorted(config.workspace.glob("activations/*/shard-*.safetensors"))
    damaged = shards[0]
    damaged.write_bytes(damaged.read_bytes()[:-8] + b"damaged!")
    hashed = []
    monkeypatch.setattr(store_module, "sha256_file", lambda path: hashed.append(path) or "")
    assert run_sweep(config, progress=False).ran == 0 and hashed == []  # every unit done: no set is read
    monkeypatch.undo()

    other = load_config(write_config(root, suite, dataset, mi={"estimator": "ksg"}))
    summary = run_sweep(other, progress=False)  # new MI units read every set: the damaged one is found and redone
    assert summary.ok and summary.ran == 3 + 1
    assert [line for line in summary.repaired if "fails its checksum" in line and damaged.parent.name in line]
    next(config.workspace.glob("activations/*/shard-*.safetensors")).unlink()
    assert run_sweep(other, progress=False).ran == 1  # a missing shard is seen without reading any

    hashed = []
    original = store_module.sha256_file
    monkeypatch.setattr(store_module, "sha256_file", lambda path: hashed.append(path) or original(path))
    third = load_config(write_config(root, suite, dataset, mi={"estimator": "hsic"}))
    assert run_sweep(third, progress=False).ran == 3  # MI on each set: each shard hashed once, not again by the unit
    assert sorted(hashed) == sorted(config.workspace.glob("activations/*/shard-*.safetensors"))


def test_a_damaged_or_deleted_table_is_rebuilt_and_named(setup):
    root, suite, dataset = setup
    config = load_config(write_config(root, suite, dataset))
    run_sweep(config, progress=False)
    before = tables(config.workspace)
    (config.workspace / "mi.parquet").write_bytes(b"")
    (config.workspace / "probes.parquet").unlink()
    summary = run_sweep(config, progress=False)
    assert summary.ran == 6 and summary.ok  # probes and MI of 3 checkpoints; no extraction
    assert any("mi.parquet is damaged" in line for line in summary.repaired)
    assert any("probes.parquet is gone" in line for line in summary.repaired)
    assert list(config.workspace.glob("mi.parquet.damaged-*"))
    for name, frame in tables(config.workspace).items():
        pd.testing.assert_frame_equal(frame, before[name])


def test_kill_and_resume_gives_the_same_tables(setup):
    root, suite, dataset = setup
    clean = load_config(write_config(root, suite, dataset, workspace=str(root / "clean")))
    run_sweep(clean, progress=False)
    killed_config = write_config(root, suite, dataset, workspace=str(root / "killed"))
    manifest_path = root / "killed" / "manifest.sqlite"
    process = subprocess.Popen(
        [sys.executable, "-c", "from trusttrace.cli import main; main()", "run", str(killed_config)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=os.environ | {"TQDM_DISABLE": "1"},
    )
    deadline = time.time() + 120
    while time.time() < deadline and process.poll() is None:
        if manifest_path.exists():
            done = [u for u in Manifest(manifest_path).units() if u.status == "done"]
            if len(done) >= 2:
                break
        time.sleep(0.05)
    killed_midway = process.poll() is None
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert killed_midway, "the sweep finished before it could be killed"
    statuses = [u.status for u in Manifest(manifest_path).units()]
    assert statuses.count("done") < 9
    resumed = run_sweep(load_config(killed_config), progress=False)
    assert resumed.ok
    expected, got = tables(root / "clean"), tables(root / "killed")
    for name in expected:
        pd.testing.assert_frame_equal(
            expected[name].drop(columns=["activation_key"], errors="ignore"),
            got[name].drop(columns=["activation_key"], errors="ignore"),
        )


def test_failed_checkpoint_does_not_stop_the_others(setup, capsys):
    root, suite, dataset = setup
    (suite / "step_10" / "model.safetensors").write_bytes(b"not weights")
    path = write_config(root, suite, dataset, stages=["extract"])
    with pytest.raises(SystemExit) as exit_info:
        sys.argv = ["trusttrace", "run", str(path)]
        cli_main()
    assert exit_info.value.code == 1
    err = capsys.readouterr().err
    assert f"failed: local:{suite}:step_10/toy/extract" in err
    units = {(u.checkpoint, u.dataset, u.stage): u.status for u in Manifest(root / "ws" / "manifest.sqlite").units()}
    assert units == {
        ("step_0", "toy", "extract"): "done", ("step_10", "toy", "extract"): "failed", ("step_20", "toy", "extract"): "done",
    }


def test_duplicate_weights_are_flagged_against_the_earlier_step_not_name(tmp_path, tokenizer):
    suite = make_suite(tmp_path, tokenizer, steps=(2, 10, 20), duplicate=(2, 10))  # by name, step_10 sorts first
    config = load_config(write_config(tmp_path, suite, make_dataset(tmp_path), stages=["extract"]))
    summary = run_sweep(config, progress=False)
    assert summary.duplicates == {"step_10": "step_2"}
    manifest = Manifest(config.workspace / "manifest.sqlite")
    rows = [(row["name"], row["step"], row["tokens"], row["duplicate_of"]) for row in manifest.checkpoints()]
    assert rows == [("step_2", 2, 200, None), ("step_10", 10, 1000, "step_2"), ("step_20", 20, 2000, None)]

    with sqlite3.connect(config.workspace / "manifest.sqlite") as db:  # as 0.7.0 left them: no step, no tokens
        db.execute("UPDATE checkpoints SET step=NULL, tokens=NULL")
    db.close()
    run_sweep(config, progress=False)
    assert [(row["name"], row["step"], row["tokens"], row["duplicate_of"]) for row in manifest.checkpoints()] == rows


@pytest.mark.parametrize("edit", ["config", "tokenizer"])
def test_a_local_checkpoint_whose_config_or_tokenizer_changes_is_redone(setup, edit):
    root, suite, dataset = setup
    config = load_config(write_config(root, suite, dataset))
    run_sweep(config, progress=False)
    folder = suite / "step_20"
    if edit == "config":
        settings = json.loads((folder / "config.json").read_text())
        (folder / "config.json").write_text(json.dumps(settings | {"rms_norm_eps": 0.5}))
    else:
        (folder / "tokenizer_config.json").write_text((folder / "tokenizer_config.json").read_text() + "\n")
    summary = run_sweep(config, progress=False)
    assert summary.ran == 3 and summary.skipped == 6  # step_20's extract, probes and mi only
    assert any("files of step_20" in repair for repair in summary.repaired)


def test_a_fingerprint_of_an_older_form_is_renewed_without_redoing(setup):
    from trusttrace.models import checkpoint_fingerprint

    root, suite, dataset = setup
    config = load_config(write_config(root, suite, dataset))
    run_sweep(config, progress=False)
    manifest = Manifest(config.workspace / "manifest.sqlite")
    model = str(suite.resolve())
    current = manifest.fingerprint(model, "step_10")
    manifest.set_fingerprint(model, "step_10", current.split("+")[0])  # as 0.3 recorded it: the weights alone
    again = run_sweep(config, progress=False)
    assert again.ran == 0 and not again.repaired
    assert manifest.fingerprint(model, "step_10") == current == checkpoint_fingerprint(suite / "step_10")


def test_a_trainer_checkpoint_is_fingerprinted_by_its_weights_not_its_optimizer_state(setup):
    from trusttrace.models import _matching_files, _stat_digest, RESULT_FILES, weight_files

    root, suite, dataset = setup
    for folder in suite.iterdir():
        torch.save({"state": 1}, folder / "optimizer.pt")  # as transformers' Trainer saves beside the weights
    config = load_config(write_config(root, suite, dataset))
    run_sweep(config, progress=False)
    manifest = Manifest(config.workspace / "manifest.sqlite")
    model, folder = str(suite.resolve()), suite / "step_10"
    current = manifest.fingerprint(model, "step_10")
    every = f"{_stat_digest(weight_files(folder))}+{_stat_digest(_matching_files(folder, RESULT_FILES))}"
    manifest.set_fingerprint(model, "step_10", every)  # as 0.7.0 recorded it: the optimizer state counted as weights
    again = run_sweep(config, progress=False)
    assert again.ran == 0 and not again.repaired and manifest.fingerprint(model, "step_10") == current
    (folder / "optimizer.pt").unlink()  # freeing the disk: the weights are unchanged
    (suite / "step_20" / "model.safetensors").unlink()  # the weights gone, the optimizer state left
    summary = run_sweep(config, progress=False)
    assert summary.ran == 0 and not summary.repaired and "the weight files of step_20 are gone" in summary.notes[0]


def test_a_manifest_of_an_older_form_gains_the_columns_it_lacks(tmp_path):

    path = tmp_path / "manifest.sqlite"
    with sqlite3.connect(path) as db:  # as the first versions wrote it
        db.executescript(
            "CREATE TABLE units (unit TEXT PRIMARY KEY, checkpoint TEXT, dataset TEXT, stage TEXT, status TEXT, error TEXT, "
            "seconds REAL, artefact TEXT, checksum TEXT, started TEXT, finished TEXT);"
            "CREATE TABLE checkpoints (name TEXT, model TEXT, revision TEXT, step INTEGER, tokens INTEGER, commit_sha TEXT, "
            "weights_sha256 TEXT, duplicate_of TEXT, status TEXT, error TEXT, PRIMARY KEY (model, name));"
            "INSERT INTO units (unit, status) VALUES ('old', 'done');"
        )
    manifest = Manifest(path)
    assert manifest.settings("old") is None and manifest.units()[0].status == "done"
    manifest.start("new", "step1", "toy", "probes", {"C": 1.0, "path": Path("/x")})
    assert manifest.settings("new") == {"C": 1.0, "path": "/x"}
    manifest.record_checkpoint("step1", "m", None, 1, None, status="loaded", fingerprint="f")
    assert manifest.fingerprint("m", "step1") == "f"


def test_every_copy_points_to_the_first_checkpoint_with_its_weights_and_unknown_weights_match_none():
    from trusttrace.provenance import earlier_copies

    order = [("a", "x"), ("b", None), ("c", "x"), ("d", "y"), ("e", None), ("f", "x"), ("g", "y")]
    assert earlier_copies(order) == {"c": "a", "f": "a", "g": "d"}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"colour": "red"}, "key 'colour': unknown key"),
        ({"batch_size": "big"}, "key 'batch_size'"),
        ({"stages": ["extract", "dance"]}, "key 'stages.1'"),
        ({"probes": {"folds": "x"}}, "key 'probes.folds'"),
        ({"suite": "pythia-3b"}, "unknown suite 'pythia-3b'"),
        ({"datasets": ["nonsense"]}, "unknown dataset 'nonsense'"),
        ({"stages": ["extract", "steering"]}, "key 'steering'"),
        ({"stages": ["extract"], "keep_activations": False}, "key 'keep_activations'"),
    ],
)
def test_config_errors_name_the_key(setup, change, message, capsys):
    root, suite, dataset = setup
    path = write_config(root, suite, dataset, **change)
    with pytest.raises(SystemExit) as exit_info:
        sys.argv = ["trusttrace", "run", str(path)]
        cli_main()
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err
    assert not (root / "ws").exists(), "nothing may start on a bad config"


def test_unwritable_workspace(setup):
    root, suite, dataset = setup
    blocker = root / "blocker"
    blocker.write_text("")
    config = parse_config({"workspace": str(blocker / "ws"), "suite": f"local:{suite}", "datasets": [str(dataset)]})
    with pytest.raises(ConfigError, match="key 'workspace'"):
        check_names(config)


def test_without_keep_activations_sets_are_deleted_once_read_and_extracted_again_only_when_needed(setup):
    root, suite, dataset = setup
    kept = load_config(write_config(root, suite, dataset))
    run_sweep(kept, progress=False)
    steering = {"source": "step_10", "layers": [1], "alphas": [2.0], "max_perplexity": None}
    config = load_config(write_config(
        root, suite, dataset, workspace=str(root / "pruned"), keep_activations=False,
        stages=["extract", "probes", "mi", "steering"], steering=steering,
    ))
    summary = run_sweep(config, progress=False)
    assert summary.ok and summary.ran == 9 + 1
    store = ActivationStore(config.workspace)
    assert [record.provenance["checkpoint"] for record in store.records()] == ["step_10"]  # the steering source stays
    pruned = tables(config.workspace)
    for name, table in tables(kept.workspace).items():  # the same results as a run that keeps every set
        columns = [c for c in table.columns if c not in ("activation_key", "trusttrace_version", "created")]
        pd.testing.assert_frame_equal(pruned[name][columns], table[columns])
    statuses = {(u.checkpoint, u.stage): u.status for u in Manifest(config.workspace / "manifest.sqlite").units()}
    assert statuses[("step_0", "extract")] == "pruned" and statuses[("step_10", "extract")] == "done"
    again = run_sweep(config, progress=False)
    assert again.ran == 0 and again.repaired == []  # a deleted set no unit reads is not extracted again
    other = load_config(write_config(
        root, suite, dataset, workspace=str(root / "pruned"), keep_activations=False, mi={"estimator": "ksg"},
        stages=["extract", "probes", "mi", "steering"], steering=steering,
    ))
    assert run_sweep(other, progress=False).ran == 2 + 3  # step_0 and step_20 extracted again, then MI on all three
    assert [record.provenance["checkpoint"] for record in store.records()] == ["step_10"]


def test_a_set_a_kill_left_between_pruning_and_deleting_is_deleted_by_the_next_run(setup, monkeypatch):
    root, suite, dataset = setup
    config = load_config(write_config(root, suite, dataset, keep_activations=False))

    def killed(self, record):
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(ActivationStore, "remove", killed)
        with pytest.raises(KeyboardInterrupt):
            run_sweep(config, progress=False)
    assert len(ActivationStore(config.workspace).records()) == 1
    statuses = {(u.checkpoint, u.stage): u.status for u in Manifest(config.workspace / "manifest.sqlite").units()}
    assert statuses[("step_0", "extract")] == "pruned"  # marked before the deletion the kill stopped
    assert run_sweep(config, progress=False).ran == 6  # the two checkpoints the kill stopped; step_0 is not redone
    assert ActivationStore(config.workspace).records() == []


def test_a_pruned_workspace_is_named_as_such_and_runs_without_extract(setup, monkeypatch, capsys):
    root, suite, dataset = setup
    run_sweep(load_config(write_config(root, suite, dataset, keep_activations=False)), progress=False)
    analysis_only = load_config(write_config(root, suite, dataset, stages=["probes", "mi"]))
    assert check_names(analysis_only) == [] and run_sweep(analysis_only, progress=False).ran == 0
    sys.argv = ["trusttrace", "probe", str(analysis_only.workspace)]
    with pytest.raises(SystemExit) as exit_info:
        cli_main()
    assert exit_info.value.code == 2 and "keep_activations: false deleted them" in capsys.readouterr().err


def test_steering_stage_builds_vectors_and_a_grid(setup):
    root, suite, dataset = setup
    steering = {"source": "step_10", "layers": [1, 2], "alphas": [-2.0, 2.0], "max_perplexity": None}
    config = load_config(write_config(root, suite, dataset, stages=["extract", "steering"], steering=steering))
    summary = run_sweep(config, progress=False)
    assert summary.ok, summary.failed
    grid = pd.read_parquet(config.workspace / "steering.parquet")
    assert len(grid) == 1 + 2 * 2  # the unsteered baseline, then layers x alphas
    assert set(grid["source_checkpoint"]) == {"step_10"} and set(grid["target_model"]) == {"final"}
    assert grid["kl"].iloc[1:].gt(0).all()
    assert len(list((config.workspace / "steering").glob("*-step_10-toy-*.safetensors"))) == 1
    assert run_sweep(config, progress=False).ran == 0


def test_hub_checkpoints_are_fetched_ahead_and_keep_their_id(setup):
    """A simulated Hub suite: the fetcher is called for the next checkpoint while one is processed,
    and provenance names the Hub id and revision, not the local snapshot folder."""
    from trusttrace.checkpoints import Checkpoint
    from trusttrace.sweep import Sweep

    root, suite, dataset = setup
    import threading

    folders = {p.name: p for p in suite.iterdir()}
    fetched: list[str] = []
    next_fetched = threading.Event()
    ahead: list[bool] = []

    def fetch(checkpoint):
        fetched.append(checkpoint.name)
        if checkpoint.name == "step_10":
            next_fetched.set()
        return folders[checkpoint.name]

    sweep = Sweep(load_config(write_config(root, suite, dataset, stages=["extract"])), fetcher=fetch, progress=False)
    sweep.checkpoints = [Checkpoint(c.name, "org/model", c.name, c.step, c.tokens) for c in sweep.checkpoints]
    load = sweep._load

    def load_waiting_for_the_next_fetch(checkpoint, folder):
        if checkpoint.name == "step_0":  # step_10 is fetched while step_0 is worked on, not after
            ahead.append(next_fetched.wait(timeout=10))
        return load(checkpoint, folder)

    sweep._load = load_waiting_for_the_next_fetch
    assert sweep.run().ok
    assert ahead == [True]
    assert fetched == ["step_0", "step_10", "step_20"]
    records = sweep.store.records()
    assert {r.provenance["model"] for r in records} == {str(suite)}
    assert sorted(r.provenance["revision"] for r in records) == ["step_0", "step_10", "step_20"]
    assert {r.provenance["commit"] for r in records} == {"step_0", "step_10", "step_20"}


def deleted_by_a_hub_sweep(setup, monkeypatch, *, cached: set[str], refs) -> list[str]:
    """The checkpoints a sweep without keep_weights deletes, over the local suite posing as Hub
    revisions: `cached` were in the cache before it, `refs` names each snapshot's refs (a
    folder's name standing for its commit), or gives them from the names fetched so far."""
    import trusttrace.sweep as sweep_module
    from trusttrace.checkpoints import Checkpoint
    from trusttrace.sweep import Sweep

    root, suite, dataset = setup
    folders = {p.name: p for p in suite.iterdir()}
    deleted: list[str] = []
    monkeypatch.setattr(sweep_module, "in_hub_cache", lambda checkpoint: checkpoint.name in cached)
    fetched: list[str] = []
    monkeypatch.setattr(sweep_module, "snapshot_refs", lambda model_id: refs(fetched) if callable(refs) else refs)
    monkeypatch.setattr(sweep_module, "delete_fetched", lambda checkpoint, folder: deleted.append(checkpoint.name))
    config = load_config(write_config(root, suite, dataset, stages=["extract"], keep_weights=False))
    sweep = Sweep(config, fetcher=lambda checkpoint: fetched.append(checkpoint.name) or folders[checkpoint.name], progress=False)
    sweep.checkpoints = [Checkpoint(c.name, "org/model", c.name, c.step, c.tokens) for c in sweep.checkpoints]
    assert sweep.run().ok
    return deleted


def test_without_keep_weights_only_what_the_sweep_downloaded_is_deleted(setup, monkeypatch):
    def refs(fetched: list[str]) -> dict[str, set[str]]:  # the user's step_10, and what the sweep fetched
        return {"step_10": {"step_10"}} | {name: {name} for name in fetched}

    assert deleted_by_a_hub_sweep(setup, monkeypatch, cached={"step_10"}, refs=refs) == ["step_0", "step_20"]


def test_a_snapshot_the_cache_held_under_another_branch_is_never_deleted(setup, monkeypatch):
    """Pythia's step143000 is main: a user who has main cached holds its commit, though not under
    the branch name the sweep fetches (whether main came before the sweep or since)."""
    def refs(fetched: list[str]) -> dict[str, set[str]]:
        return {"step_20": {"main"}} | {name: {name} | ({"main"} if name == "step_20" else set()) for name in fetched}

    assert deleted_by_a_hub_sweep(setup, monkeypatch, cached=set(), refs=refs) == ["step_0", "step_10"]


def test_a_snapshot_the_cache_held_under_no_ref_is_never_deleted(setup, monkeypatch):
    """Fetched by its commit (or left when main moved on), step_20's commit has no ref until the
    sweep's fetch of its branch writes one: seen before that fetch, it stays the user's."""

    def refs(fetched: list[str]) -> dict[str, set[str]]:
        return {name: {name} for name in fetched} | ({} if "step_20" in fetched else {"step_20": set()})

    assert deleted_by_a_hub_sweep(setup, monkeypatch, cached=set(), refs=refs) == ["step_0", "step_10"]


def test_the_prefetcher_hands_over_results_and_errors_and_never_holds_the_process(tmp_path):
    import threading

    from trusttrace.checkpoints import Checkpoint
    from trusttrace.errors import CheckpointError
    from trusttrace.prefetch import Prefetcher

    release = threading.Event()

    def fetch(checkpoint):
        if checkpoint.name == "bad":
            raise CheckpointError("no such revision")
        if checkpoint.name == "slow":
            release.wait(30)
        return tmp_path / checkpoint.name

    prefetcher = Prefetcher(fetch, retries=0)
    checkpoint = lambda name: Checkpoint(name, "org/m", name, None, None)  # noqa: E731
    prefetcher.schedule(checkpoint("a"))
    assert prefetcher.get(checkpoint("a")) == tmp_path / "a"
    with pytest.raises(CheckpointError, match="no such revision"):
        prefetcher.get(checkpoint("bad"))
    prefetcher.schedule(checkpoint("slow"))
    prefetcher.close()  # returns while the download runs, in a thread that does not keep the process alive
    running = [t for t in threading.enumerate() if t.name == "trusttrace-prefetch-slow"]
    assert running and all(t.daemon for t in running)
    release.set()


def test_a_folder_whose_checksum_cannot_be_claimed_is_still_handed_over(tmp_path, monkeypatch):
    import trusttrace.prefetch as prefetch
    from trusttrace.checkpoints import Checkpoint

    def unclaimable(folder):
        raise RuntimeError("Symlink loop")

    monkeypatch.setattr(prefetch, "checksum_ahead", unclaimable)
    prefetcher = prefetch.Prefetcher(lambda checkpoint: tmp_path, retries=0)
    prefetcher.schedule(Checkpoint("a", "org/m", "a", None, None))
    assert prefetcher._futures["a"].result(timeout=10) == tmp_path  # what get() waits on, with a limit


def test_a_snapshot_file_whose_shared_blob_was_deleted_is_found(tmp_path):
    from trusttrace.prefetch import broken_links

    (tmp_path / "blob").write_text("{}")
    (tmp_path / "snapshot").mkdir()
    (tmp_path / "snapshot" / "config.json").symlink_to(tmp_path / "blob")
    (tmp_path / "snapshot" / "model.safetensors").write_bytes(b"weights")
    assert broken_links(tmp_path / "snapshot") == []
    (tmp_path / "blob").unlink()  # deleted with an older revision that shared it
    assert broken_links(tmp_path / "snapshot") == [tmp_path / "snapshot" / "config.json"]


def test_a_network_error_during_a_download_is_tried_again(tmp_path, monkeypatch, hub_online):
    import huggingface_hub

    import trusttrace.prefetch as prefetch
    from trusttrace.checkpoints import Checkpoint

    calls = []

    def listing(model_id, revision=None):
        calls.append(revision)
        if len(calls) == 1:
            raise TimeoutError("read timed out")
        return ["config.json", "model.safetensors"]

    monkeypatch.setattr(prefetch, "hub_reachable", lambda: True)
    monkeypatch.setattr(huggingface_hub, "list_repo_files", listing)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", lambda model_id, revision=None, allow_patterns=None: str(tmp_path))
    checkpoint = Checkpoint("step8", "org/m", "step8", 8, None)
    assert prefetch.with_retries(lambda: prefetch.hub_fetch(checkpoint), retries=2, backoff=0.0) == tmp_path
    assert calls == ["step8", "step8"]


def fake_cache(root: Path, refs: dict[str, str]) -> Path:
    """A Hugging Face cache holding org/m with these refs (branch -> commit), each snapshot a config.json."""
    repo = root / "models--org--m"
    (repo / "refs").mkdir(parents=True)
    for branch, commit in refs.items():
        (repo / "refs" / branch).write_text(commit)
        (repo / "snapshots" / commit).mkdir(parents=True, exist_ok=True)
        (repo / "snapshots" / commit / "config.json").write_text("{}")
    return repo


def test_the_cache_s_snapshots_are_listed_with_their_refs_and_a_cached_revision_is_fetched_offline(tmp_path, monkeypatch):
    from huggingface_hub import constants

    import trusttrace.prefetch as prefetch
    from trusttrace.checkpoints import Checkpoint
    from trusttrace.errors import OfflineError

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    repo = fake_cache(tmp_path, {"main": "a" * 40, "step143000": "a" * 40, "step8": "b" * 40})
    (repo / "snapshots" / ("c" * 40)).mkdir()  # fetched by its commit: no ref names it
    assert prefetch.snapshot_refs("org/m") == {"a" * 40: {"main", "step143000"}, "b" * 40: {"step8"}, "c" * 40: set()}
    assert prefetch.snapshot_refs("org/absent") == {} and prefetch.snapshot_refs(str(tmp_path)) == {}
    monkeypatch.setattr(prefetch, "hub_reachable", lambda: False)
    folder = prefetch.hub_fetch(Checkpoint("step8", "org/m", "step8", 8, None))
    assert folder.resolve() == (repo / "snapshots" / ("b" * 40)).resolve()
    calls = []

    def missing():
        calls.append(1)
        return prefetch.hub_fetch(Checkpoint("step9", "org/m", "step9", 9, None))

    with pytest.raises(OfflineError, match="not cached"):
        prefetch.with_retries(missing, retries=2)
    assert len(calls) == 1  # offline, trying again cannot help


def test_a_checkpoint_a_killed_run_downloaded_is_still_the_sweep_s_to_delete_on_resume(setup, monkeypatch):
    import trusttrace.sweep as sweep_module
    from trusttrace.checkpoints import Checkpoint
    from trusttrace.sweep import Sweep

    root, suite, dataset = setup
    folders = {p.name: p for p in suite.iterdir()}
    config = load_config(write_config(root, suite, dataset, stages=["extract"], keep_weights=False))

    def hub_sweep() -> Sweep:
        sweep = Sweep(config, fetcher=lambda checkpoint: folders[checkpoint.name], progress=False)
        sweep.checkpoints = [Checkpoint(c.name, "org/model", c.name, c.step, c.tokens) for c in sweep.checkpoints]
        return sweep

    monkeypatch.setattr(sweep_module, "in_hub_cache", lambda checkpoint: False)
    cache: dict[str, set[str]] = {}  # empty before the first run
    monkeypatch.setattr(sweep_module, "snapshot_refs", lambda model_id: cache)
    hub_sweep()._note_cached(Checkpoint("step_10", "org/model", "step_10", 10, 1000))  # then killed while fetching it
    cache.update({name: {name} for name in folders})  # step_10 is in the cache now, as are the others
    monkeypatch.setattr(sweep_module, "in_hub_cache", lambda checkpoint: True)
    deleted = []
    monkeypatch.setattr(sweep_module, "delete_fetched", lambda checkpoint, folder: deleted.append(checkpoint.name))
    assert hub_sweep().run().ok
    assert deleted == ["step_10"]


def test_a_hub_revision_counts_as_cached_when_the_cache_holds_its_config(tmp_path, monkeypatch):
    from huggingface_hub import constants

    from trusttrace.checkpoints import Checkpoint
    from trusttrace.prefetch import in_hub_cache

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    fake_cache(tmp_path, {"step8": "a" * 40})
    assert in_hub_cache(Checkpoint("step8", "org/m", "step8", 8, None))
    assert not in_hub_cache(Checkpoint("step9", "org/m", "step9", 9, None))
    assert not in_hub_cache(Checkpoint("step8", "org/absent", "step8", 8, None))
    assert in_hub_cache(Checkpoint("local", str(tmp_path), None, None, None))


def test_two_suites_with_the_same_checkpoint_names_share_a_workspace(setup, tokenizer):
    root, suite, dataset = setup
    other = make_suite(root / "other", tokenizer, steps=(0, 10, 20))
    first = run_sweep(load_config(write_config(root, suite, dataset, stages=["extract"])), progress=False)
    second = run_sweep(load_config(write_config(root, other, dataset, stages=["extract"])), progress=False)
    assert first.ran == 3 and second.ran == 3 and second.skipped == 0
    models = {row["model"] for row in Manifest(root / "ws" / "manifest.sqlite").checkpoints()}
    assert models == {str(suite), str(other)}


def test_a_device_this_machine_lacks_stops_the_sweep_before_any_work(setup):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    root, suite, dataset = setup
    config = load_config(write_config(root, suite, dataset, device="cuda"))
    with pytest.raises(ModelError, match="key 'device': 'cuda': CUDA is not available"):
        run_sweep(config, progress=False)
    assert not (root / "ws").exists()


def test_an_older_manifest_gains_the_fingerprint_column(tmp_path):
    from contextlib import closing

    with closing(sqlite3.connect(tmp_path / "manifest.sqlite")) as db:  # the checkpoints table as 0.2.0 made it
        db.execute("CREATE TABLE checkpoints (name TEXT, model TEXT, revision TEXT, step INTEGER, tokens INTEGER, commit_sha TEXT, "
                   "weights_sha256 TEXT, duplicate_of TEXT, status TEXT, error TEXT, PRIMARY KEY (model, name))")
        db.commit()
    manifest = Manifest(tmp_path / "manifest.sqlite")
    assert manifest.fingerprint("m", "step_1") is None
    manifest.record_checkpoint("step_1", "m", None, 1, None, status="loaded", fingerprint="abc")
    manifest.record_checkpoint("step_1", "m", None, 1, None, status="loaded")
    assert manifest.fingerprint("m", "step_1") == "abc"


def test_a_changed_checkpoint_marks_only_its_own_suites_units(tmp_path):
    manifest = Manifest(tmp_path / "manifest.sqlite")
    units = [unit_id(suite, "step1000", "toy", "probes", {}) for suite in ("pythia-70m", "pythia-160m")]
    for unit in units:
        manifest.start(unit, "step1000", "toy", "probes")
        manifest.finish(unit, 1.0)
    assert manifest.mark_checkpoint_stale("pythia-70m", "step1000") == 1
    assert [manifest.unit(unit).status for unit in units] == ["stale", "done"]


def test_a_damaged_manifest_is_one_clear_error(tmp_path):
    path = tmp_path / "manifest.sqlite"
    path.write_text("garbage")
    with pytest.raises(CorruptArtefactError, match="manifest.sqlite: unreadable manifest .*move it aside and run again"):
        Manifest(path)
    (tmp_path / "folder.sqlite").mkdir()  # cannot be opened, as in a read-only folder: not damage, no advice to move it
    with pytest.raises(StoreError, match="folder.sqlite: cannot open the manifest") as refused:
        Manifest(tmp_path / "folder.sqlite")
    assert not isinstance(refused.value, CorruptArtefactError)
