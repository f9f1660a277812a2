"""Bad command-line input: one line naming the option and value, exit code 2, no traceback, nothing written.

The CLI runs in-process (`main()` with a patched argv), so each case costs no interpreter start.
"""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path

import pandas as pd
import pytest
import torch

from conftest import CORPUS
from trusttrace.cli import main
from trusttrace.cli.app import app
from trusttrace.cli.options import check_device, check_output
from trusttrace.data import load_dataset
from trusttrace.errors import EvaluationError, TrustTraceError
from trusttrace.evaluation import evaluate
from trusttrace.provenance import trusttrace_version
from trusttrace.store import ActivationStore
from trusttrace.extract_stage import extract_to_store


def run_cli(monkeypatch, capsys, *args) -> tuple[int, str, str]:
    """Run `trusttrace ARGS` in-process; its exit code, stdout and stderr."""
    monkeypatch.setattr(sys, "argv", ["trusttrace", *map(str, args)])
    capsys.readouterr()  # drop what fixtures printed (model saving shows a progress bar)
    with pytest.raises(SystemExit) as exited:
        main()
    captured = capsys.readouterr()
    return exited.value.code or 0, captured.out, captured.err


def assert_refused(result: tuple[int, str, str], *fragments: str) -> None:
    """Exit code 2, no traceback, and every fragment in the error output."""
    code, _, err = result
    assert code == 2, err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in err, err


def assert_one_line(result: tuple[int, str, str], message: str) -> None:
    """A package error: exit code 2 and exactly one line, `error: ...`, holding `message`."""
    assert_refused(result, message)
    err = result[2]
    assert err.count("\n") == 1 and err.startswith("error: "), err


@pytest.fixture(scope="module")
def csv_dataset(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("data") / "toy.csv"
    pd.DataFrame({"statement": CORPUS[:40], "label": [i % 2 for i in range(40)]}).to_csv(path, index=False)
    return path


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, model_factory, tokenizer, csv_dataset) -> Path:
    """A workspace holding the toy dataset's activations (layers 1 and 2) of checkpoint step7."""
    root = tmp_path_factory.mktemp("ws") / "ws"
    extract_to_store(model_factory("llama"), tokenizer, load_dataset(csv_dataset), ActivationStore(root), layers=[1, 2], checkpoint="step7")
    return root


