"""Checkpoint suites: the known suites, selection specs, OLMo branch parsing, local folders, the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from typer.testing import CliRunner

from trusttrace import checkpoints
from trusttrace.checkpoints import Checkpoint, CheckpointSuite, checkpoint_suite, list_suites, local_step, parse_olmo_branch
from trusttrace.cli.app import app
from trusttrace.errors import CheckpointError, OfflineError


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


# ----- the published suites -------------------------------------------------------------


def test_pythia_has_154_revisions_with_tokens_from_steps():
    suite = checkpoint_suite("pythia-70m")
    assert len(suite) == 154 and suite.model_id == "EleutherAI/pythia-70m"
    steps = [checkpoint.step for checkpoint in suite.checkpoints]
    assert steps[:12] == [0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1000]
    assert steps[-1] == 143000 and steps == sorted(set(steps))
    assert all(checkpoint.revision == checkpoint.name == f"step{checkpoint.step}" for checkpoint in suite.checkpoints)
    assert suite.get("step1000").tokens == 1000 * 2_097_152
    deduped = checkpoint_suite("pythia-12b-deduped")
    assert deduped.model_id == "EleutherAI/pythia-12b-deduped" and len(deduped) == 154


def test_every_pythia_size_and_variant_is_listed():
    names = list_suites()
    for size in ("14m", "31m", "70m", "160m", "410m", "1b", "1.4b", "2.8b", "6.9b", "12b"):
        assert f"pythia-{size}" in names and f"pythia-{size}-deduped" in names
    assert {"amber", "olmo-7b", "olmo-1b"} <= set(names)


def test_amber_has_360_checkpoints_over_1_26t_tokens():
    suite = checkpoint_suite("amber")
    assert len(suite) == 360 and suite.names()[0] == "ckpt_000" and suite.names()[-1] == "ckpt_359"
    assert suite.checkpoints[-1].tokens == 1_259_130_000_000
    assert round(suite.checkpoints[0].tokens / 1e9, 2) == 3.50
    tokens = [checkpoint.tokens for checkpoint in suite.checkpoints]
    assert tokens == sorted(tokens) and all(checkpoint.step is None for checkpoint in suite.checkpoints)
    assert suite.targets == {"chat": "LLM360/AmberChat", "safe": "LLM360/AmberSafe"}


@pytest.mark.parametrize("name", ["gpt2", "pythia-13m", "pythia-70m-foo", "olmo-3b"])
def test_unknown_suite_lists_the_known_ones(name):
    with pytest.raises(CheckpointError, match=f"unknown suite '{name}'; known: amber, pythia-14m, .*olmo-7b.*local:DIR"):
        checkpoint_suite(name)


# ----- selection --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pythia() -> CheckpointSuite:
    return checkpoint_suite("pythia-160m")


def test_log_selection_is_sorted_unique_and_spans_the_run(pythia):
    chosen = pythia.select("log:10")
    steps = [checkpoint.step for checkpoint in chosen]
    assert len(chosen) == 10 and steps == sorted(set(steps))
    assert steps[0] == 0 and steps[-1] == 143000
    assert steps == [0, 2, 16, 64, 256, 1000, 3000, 10000, 38000, 143000]
    for count in (2, 5, 30, 100, 153, 154, 500):
        steps = [checkpoint.step for checkpoint in pythia.select(f"log:{count}")]
        assert len(steps) == min(count, 154) and steps == sorted(set(steps))
        assert steps[0] == 0 and steps[-1] == 143000


def test_log_selection_without_steps_spaces_positions():
    amber = checkpoint_suite("amber")
    assert amber.select("log:5") == [amber.get(name) for name in ("ckpt_000", "ckpt_003", "ckpt_018", "ckpt_082", "ckpt_359")]


def test_every_first_all_and_names(pythia):
    assert [c.step for c in pythia.select("every:50")] == [0, 40000, 90000, 140000, 143000]
    assert pythia.select("every:1") == pythia.checkpoints == pythia.select("all")
    assert [c.name for c in pythia.select("first:3")] == ["step0", "step1", "step2"]
    assert [c.name for c in pythia.select(["step2000", "step0", "step2000"])] == ["step0", "step2000"]
    assert [c.name for c in pythia.select("step512, step1")] == ["step1", "step512"]
    assert pythia.select("step4") == [pythia.get("step4")]


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("log:0", "bad selection 'log:0': '0' is not a positive whole number"),
        ("every:x", "bad selection 'every:x': 'x' is not a positive whole number"),
        ("first:-2", "bad selection 'first:-2'"),
        ("last:3", "bad selection 'last:3': use a name, a comma-separated list"),
        ("", "empty selection"),
        ([], "empty selection"),
        ("step1001", "suite pythia-160m has no checkpoint 'step1001'; did you mean step1000"),
        (["step0", "main"], "has no checkpoint 'main'"),
        ([1000], "checkpoint 1000 is not a name; names are text, e.g. 'step0'"),
        (1000, "selection 1000 is neither text nor a list of names"),
    ],
)
def test_bad_selections_raise_checkpoint_errors(pythia, spec, message):
    with pytest.raises(CheckpointError, match=message):
        pythia.select(spec)


def test_names_in_a_list_are_stripped_as_in_a_string(pythia):
    import numpy as np

    assert pythia.select(["step1000 ", " step0"]) == pythia.select("step1000 , step0")
    expected = pythia.select(["step0", "step1000"])
    for names in ({"step0", "step1000"}, np.array(["step0", "step1000"]), (name for name in ["step0", "step1000"])):
        assert pythia.select(names) == expected  # any iterable of names


# ----- OLMo -----------------------------------------------------------------------------


def test_parse_olmo_branch_names():
    assert parse_olmo_branch("step1000-tokens4B") == (1000, 4 * 10**9)
    assert parse_olmo_branch("stage1-step738000-tokens3095B") == (738000, 3095 * 10**9)
    assert parse_olmo_branch("stage2-ingredient1-step1000-tokens5B") is None
    assert parse_olmo_branch("main") is None


def test_olmo_suite_lists_and_orders_hub_branches(monkeypatch, hub_online):
    names = ["main", "step20000-tokens84B", "step0-tokens0B", "stage1-step1000-tokens4B", "stage2-ingredient1-step10-tokens1B"]
    branches = [SimpleNamespace(name=name) for name in names]
    monkeypatch.setattr(checkpoints, "list_repo_refs", lambda repo: SimpleNamespace(branches=branches))
    suite = checkpoint_suite("olmo-7b")
    assert [c.name for c in suite.checkpoints] == ["step0-tokens0B", "stage1-step1000-tokens4B", "step20000-tokens84B"]
    assert suite.checkpoints[-1] == Checkpoint("step20000-tokens84B", "allenai/OLMo-7B-hf", "step20000-tokens84B", 20000, 84 * 10**9)
    assert suite.targets["instruct"] == "allenai/OLMo-7B-Instruct-hf"


def test_olmo_offline_raises_without_calling_the_hub(monkeypatch):
    def unreachable(repo):
        raise AssertionError("the Hub must not be called offline")

    monkeypatch.setattr(checkpoints, "list_repo_refs", unreachable)
    with pytest.raises(OfflineError, match="suite olmo-1b: listing the revisions of allenai/OLMo-1B-hf needs the Hugging Face Hub"):
        checkpoint_suite("olmo-1b")


def test_olmo_network_failure_is_an_offline_error(monkeypatch, hub_online):

    def down(repo):
        raise ConnectionError("no route to host")

    monkeypatch.setattr(checkpoints, "list_repo_refs", down)
    with pytest.raises(OfflineError, match=r"cannot be reached \(ConnectionError\)"):
        checkpoint_suite("olmo-7b")


# ----- local folders ----------------------------------------------------------------------


def make_checkpoint(root: Path, name: str, **files: dict) -> Path:
    folder = root / name
    folder.mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    for file_name, content in files.items():
        (folder / f"{file_name}.json").write_text(json.dumps(content))
    return folder


def test_local_suite_orders_folders_by_step_and_reads_tokens(tmp_path):
    make_checkpoint(tmp_path, "step_100", trainer_state={"global_step": 100, "num_input_tokens_seen": 409600})
    make_checkpoint(tmp_path, "checkpoint-2000")
    make_checkpoint(tmp_path, "ckpt_005", trusttrace={"tokens": 20480})
    make_checkpoint(tmp_path, "step20")
    (tmp_path / "logs").mkdir()
    (tmp_path / "notes.txt").write_text("not a checkpoint")
    suite = checkpoint_suite(f"local:{tmp_path}")
    assert suite.names() == ["ckpt_005", "step20", "step_100", "checkpoint-2000"]
    assert [c.step for c in suite.checkpoints] == [5, 20, 100, 2000]
    assert [c.tokens for c in suite.checkpoints] == [20480, None, 409600, None]
    assert all(c.revision is None and Path(c.model_id) == (tmp_path / c.name).resolve() for c in suite.checkpoints)
    assert [c.name for c in suite.select("log:3")] == ["ckpt_005", "step_100", "checkpoint-2000"]



@pytest.mark.parametrize(
    ("name", "step"),
    [
        ("checkpoint_7b_step1000", 1000), ("epoch=1-step=500", 500), ("ckpt_10_step_20", 20), ("iter_0001000", 1000),
        ("global_step120", 120), ("model-500", 500), ("checkpoint-1e3", None), ("pretrain_step_100k", None),
        ("run-1-500", None),
    ],
)
def test_the_step_in_a_folder_name_is_the_one_after_step_and_a_whole_number(name, step):
    assert local_step(name) == step


def test_a_trainer_that_did_not_count_tokens_leaves_them_unknown(tmp_path):
    make_checkpoint(tmp_path, "checkpoint-0", trainer_state={"global_step": 0, "num_input_tokens_seen": 0})
    make_checkpoint(tmp_path, "checkpoint-500", trainer_state={"global_step": 500, "num_input_tokens_seen": 0})
    suite = checkpoint_suite(f"local:{tmp_path}")
    assert [c.tokens for c in suite.checkpoints] == [0, None]

@pytest.mark.parametrize(
    ("folders", "message"),
    [
        (["step1", "final"], "no step number in folder name\\(s\\) final"),
        (["step_10", "ckpt-10"], "folders ckpt-10 and step_10 share step 10"),
        ([], "no checkpoint folders"),
    ],
)
def test_local_suite_errors_name_the_folders(tmp_path, folders, message):
    for name in folders:
        make_checkpoint(tmp_path, name)
    with pytest.raises(CheckpointError, match=message):
        checkpoint_suite(f"local:{tmp_path}")


def test_local_suite_of_a_missing_folder_or_a_bad_json(tmp_path):
    with pytest.raises(CheckpointError, match="is not a folder"):
        checkpoint_suite(f"local:{tmp_path / 'nowhere'}")
    folder = make_checkpoint(tmp_path, "step1")
    (folder / "trusttrace.json").write_text("{broken")
    with pytest.raises(CheckpointError, match="trusttrace.json: not a JSON object"):
        checkpoint_suite(f"local:{tmp_path}")


def test_local_checkpoints_load_with_load_model(tmp_path):
    from trusttrace.models import load_model
    from trusttrace.tiny import tiny_model, train_tokenizer

    tokenizer = train_tokenizer(["the cat sat on the mat", "a dog ran"], vocab_size=60)
    for step, seed in ((10, 0), (20, 1)):
        model = tiny_model("gpt2", tokenizer.vocab_size, seed, hidden=16, layers=2, heads=2, context=32)
        model.save_pretrained(tmp_path / f"step{step}")
        tokenizer.save_pretrained(tmp_path / f"step{step}")
    suite = checkpoint_suite(f"local:{tmp_path}")
    first, last = (load_model(c.model_id, revision=c.revision, device="cpu")[0] for c in suite.checkpoints)
    assert first.config.n_layer == 2
    assert not all((a == b).all() for a, b in zip(first.parameters(), last.parameters()))


# ----- the CLI ----------------------------------------------------------------------------


def test_cli_suites_lists_suites_and_checkpoints():
    runner = CliRunner()
    listing = runner.invoke(app, ["suites"])
    assert listing.exit_code == 0 and "pythia-1.4b-deduped" in listing.output and "local:DIR" in listing.output
    chosen = runner.invoke(app, ["suites", "pythia-70m", "--select", "log:10"])
    assert chosen.exit_code == 0, chosen.output
    rows = [line.split() for line in chosen.output.splitlines() if line.startswith("step")]
    assert [rows[0][0], rows[-1][0]] == ["step0", "step143000"]
    assert len(rows) == 10 and "10 of 154 checkpoints" in chosen.output
    assert rows[-1][-1] == "299.89B"
    assert "trusttrace suites pythia-70m --select log:10" in runner.invoke(app, ["suites", "--help"]).output


def test_cli_unknown_suite_exits_2_with_one_line():
    command = [sys.executable, "-c", "from trusttrace.cli import main; main()", "suites", "gpt2"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2
    assert done.stderr.strip().startswith("error: unknown suite 'gpt2'") and done.stderr.count("\n") == 1
