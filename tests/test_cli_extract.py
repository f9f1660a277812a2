"""`trusttrace extract` end to end on a local model, and its bad-input exits."""

from __future__ import annotations

import subprocess
import sys
import time

import pandas as pd
import pytest

from trusttrace.store import ActivationStore


def run_cli(*args: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-c", "from trusttrace.cli import main; main()", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=300)


@pytest.fixture()
def csv_dataset(tmp_path, statements):
    path = tmp_path / "toy.csv"
    pd.DataFrame({"statement": statements, "label": [i % 2 for i in range(len(statements))]}).to_csv(path, index=False)
    return path


def test_extract_writes_an_activation_set(tmp_path, saved_model, csv_dataset):
    result = run_cli("extract", "--model", str(saved_model("gpt_neox")), "--dataset", str(csv_dataset),
                     "--out", str(tmp_path / "ws"), "--layers", "0,2", "--dtype", "float32")
    assert result.returncode == 0, result.stderr
    (record,) = ActivationStore(tmp_path / "ws").records()
    assert record.layers == [0, 2] and record.n == 7
    assert record.provenance["dataset"] == "toy" and record.provenance["dtype"] == "float32"
    assert f"toy: 7 statements x 2 layers -> {record.path}" in result.stdout
    time.sleep(1.1)  # `created` is kept to the second
    again = run_cli("extract", "--model", str(saved_model("gpt_neox")), "--dataset", str(csv_dataset),
                    "--out", str(tmp_path / "ws"), "--layers", "0,2", "--dtype", "float32")
    assert again.returncode == 0 and f"toy: 7 statements x 2 layers reused from {record.path}" in again.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--layers", "0,9"], "layer 9 is out of range"),
        (["--layers", "zero"], "--layers 'zero'"),
        (["--layers", ","], "--layers ','"),
        (["--position", "middle"], "unknown position 'middle'"),
        (["--device", "bogus"], "--device 'bogus'"),
    ],
)
def test_bad_input_exits_2_and_writes_nothing(tmp_path, saved_model, csv_dataset, args, message):
    workspace = tmp_path / "ws"
    result = run_cli("extract", "--model", str(saved_model("llama")), "--dataset", str(csv_dataset),
                     "--out", str(workspace), *args)
    assert result.returncode == 2
    assert message in result.stderr and "Traceback" not in result.stderr
    assert not workspace.exists()  # the workspace is created only once every option has been checked


def test_unknown_dataset_and_non_model_folder(tmp_path, csv_dataset):
    result = run_cli("extract", "--model", str(tmp_path), "--dataset", "nonsense", "--out", str(tmp_path / "ws"))
    assert result.returncode == 2 and "unknown dataset 'nonsense'" in result.stderr
    result = run_cli("extract", "--model", str(tmp_path), "--dataset", str(csv_dataset), "--out", str(tmp_path / "ws"))
    assert result.returncode == 2 and str(tmp_path) in result.stderr and "Traceback" not in result.stderr
    empty = tmp_path / "empty"
    empty.mkdir()
    result = run_cli("extract", "--model", str(tmp_path), "--dataset", str(csv_dataset), "--out", str(empty))
    assert result.returncode == 2 and not any(empty.iterdir())  # an empty folder is made a workspace only after the load


def test_a_busy_workspace_is_refused_before_the_model_loads(tmp_path, csv_dataset):
    workspace = tmp_path / "ws"
    with ActivationStore(workspace).locked():
        result = run_cli("extract", "--model", str(tmp_path / "no-such-model"), "--dataset", str(csv_dataset),
                         "--out", str(workspace))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "another trusttrace process is writing" in result.stderr  # not the missing model: the lock came first