@pytest.fixture()
def no_cuda(monkeypatch):
    """Make this machine look CPU-only, whatever it has."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)


# ----- --device --------------------------------------------------------------------------------


def test_check_device_accepts_usable_devices_and_none():
    assert check_device(None) is None
    assert check_device("cpu") == "cpu" and check_device("cpu:0") == "cpu:0"


@pytest.mark.parametrize(
    ("device", "message"),
    [("bogus", "--device 'bogus': not a device"), ("cuda", "--device 'cuda': CUDA is not available"),
     ("cuda:1", "--device 'cuda:1': CUDA is not available"), ("meta", "unsupported device type 'meta'")],
)
def test_check_device_refuses_unusable_devices(no_cuda, device, message):
    with pytest.raises(TrustTraceError, match=message):
        check_device(device)


def test_check_device_refuses_a_missing_cuda_index(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(TrustTraceError, match=r"only 1 CUDA device\(s\)"):
        check_device("cuda:1")


@pytest.mark.parametrize("device", ["bogus", "cuda"])
def test_every_verb_with_device_refuses_it_up_front(no_cuda, device, tmp_path, saved_model, csv_dataset, workspace, monkeypatch, capsys):
    model = saved_model("llama")
    out = tmp_path / "new-ws"
    verbs = [
        ["extract", "-m", model, "-d", csv_dataset, "-o", out],
        ["probe", workspace],  # also when every set is already probed: the check comes first
        ["mi", workspace],
        ["evaluate", "-m", model, "-t", "binary", "-d", csv_dataset, "-o", out],
    ]
    for verb in verbs:
        assert_one_line(run_cli(monkeypatch, capsys, *verb, "--device", device), f"--device '{device}'")
    assert not out.exists()


# ----- integer ranges ----------------------------------------------------------------------------

def test_a_warning_is_one_line_without_the_source_code(tmp_path, saved_model, monkeypatch, capsys):
    repeats = tmp_path / "repeats.csv"
    pd.DataFrame({"statement": [*CORPUS[:20], CORPUS[0]], "label": [i % 2 for i in range(21)]}).to_csv(repeats, index=False)
    with warnings.catch_warnings():
        code, _, err = run_cli(monkeypatch, capsys, "extract", "-m", saved_model("llama"), "-d", repeats, "-o", tmp_path / "ws")
    assert code == 0
    lines = [line for line in err.splitlines() if "repeat an earlier statement" in line]
    assert len(lines) == 1 and lines[0].startswith(f"warning: {repeats}: 1 row(s) repeat") and ".py:" not in err



@pytest.mark.parametrize("value", ["0", "-3"])
def test_batch_size_must_be_positive(value, tmp_path, saved_model, csv_dataset, monkeypatch, capsys):
    model, out = saved_model("llama"), tmp_path / "ws"
    assert_refused(run_cli(monkeypatch, capsys, "extract", "-m", model, "-d", csv_dataset, "-o", out, "--batch-size", value), "--batch-size")
    assert_refused(run_cli(monkeypatch, capsys, "evaluate", "-m", model, "-t", "binary", "-d", csv_dataset, "--batch-size", value), "--batch-size")
    assert not out.exists()


@pytest.mark.parametrize("value", ["0", "-5"])
def test_evaluate_limit_must_be_positive(value, saved_model, csv_dataset, monkeypatch, capsys):
    args = ["evaluate", "-m", saved_model("llama"), "-t", "binary", "-d", csv_dataset, "--limit", value]
    assert_refused(run_cli(monkeypatch, capsys, *args), "--limit")


@pytest.mark.parametrize("limit", [0, -5])
def test_evaluate_function_refuses_a_limit_below_one(limit, model_factory, tokenizer, csv_dataset):
    with pytest.raises(EvaluationError, match=f"limit {limit} must be at least 1"):
        evaluate(model_factory("llama"), tokenizer, "binary", csv_dataset, limit=limit)


@pytest.mark.parametrize("verb", ["probe", "mi", "steer", "evaluate", "demo"])
def test_seeds_must_not_be_negative(verb, tmp_path, workspace, saved_model, csv_dataset, monkeypatch, capsys):
    args = {
        "probe": ["probe", workspace], "mi": ["mi", workspace],
        "steer": ["steer", workspace, "-c", "step7", "-d", "toy", "--layers", "1"],
        "evaluate": ["evaluate", "-m", saved_model("llama"), "-t", "binary", "-d", csv_dataset],
        "demo": ["demo", "-o", tmp_path / "demo"],
    }[verb]
    assert_refused(run_cli(monkeypatch, capsys, *args, "--seed", "-1"), "--seed")
    assert not (tmp_path / "demo").exists()


@pytest.mark.parametrize(
    ("verb", "option", "value"),
    [
        ("probe", "--folds", "0"), ("mi", "--folds", "0"),
        ("probe", "--test-size", "0"), ("probe", "--test-size", "1"), ("mi", "--test-size", "1.5"),
        ("probe", "--C", "0"), ("probe", "--C", "-1"), ("probe", "--C", "nan"), ("probe", "--C", "inf"),
        ("mi", "--x-layer", "-1"),
    ],
)
def test_split_and_probe_settings_are_refused_by_their_flag(verb, option, value, workspace, monkeypatch, capsys):
    before = sorted(path.name for path in workspace.iterdir())
    assert_refused(run_cli(monkeypatch, capsys, verb, workspace, option, value), f"'{option}'")
    assert sorted(path.name for path in workspace.iterdir()) == before


@pytest.mark.parametrize("verb", ["steer", "report", "evaluate"])
def test_stored_layers_are_named_by_block_number(verb, tmp_path, workspace, saved_model, csv_dataset, monkeypatch, capsys):
    args = {
        "steer": ["steer", workspace, "-c", "step7", "-d", "toy", "--layers", "-1"],
        "report": ["report", workspace, "--out", tmp_path / "report", "--layers", "-1"],
        "evaluate": ["evaluate", "-m", saved_model("llama"), "-t", "binary", "-d", csv_dataset, "--vectors", csv_dataset, "--layer", "-1"],
    }[verb]
    option = "--layer" if verb == "evaluate" else "--layers"
    assert_one_line(run_cli(monkeypatch, capsys, *args), f"{option} '-1': name stored layers by block number, from 0")
    assert not (tmp_path / "report").exists() and not (workspace / "steering").exists()


# ----- evaluate's steering options -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("option", "named"),
    [
        (["--layer", "2"], "--layer"),
        (["--alpha", "4"], "--alpha"),
        (["--layer", "2", "--alpha", "1,2"], "--layer, --alpha"),
        (["--positions", "all"], "--positions"),
        (["--max-perplexity", "8"], "--max-perplexity"),
        (["--max-kl", "0.5"], "--max-kl"),
    ],
)
def test_evaluate_steering_options_need_vectors(option, named, tmp_path, csv_dataset, monkeypatch, capsys):
    args = ["evaluate", "-m", tmp_path / "never-loaded", "-t", "binary", "-d", csv_dataset, "-o", tmp_path / "out", *option]
    assert_one_line(run_cli(monkeypatch, capsys, *args), f"{named} steer(s) nothing without --vectors")
    assert not (tmp_path / "out").exists()


# ----- output paths, checked before the work -------------------------------------------------------


def test_output_paths_are_checked_before_any_work(tmp_path, csv_dataset, workspace, monkeypatch, capsys):
    never = tmp_path / "never-loaded"  # loading it would fail: the output check must come first
    before = sorted(workspace.rglob("*"))
    args = ["evaluate", "-m", never, "-t", "binary", "-d", csv_dataset, "-o", csv_dataset]
    assert_one_line(run_cli(monkeypatch, capsys, *args), f"--out {csv_dataset}: exists and is not a folder")
    assert_one_line(run_cli(monkeypatch, capsys, "report", workspace, "--out", csv_dataset), f"--out {csv_dataset}: exists and is not a folder")
    steer = ["steer", workspace, "-c", "step7", "-d", "toy", "--layers", "1"]
    assert_one_line(run_cli(monkeypatch, capsys, *steer, "-o", tmp_path), f"--out {tmp_path}: is a folder")
    inside_a_file = csv_dataset / "v.safetensors"
    assert_one_line(run_cli(monkeypatch, capsys, *steer, "-o", inside_a_file), f"{csv_dataset} is a file, not a folder")
    export = ["--export-lm-eval", tmp_path, "--alpha", "2"]
    assert_one_line(run_cli(monkeypatch, capsys, *steer, *export), f"--export-lm-eval {tmp_path}: is a folder")
    assert_one_line(run_cli(monkeypatch, capsys, "extract", "-m", never, "-d", csv_dataset, "-o", csv_dataset), "exists and is not a folder")
    assert sorted(workspace.rglob("*")) == before


def test_extract_will_not_turn_a_folder_of_other_files_into_a_workspace(tmp_path, saved_model, csv_dataset, monkeypatch, capsys):
    model = saved_model("llama")
    before = sorted(model.iterdir())
    assert_one_line(run_cli(monkeypatch, capsys, "extract", "-m", model, "-d", csv_dataset, "-o", model),
                    "is not a trusttrace workspace; choose a new or empty folder")
    assert sorted(model.iterdir()) == before
    empty = tmp_path / "empty"
    empty.mkdir()
    assert run_cli(monkeypatch, capsys, "extract", "-m", model, "-d", csv_dataset, "-o", empty)[0] == 0
    assert run_cli(monkeypatch, capsys, "extract", "-m", model, "-d", csv_dataset, "-o", empty)[0] == 0  # a workspace now


def test_a_path_of_the_wrong_kind_is_named_as_such(tmp_path, csv_dataset, saved_model, monkeypatch, capsys):
    folder = tmp_path / "a-folder"
    folder.mkdir()
    model = saved_model("llama")
    assert_one_line(run_cli(monkeypatch, capsys, "probe", csv_dataset), f"{csv_dataset}: a file, not a workspace folder")
    assert_one_line(run_cli(monkeypatch, capsys, "evaluate", "-m", tmp_path / "never-loaded", "-t", "binary", "-d", csv_dataset,
                            "--vectors", folder), f"{folder}: a folder, not a vector file")
    assert_one_line(run_cli(monkeypatch, capsys, "extract", "-m", model, "-d", folder, "-o", tmp_path / "ws"),
                    f"{folder}: a folder, not a dataset file")
    assert_one_line(run_cli(monkeypatch, capsys, "extract", "-m", folder, "-d", csv_dataset, "-o", tmp_path / "ws"),
                    f"{folder}: a folder without config.json, so not a saved model")


def test_check_output_accepts_new_and_existing_paths_of_the_right_kind(tmp_path):
    assert check_output(None, "--out", folder=True) is None
    assert check_output(tmp_path, "--out", folder=True) == tmp_path
    assert check_output(tmp_path / "a" / "b.safetensors", "--out", folder=False) == tmp_path / "a" / "b.safetensors"
    assert list(tmp_path.iterdir()) == []  # checked by making a folder there, and removing it


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux's /proc, where no folder can be made")
def test_an_output_folder_that_cannot_be_made_is_refused_before_any_work():
    with pytest.raises(TrustTraceError, match="--out /proc/trusttrace/report: cannot write in /proc"):
        check_output(Path("/proc/trusttrace/report"), "--out", folder=True)


# ----- nothing created by bad input --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [(["--position", "bogus"], "unknown position 'bogus'"), (["--layers", "99"], "layer 99 is out of range"),
     (["--layers", ","], "--layers ',': name at least one layer")],
)
def test_extract_bad_input_creates_no_workspace(args, message, tmp_path, saved_model, csv_dataset, monkeypatch, capsys):
    out = tmp_path / "wsx"
    assert_one_line(run_cli(monkeypatch, capsys, "extract", "-m", saved_model("llama"), "-d", csv_dataset, "-o", out, *args), message)
    assert not out.exists()


def test_steer_refuses_a_missing_workspace_without_creating_it(tmp_path, monkeypatch, capsys):
    missing = tmp_path / "nonexistent_ws"
    assert_one_line(run_cli(monkeypatch, capsys, "steer", missing, "-c", "step7", "-d", "toy", "--layers", "1"), f"{missing}: no such workspace folder")
    assert not missing.exists()



@pytest.mark.parametrize("verb", [["probe"], ["mi"], ["steer", "-c", "step7", "-d", "toy", "--layers", "1"]])
def test_a_folder_that_is_not_a_workspace_or_is_empty_is_refused_and_left_alone(verb, tmp_path, monkeypatch, capsys):
    runs = tmp_path / "runs"
    (runs / "one").mkdir(parents=True)
    assert_one_line(run_cli(monkeypatch, capsys, verb[0], runs, *verb[1:]), f"{runs}: not a trusttrace workspace")
    assert sorted(path.name for path in runs.iterdir()) == ["one"]
    ActivationStore(tmp_path / "empty")
    assert_one_line(run_cli(monkeypatch, capsys, verb[0], tmp_path / "empty", *verb[1:]), "no activation sets yet")

# ----- steer's default file names --------------------------------------------------------------------


def test_steer_default_names_keep_layers_and_seeds_apart(workspace, monkeypatch, capsys):
    steer = ["steer", workspace, "-c", "step7", "-d", "toy"]
    for extra in (["--layers", "1"], ["--layers", "2"], ["--layers", "2", "--seed", "1"], ["--layers", "2,1"], ["--layers", "1"]):
        code, _, err = run_cli(monkeypatch, capsys, *steer, *extra)
        assert code == 0, err
    names = {path.name for path in (workspace / "steering").iterdir()}
    key = ActivationStore(workspace).records()[0].key[:8]
    assert names == {
        f"toy__step7__default-std__{choice}__{key}.safetensors" for choice in ("L1__seed0", "L1_2__seed0", "L2__seed0", "L2__seed1")
    }


# ----- evaluate's settings.json ---------------------------------------------------------------------


def test_evaluate_settings_record_version_and_time(tmp_path, saved_model, csv_dataset, monkeypatch, capsys):
    args = ["evaluate", "-m", saved_model("llama"), "-t", "binary", "-d", csv_dataset, "--limit", "2", "-o", tmp_path / "out"]
    code, _, err = run_cli(monkeypatch, capsys, *args)
    assert code == 0, err
    settings = json.loads((tmp_path / "out" / "settings.json").read_text())
    assert settings["trusttrace_version"] == trusttrace_version() and settings["created"].endswith("+00:00")


# ----- the top-level command -----------------------------------------------------------------------


def test_version_and_examples(monkeypatch, capsys):
    code, out, _ = run_cli(monkeypatch, capsys, "--version")
    assert code == 0 and out == f"trusttrace {trusttrace_version()}\n"
    code, out, _ = run_cli(monkeypatch, capsys, "--help")
    assert code == 0 and "--version" in out and "Examples" in out and "trusttrace extract -m" in out


def test_every_command_summary_is_one_line():
    """The first paragraph of a command's help is its line in `trusttrace --help`: no hard breaks in it."""
    for command in app.registered_commands:
        text = command.help or command.callback.__doc__
        assert "\n" not in text.strip().split("\n\n")[0], command.callback.__name__


