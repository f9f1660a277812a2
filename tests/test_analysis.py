"""Probes and MI over a workspace: tidy tables, idempotent reruns, corrupt sets skipped, the CLI."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch

from trusttrace import probes
from trusttrace.analysis import mi_record, probe_record, run_mi, run_probes
from trusttrace.cli import main
from trusttrace.data import DatasetCard, TrustDataset
from trusttrace.errors import LayerError, ProbeError
from trusttrace.store import BASELINES_TABLE, MI_TABLE, PROBES_TABLE, ActivationStore, read_table, write_table

CARD = DatasetCard(name="toy", dimension="user", label_1="yes", label_0="no", source="test", licence="none")
N, LAYERS, HIDDEN = 60, [0, 2, 4], 6


def toy_dataset(grouped: bool) -> TrustDataset:
    labels = np.arange(N) % 2
    statements = [f"{'good' if label else 'bad'} thing number {i}" for i, label in enumerate(labels)]
    groups = np.arange(N) // 3 if grouped else None
    return TrustDataset(name="toy", statements=statements, labels=labels, groups=groups, card=CARD, source="test")


def add_set(store: ActivationStore, step: int, grouped: bool = True):
    dataset = toy_dataset(grouped)
    g = torch.Generator().manual_seed(step)
    acts = torch.randn(len(LAYERS), N, HIDDEN, generator=g)
    acts[1:] += torch.as_tensor(dataset.labels, dtype=torch.float32)[None, :, None] * step / 100
    provenance = {
        "model": "toy-model", "revision": f"step{step}", "commit": None, "weights_sha256": f"w{step}",
        "checkpoint": f"step{step}", "step": step, "tokens": None, "dataset": "toy",
        "dataset_hash": dataset.content_hash, "n": N, "position": "last", "layers": LAYERS,
        "dtype": "float32", "tokenizer": "t", "template": None,
    }
    return store.save(acts, dataset, provenance)


@pytest.fixture
def workspace(tmp_path):
    store = ActivationStore(tmp_path / "ws")
    add_set(store, 100)
    add_set(store, 300)
    return store


def test_run_probes_writes_a_tidy_table_and_a_rerun_adds_nothing(workspace, monkeypatch):
    fits = []
    original = probes.bag_of_words_scores
    monkeypatch.setattr(probes, "bag_of_words_scores", lambda *args: fits.append(1) or original(*args))
    table, problems = run_probes(workspace, folds=3, progress=False)
    assert len(fits) == 3  # the baselines of one dataset are fitted at its first set only, once per fold
    assert problems == []
    assert len(table) == 2 * len(LAYERS)
    assert set(table["checkpoint"]) == {"step100", "step300"} and set(table["layer"]) == set(LAYERS)
    assert set(table["split"]) == {"grouped"} and (table["folds"] == 3).all()
    record = workspace.records()[0]
    row = table[table["activation_key"] == record.key].iloc[0]
    for column in ("model", "revision", "commit", "weights_sha256", "dataset_hash", "position", "dtype", "tokenizer"):
        assert row[column] == record.provenance[column], column  # provenance travels with every row
    assert row["trusttrace_version"]
    best = table.set_index(["step", "layer"])["accuracy"]
    assert best[(300, 4)] > 0.9 and best[(100, 0)] < 0.8
    baselines = read_table(workspace.root / BASELINES_TABLE)
    assert sorted(baselines["baseline"]) == ["bag_of_words", "first_word", "majority"]  # one dataset, so once

    partial = baselines[baselines["baseline"] != "first_word"]
    write_table(workspace.root / BASELINES_TABLE, partial)  # as a version with fewer baselines left it
    probe_record(workspace, workspace.records()[0], folds=3)
    assert sorted(read_table(workspace.root / BASELINES_TABLE)["baseline"]) == sorted(baselines["baseline"])
    table = read_table(workspace.root / PROBES_TABLE)  # that set's rows were rewritten, the same values

    stamp = (workspace.root / PROBES_TABLE).stat().st_mtime_ns
    again, problems = run_probes(workspace, folds=3, progress=False)
    assert problems == [] and again.equals(table)
    assert (workspace.root / PROBES_TABLE).stat().st_mtime_ns == stamp

    older = table.drop(columns="interval").assign(acc_low=0.0)  # rows of an older interval rule
    write_table(workspace.root / PROBES_TABLE, older)
    redone, _ = run_probes(workspace, folds=3, progress=False)
    assert len(redone) == len(table) and redone["interval"].eq("wilson-effective-rows").all()
    by_row = ["activation_key", "layer"]
    assert redone.sort_values(by_row)["acc_low"].tolist() == table.sort_values(by_row)["acc_low"].tolist()  # recomputed

    other, _ = run_probes(workspace, folds=3, method="mass_mean", split="paper", progress=False)
    assert len(other) == 4 * len(LAYERS)
    assert set(other.loc[other["method"] == "mass_mean", "folds"]) == {1}


def test_new_sets_are_added_and_corrupt_sets_skipped(workspace):
    run_probes(workspace, folds=2, progress=False)
    broken = add_set(workspace, 500)
    fresh = add_set(workspace, 700)
    shard = next(broken.path.glob("shard-*.safetensors"))
    data = bytearray(shard.read_bytes())
    data[-3] ^= 0xFF
    shard.write_bytes(bytes(data))
    table, problems = run_probes(workspace, folds=2, progress=False)
    assert len(problems) == 1 and broken.key in problems[0] and "checksum mismatch" in problems[0]
    assert set(table["activation_key"]) == {r.key for r in workspace.records()} - {broken.key}
    assert fresh.key in set(table["activation_key"])


def test_a_set_whose_sidecar_lists_no_shards_is_named_not_a_crash(workspace):
    import json

    empty = add_set(workspace, 500)
    meta = json.loads((empty.path / "meta.json").read_text())
    (empty.path / "meta.json").write_text(json.dumps(meta | {"files": {}}))
    assert not workspace.verify(empty)
    for run in (run_probes, run_mi):
        table, problems = run(workspace, folds=2, progress=False)
        assert len(problems) == 1 and "no shards listed" in problems[0] and empty.key in problems[0]
        assert empty.key not in set(table["activation_key"])


def test_a_set_too_small_to_split_is_skipped_and_named_and_the_others_are_probed(workspace):
    small = TrustDataset(name="tiny", statements=[f"s{i}" for i in range(6)], labels=np.arange(6) % 2, groups=None,
                         card=CARD, source="test")
    workspace.save(torch.randn(len(LAYERS), 6, HIDDEN), small, {
        "model": "toy-model", "checkpoint": "step100", "dataset": "tiny", "dataset_hash": small.content_hash, "n": 6,
        "position": "last", "layers": LAYERS, "dtype": "float32",
    })
    for run in (run_probes, run_mi):
        table, problems = run(workspace, folds=5, progress=False)  # both split as the probes do by default
        assert len(problems) == 1 and "(toy-model step100 tiny)" in problems[0] and "5 fold(s)" in problems[0]
        assert set(table["dataset"]) == {"toy"} and set(table["checkpoint"]) == {"step100", "step300"}


def test_run_mi_and_ungrouped_datasets(tmp_path):
    store = ActivationStore(tmp_path / "ws")
    add_set(store, 200, grouped=False)
    table, problems = run_mi(store, split="paper", progress=False)
    assert problems == [] and len(table) == len(LAYERS)
    assert list(table["layer"]) == LAYERS and (table["n"] == int(N * 0.8)).all()
    assert (table["estimator"] == "nhsic").all() and (table["split"] == "paper").all()
    again, _ = run_mi(store, split="paper", progress=False)
    assert again.equals(table)
    gaussian, _ = run_mi(store, estimator="gaussian", split="grouped", progress=False)
    assert set(gaussian.loc[gaussian["estimator"] == "gaussian", "split"]) == {"random"}  # no groups
    with pytest.raises(LayerError, match="x_layer 1 is stored in no activation set"):
        run_mi(store, x_layer=1, progress=False)
    probes, _ = run_probes(store, folds=2, progress=False)
    assert set(probes["split"]) == {"random"}


def test_one_record_at_a_time_replaces_its_rows(workspace):
    first, second = workspace.records()
    rows = probe_record(workspace, first, split="paper", C=0.5)
    assert len(rows) == len(LAYERS) and (rows["C"] == 0.5).all() and (rows["activation_key"] == first.key).all()
    probe_record(workspace, first, split="paper", C=0.5)
    probe_record(workspace, second, split="paper", C=0.5)
    assert len(read_table(workspace.root / PROBES_TABLE)) == 2 * len(LAYERS)
    plane = mi_record(workspace, second, estimator="hsic", x_layer=2)
    assert list(plane["layer"]) == LAYERS and plane.loc[plane["layer"] == 2, "i_xt"].item() == pytest.approx(1.0)
    table, problems = run_mi(workspace, estimator="hsic", x_layer=2, progress=False)
    assert problems == [] and len(table) == 2 * len(LAYERS)  # only the first set was missing



def test_an_mps_device_runs_the_float64_analysis_on_the_cpu(workspace, monkeypatch):
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)  # as on a Mac
    first, _ = workspace.records()
    on_mps = probe_record(workspace, first, split="paper", device="mps")
    on_cpu = probe_record(workspace, first, split="paper", device="cpu")
    assert on_mps["accuracy"].tolist() == on_cpu["accuracy"].tolist()
    assert len(mi_record(workspace, first, estimator="gaussian", device="mps")) == len(LAYERS)
    from trusttrace.info import information_plane
    from trusttrace.probes import fit_probes

    acts, labels = workspace.load(first), toy_dataset(True).labels  # the Python API, not only the workspace verbs
    assert len(fit_probes(acts, labels, split="paper", device="mps").table) == len(LAYERS)
    assert len(information_plane(acts, labels, estimator="gaussian", device="mps")) == len(LAYERS)

def run_cli(monkeypatch, *args) -> int:
    monkeypatch.setattr(sys, "argv", ["trusttrace", *args])
    with pytest.raises(SystemExit) as exit_info:
        main()
        sys.exit(0)
    return exit_info.value.code


def test_cli_exit_codes(workspace, monkeypatch, capsys):
    root = str(workspace.root)
    assert run_cli(monkeypatch, "probe", root, "--folds", "2") == 0
    assert f"{2 * len(LAYERS)} new probe rows" in capsys.readouterr().out
    assert run_cli(monkeypatch, "probe", root, "--folds", "2") == 0
    assert f"0 new probe rows, {2 * len(LAYERS)} in" in capsys.readouterr().out
    assert run_cli(monkeypatch, "mi", root, "--estimator", "gaussian") == 0
    captured = capsys.readouterr()
    assert f"{2 * len(LAYERS)} new MI rows" in captured.out and "estimator" in captured.err
    assert (workspace.root / MI_TABLE).exists()

    assert run_cli(monkeypatch, "probe", root, "--split", "diagonal") == 2
    assert "unknown split 'diagonal'" in capsys.readouterr().err
    assert run_cli(monkeypatch, "mi", root, "--estimator", "mine") == 2
    assert "unknown estimator 'mine'" in capsys.readouterr().err
    assert run_cli(monkeypatch, "mi", root, "--x-layer", "99") == 2
    assert "x_layer 99 is stored in no activation set" in capsys.readouterr().err
    assert run_cli(monkeypatch, "probe", str(workspace.root / "nowhere")) == 2
    assert run_cli(monkeypatch, "probe", root, "--folds", "1", "--test-size", "1.5") == 2
    assert "'--test-size': 1.5 is not strictly between 0 and 1" in capsys.readouterr().err
    assert run_cli(monkeypatch, "mi", root, "--test-size", "0") == 2
    assert "'--test-size': 0.0 is not strictly between 0 and 1" in capsys.readouterr().err

    broken = add_set(workspace, 900)
    next(broken.path.glob("shard-*.safetensors")).unlink()
    assert run_cli(monkeypatch, "probe", root, "--folds", "2") == 1
    captured = capsys.readouterr()
    assert "warning:" in captured.err and "shard is missing" in captured.err and "1 set(s) skipped" in captured.out


def test_cli_probe_and_mi_take_c_and_the_held_out_share(workspace, monkeypatch, capsys):
    root = str(workspace.root)
    assert run_cli(monkeypatch, "probe", root, "--split", "random", "--folds", "1", "--test-size", "0.5", "--C", "0.25") == 0
    probes = read_table(workspace.root / PROBES_TABLE)
    assert set(probes["C"]) == {0.25} and set(probes["test_size"]) == {0.5} and set(probes["n_test"]) == {N // 2}
    assert run_cli(monkeypatch, "mi", root, "--split", "random", "--folds", "1", "--test-size", "0.5", "--estimator", "gaussian") == 0
    mi = read_table(workspace.root / MI_TABLE)
    assert set(mi["n"]) == {N // 2} and set(mi["test_size"]) == {0.5}  # the probes' training rows
    assert run_cli(monkeypatch, "mi", root, "--split", "random", "--folds", "3", "--estimator", "gaussian") == 0
    mi = read_table(workspace.root / MI_TABLE)
    assert set(mi.loc[mi["folds"] == 3, "n"]) == {N - N // 3}  # the first of three folds trains on two thirds
    capsys.readouterr()


def test_probes_of_another_solver_are_kept_apart_and_older_rows_recognised(workspace):
    stopped, _ = run_probes(workspace, split="paper", backend="sklearn", progress=False)
    both, _ = run_probes(workspace, split="paper", backend="torch", progress=False)  # the optimum: other accuracies
    assert len(both) == 2 * len(stopped) and set(both["solver"]) == {"lbfgs_100", "optimum"}
    path = workspace.root / PROBES_TABLE
    write_table(path, stopped.drop(columns="solver"))  # as 0.7.0 wrote the paper split's `auto` rows
    stamp = path.stat().st_mtime_ns
    again, problems = run_probes(workspace, split="paper", progress=False)
    assert problems == [] and path.stat().st_mtime_ns == stamp and set(again["solver"]) == {"lbfgs_100"}
    probe_record(workspace, workspace.records()[0], split="paper")  # one set again: its rows replaced, not doubled
    assert len(read_table(path)) == len(stopped)


def test_mi_rows_of_an_older_table_are_recognised_not_recomputed(workspace):
    run_mi(workspace, estimator="gaussian", split="paper", progress=False)  # 0.2.0's default split
    path = workspace.root / MI_TABLE
    write_table(path, read_table(path).drop(columns=["folds", "test_size"]))  # as 0.2.0 wrote them
    table, problems = run_mi(workspace, estimator="gaussian", split="paper", progress=False)
    assert problems == [] and len(table) == 2 * len(LAYERS) and set(table["folds"]) == {1}
    mi_record(workspace, workspace.records()[0], estimator="gaussian", split="paper")  # one set again: its rows replaced
    assert len(read_table(path)) == 2 * len(LAYERS) and read_table(path)["folds"].notna().all()


def test_mi_on_a_subsample_keeps_both_and_sets_too_large_for_memory_are_one_error(workspace, monkeypatch, capsys):
    table, problems = run_mi(workspace, estimator="nhsic", progress=False)
    assert problems == [] and set(table["mi_max_rows"]) == {0}
    table, _ = run_mi(workspace, estimator="nhsic", max_rows=12, progress=False)
    assert sorted(table["mi_max_rows"].unique()) == [0, 12] and set(table.query("mi_max_rows == 12")["n"]) == {12}
    record = workspace.records()[0]
    again = mi_record(workspace, record, max_rows=12)  # seeded: the same rows, the same values
    assert again["i_xt"].tolist() == table.query(f"mi_max_rows == 12 and activation_key == '{record.key}'")["i_xt"].tolist()

    import trusttrace.info as info

    monkeypatch.setattr(info, "free_memory", lambda device: 1000)
    (workspace.root / MI_TABLE).unlink()
    assert run_cli(monkeypatch, "mi", str(workspace.root)) == 2  # too large for every set: the options' fault, one error
    captured = capsys.readouterr()
    assert captured.err.count("rows needs about") == 1 and "--max-rows" in captured.err and "Traceback" not in captured.err
    assert "the options fit none of the 2 activation set(s)" in captured.err
    with pytest.raises(ProbeError, match="max_rows 2 must be a whole number of at least 3"):
        run_mi(workspace, max_rows=2, progress=False)


def test_information_plane_subsample_is_stratified_and_seeded():
    from trusttrace.info import subsample_rows

    labels = np.array([0] * 30 + [1] * 10)
    rows = subsample_rows(np.arange(40), labels, 20, seed=0)
    assert len(rows) == 20 and labels[rows].sum() == 5 and list(rows) == sorted(rows)
    assert list(rows) == list(subsample_rows(np.arange(40), labels, 20, seed=0))
    assert list(rows) != list(subsample_rows(np.arange(40), labels, 20, seed=1))
    assert list(subsample_rows(np.arange(10), labels, 20, seed=0)) == list(range(10))
    assert len(subsample_rows(np.arange(40), labels, 39, seed=0)) == 39  # one row left out: a split of 39/1
    lonely = np.array([0] * 40 + [1])  # a class of one row
    assert len(subsample_rows(np.arange(41), lonely, 20, seed=0)) == 20


def test_probes_fitted_a_chunk_of_layers_at_a_time_equal_one_fit_of_all(workspace, monkeypatch):
    import trusttrace.analysis as analysis

    record = workspace.records()[0]
    whole = probe_record(workspace, record, folds=3).sort_values("layer").reset_index(drop=True)
    fits = []
    original = probes.bag_of_words_scores
    monkeypatch.setattr(probes, "bag_of_words_scores", lambda *args: fits.append(1) or original(*args))
    (workspace.root / BASELINES_TABLE).unlink()
    monkeypatch.setattr(analysis, "LAYER_CHUNK_BYTES", 2 * workspace.layer_bytes(record))  # two layers a chunk
    assert analysis.layer_chunks(record.layers, workspace.layer_bytes(record)) == [LAYERS[i : i + 2] for i in range(0, len(LAYERS), 2)]
    chunked = probe_record(workspace, record, folds=3).sort_values("layer").reset_index(drop=True)
    assert len(fits) == 3  # the baselines once (per fold), not once per chunk
    assert chunked["layer"].tolist() == whole["layer"].tolist()
    np.testing.assert_allclose(chunked["accuracy"], whole["accuracy"], atol=1e-12)
    np.testing.assert_allclose(chunked["auroc"], whole["auroc"], atol=1e-6)


def test_probes_hash_each_shard_once_however_many_chunks_they_read(workspace, monkeypatch):
    import trusttrace.analysis as analysis
    import trusttrace.store as store_module

    record = workspace.records()[0]
    hashed = []
    original = store_module.sha256_file
    monkeypatch.setattr(store_module, "sha256_file", lambda path: hashed.append(path.name) or original(path))
    monkeypatch.setattr(analysis, "LAYER_CHUNK_BYTES", workspace.layer_bytes(record))  # one layer a chunk
    probe_record(workspace, record, folds=2)
    assert sorted(hashed) == sorted(p.name for p in record.path.glob("shard-*"))


@pytest.mark.parametrize("estimator", ["nhsic", "hsic", "gaussian", "ksg"])
def test_mi_read_a_chunk_of_layers_at_a_time_equals_one_read_of_all(workspace, monkeypatch, estimator):
    import trusttrace.analysis as analysis

    record = workspace.records()[0]
    whole = mi_record(workspace, record, estimator=estimator, x_layer=4, folds=3)
    monkeypatch.setattr(analysis, "LAYER_CHUNK_BYTES", workspace.layer_bytes(record))  # X (layer 4) in the last chunk only
    chunked = mi_record(workspace, record, estimator=estimator, x_layer=4, folds=3)
    assert chunked["layer"].tolist() == LAYERS
    columns = ["i_xt", "i_ty", "i_ty_shuffled"]
    np.testing.assert_allclose(chunked[columns].to_numpy(), whole[columns].to_numpy(), rtol=1e-12)


def test_mi_in_chunks_computes_x_y_and_shuffled_y_once_and_each_layer_once(workspace, monkeypatch):
    import trusttrace.analysis as analysis
    import trusttrace.info as info

    record = workspace.records()[0]
    operators = []
    original = info.nhsic_operator
    monkeypatch.setattr(info, "nhsic_operator", lambda x: operators.append(x.shape[:-2].numel()) or original(x))
    monkeypatch.setattr(analysis, "LAYER_CHUNK_BYTES", workspace.layer_bytes(record))  # one layer a chunk
    mi_record(workspace, record, estimator="nhsic", x_layer=4, folds=3)
    assert sum(operators) == len(LAYERS) + 3  # every layer T, then X, Y and shuffled Y once for all chunks


def test_options_that_fit_no_set_are_one_error_not_a_skip_per_set(workspace):
    for run in (run_probes, run_mi):
        with pytest.raises(ProbeError, match=r"500 fold\(s\).*\(the options fit none of the \d+ activation set\(s\)\)"):
            run(workspace, folds=500, progress=False)