# ----- --data-dir ------------------------------------------------------------------------------------


def test_a_missing_data_dir_is_an_error(tmp_path, monkeypatch, capsys):
    missing = tmp_path / "nonexistent"
    assert_one_line(run_cli(monkeypatch, capsys, "datasets", "stereoset", "--data-dir", missing), f"--data-dir {missing}")
    monkeypatch.setenv("TRUSTTRACE_DATA", str(missing))
    assert_one_line(run_cli(monkeypatch, capsys, "datasets"), f"--data-dir {missing} (or $TRUSTTRACE_DATA): no such folder")


def test_paths_that_are_files_are_named_as_files(tmp_path, csv_dataset, monkeypatch, capsys):
    assert_one_line(run_cli(monkeypatch, capsys, "report", csv_dataset), f"{csv_dataset}: a file, not a workspace folder")
    assert_one_line(run_cli(monkeypatch, capsys, "datasets", "--data-dir", csv_dataset), f"--data-dir {csv_dataset} (or $TRUSTTRACE_DATA): a file, not a folder")


def test_report_checks_its_default_folder_before_any_work(tmp_path, monkeypatch, capsys):
    ws = tmp_path / "ws"
    ActivationStore(ws)
    (ws / "report").write_text("not a folder")
    assert_one_line(run_cli(monkeypatch, capsys, "report", ws), f"the report folder (no --out given) {ws / 'report'}: exists and is not a folder")


@pytest.mark.parametrize("marker", ["[]", '"x"', "null"])
def test_a_workspace_marker_that_is_not_an_object_is_one_clear_error(marker, tmp_path, monkeypatch, capsys):
    ws = tmp_path / "ws"
    ActivationStore(ws)
    (ws / "trusttrace-workspace.json").write_text(marker)
    for verb in (["probe"], ["report"]):
        assert_one_line(run_cli(monkeypatch, capsys, verb[0], ws), "unreadable workspace marker")


def test_a_workspace_that_cannot_be_locked_is_one_clear_error(tmp_path, workspace, monkeypatch, capsys):
    import shutil

    ws = shutil.copytree(workspace, tmp_path / "ws")
    (ws / ".lock").unlink(missing_ok=True)
    (ws / ".lock").mkdir()  # as unopenable as a read-only workspace's lock, even for root
    assert_one_line(run_cli(monkeypatch, capsys, "probe", ws), f"{ws}: cannot lock the workspace")


def test_non_finite_or_nonsense_numbers_are_refused_up_front(tmp_path, workspace, csv_dataset, monkeypatch, capsys):
    export = ["steer", workspace, "-c", "step7", "-d", "toy", "--layers", "1", "--export-lm-eval", tmp_path / "x.pt"]
    for alpha in ("nan", "inf"):
        assert_one_line(run_cli(monkeypatch, capsys, *export, "--alpha", alpha), f"--alpha {alpha}: expected a finite number")
    assert not (tmp_path / "x.pt").exists()
    args = ["evaluate", "-m", tmp_path / "never-loaded", "-t", "binary", "-d", csv_dataset, "--max-new-tokens", "-3"]
    assert_refused(run_cli(monkeypatch, capsys, *args), "--max-new-tokens")


def test_the_evaluate_function_stays_the_function_whatever_is_imported_first():
    """A sweep imports the evaluation package before anyone calls tt.evaluate: the name must not become a module."""
    import subprocess

    code = ("import inspect, trusttrace as tt, trusttrace.evaluation.grid, trusttrace.steering_stage\n"
            "assert inspect.isfunction(tt.evaluate) and tt.evaluate.__name__ == 'evaluate', tt.evaluate")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr


def test_ctrl_c_while_the_cli_loads_exits_130_without_a_traceback(monkeypatch):
    """The console script imports the CLI inside trusttrace.__main__.main, which turns an
    interrupt during that import into exit code 130."""
    import importlib.abc

    from trusttrace.__main__ import main as console_main

    class Interrupting(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name == "trusttrace.cli":
                raise KeyboardInterrupt
            return None

    monkeypatch.delitem(sys.modules, "trusttrace.cli")
    monkeypatch.setattr(sys, "meta_path", [Interrupting(), *sys.meta_path])
    with pytest.raises(SystemExit) as exit_info:
        console_main()
    assert exit_info.value.code == 130
