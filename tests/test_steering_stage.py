"""The sweep's steering and evaluate stages: provenance on every row and vector file, and
suites sharing a workspace keep their own vectors and rows."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
import torch

from test_sweep import make_dataset, make_suite, write_config
from trusttrace.config import load_config
from trusttrace.errors import ConfigError
from trusttrace.data import load_dataset
from trusttrace.evaluation.templates import BINARY_TEMPLATES
from trusttrace.manifest import Manifest
from trusttrace.provenance import trusttrace_version
from trusttrace.steering import load_vectors
from trusttrace.evaluation.grid import grid_name
from trusttrace.steering_stage import UNNAMED_TASKS, legacy_grid, task_for
from trusttrace.store import EVALUATE_TABLE, STEERING_TABLE, file_part, write_table
from trusttrace.sweep import run_sweep

STEERING = {"source": "step_0", "layers": [1], "alphas": [2.0], "max_perplexity": None, "max_rows": 4}
EVALUATE = {"tasks": ["sst2"], "max_rows": 4}
TARGET_COLUMNS = ["target_model", "target_model_id", "target_revision", "target_commit", "target_weights_sha256",
                  "target_dtype", "target_tokenizer", "target_tokenizer_sha256"]
RUN_COLUMNS = ["dataset", "dataset_hash", "template", "protocol", "seed", "interval", "trusttrace_version"]
SOURCE_COLUMNS = ["source_model", "source_checkpoint", "source_revision", "source_commit", "source_weights_sha256",
                  "source_position"]
# A local suite's checkpoints have no Hub revision or commit.
LOCAL_NONE = ["target_revision", "target_commit", "source_revision", "source_commit"]


@pytest.fixture()
def setup(tmp_path, tokenizer):
    """Two checkpoints, the 40-row toy dataset, and a data folder whose sst2.csv holds its rows."""
    suite = make_suite(tmp_path, tokenizer, steps=(0, 10))
    dataset = make_dataset(tmp_path)
    data = tmp_path / "data"
    data.mkdir()
    pd.read_csv(dataset)[["statement", "label"]].to_csv(data / "sst2.csv", index=False)
    return tmp_path, suite, dataset, data


def sweep(root: Path, suite: Path, dataset: Path, data: Path, steering: dict = STEERING):
    """Run extract, steering and evaluate on `suite` in the shared workspace `root/ws`; its config."""
    config = load_config(write_config(
        root, suite, dataset, data_dir=str(data), stages=["extract", "steering", "evaluate"],
        steering=steering, evaluate=EVALUATE,
    ))
    summary = run_sweep(config, progress=False)
    assert summary.ok, summary.failed
    return config


def weights_of(workspace: Path, folder: Path) -> str:
    """The weights checksum the sweep recorded for the checkpoint in `folder`."""
    rows = Manifest(workspace / "manifest.sqlite").checkpoints()
    suite = str(folder.parent.resolve())
    return next(row["weights_sha256"] for row in rows if row["model"] == suite and row["name"] == folder.name)


def test_steering_and_evaluate_rows_carry_the_target_and_source_provenance(setup):
    root, suite, dataset, data = setup
    config = sweep(root, suite, dataset, data)
    target, source = suite / "step_10", suite / "step_0"
    toy_hash = load_dataset(dataset).content_hash

    grid = pd.read_parquet(config.workspace / STEERING_TABLE)
    assert len(grid) == 1 + 1  # the baseline, then one layer x one alpha
    known = [c for c in TARGET_COLUMNS + RUN_COLUMNS + SOURCE_COLUMNS if c not in LOCAL_NONE]
    assert grid[known].notna().all().all() and grid[LOCAL_NONE].isna().all().all()
    row = grid.iloc[0]
    assert row["target_model"] == "final" and row["target_model_id"] == str(target.resolve())
    assert row["target_weights_sha256"] == weights_of(config.workspace, target)
    assert row["source_model"] == str(suite.resolve()) and row["source_checkpoint"] == "step_0"
    assert row["source_weights_sha256"] == weights_of(config.workspace, source) != row["target_weights_sha256"]
    assert (row["source_position"], row["target_dtype"], row["dataset_hash"]) == ("last", "float32", toy_hash)
    assert row["template"] == BINARY_TEMPLATES["binary"].text
    assert (row["protocol"], row["seed"], row["trusttrace_version"]) == ("default", 0, trusttrace_version())

    vectors, provenance = load_vectors(config.workspace / row["vector_file"])
    assert list(vectors) == [1]
    assert provenance["template"] == row["template"] and provenance["dataset_hash"] == toy_hash
    assert provenance["weights_sha256"] == row["source_weights_sha256"]

    evaluated = pd.read_parquet(config.workspace / EVALUATE_TABLE)
    assert set(evaluated["task"]) == {"sst2"} and set(evaluated["dataset"]) == {"sst2"}
    targets = [frame[TARGET_COLUMNS].drop_duplicates().to_dict("records") for frame in (evaluated, grid)]
    assert targets[0] == targets[1] and len(targets[0]) == 1
    assert set(evaluated["template"]) == {BINARY_TEMPLATES["sst2"].text}
    assert set(evaluated["dataset_hash"]) == {load_dataset("sst2", data_dir=data).content_hash}
    assert set(evaluated["trusttrace_version"]) == {trusttrace_version()}

    from trusttrace.report import write_report

    page = write_report(config.workspace).read_text()  # the evaluations reach the report
    evaluations = page.split("<h2>Trust evaluations</h2>")[1].split("<h2>")[0]
    assert "target model final" in evaluations and "predicted_1_rate" in evaluations and "No trust evaluations" not in evaluations


def test_evaluate_units_follow_their_task_and_its_data_not_the_task_list(setup):
    root, suite, dataset, data = setup
    pd.read_csv(data / "sst2.csv").to_csv(data / "confaide.csv", index=False)

    def evaluate(tasks: list[str]):
        config = load_config(write_config(
            root, suite, dataset, data_dir=str(data), stages=["evaluate"], evaluate={"tasks": tasks, "max_rows": 4},
        ))
        return run_sweep(config, progress=False)

    assert evaluate(["sst2"]).ran == 1
    added = evaluate(["sst2", "confaide"])
    assert added.ok, added.failed
    assert (added.ran, added.skipped) == (1, 1)  # adding a task runs that task only
    frame = pd.read_csv(data / "sst2.csv")
    frame.assign(label=1 - frame["label"]).to_csv(data / "sst2.csv", index=False)
    edited = evaluate(["sst2", "confaide"])
    assert (edited.ran, edited.skipped) == (1, 1)  # the edited file reruns its task


def test_the_sweep_seed_moves_every_split_and_the_probes_seed_only_the_probes(setup):
    root, suite, dataset, data = setup

    def run(seed: int, probes: dict):
        config = load_config(write_config(
            root, suite, dataset, data_dir=str(data), stages=["extract", "probes", "steering", "evaluate"],
            seed=seed, probes=probes, steering=STEERING, evaluate=EVALUATE,
        ))
        summary = run_sweep(config, progress=False)
        assert summary.ok, summary.failed
        return summary, {table: set(pd.read_parquet(config.workspace / table)["seed"])
                         for table in ("probes.parquet", STEERING_TABLE, EVALUATE_TABLE)}

    _, seeds = run(1, {"folds": 2})
    assert seeds == {"probes.parquet": {1}, STEERING_TABLE: {1}, EVALUATE_TABLE: {1}}
    summary, seeds = run(1, {"folds": 2, "seed": 0})
    assert summary.ran == 2  # the two checkpoints' probes; vectors and evaluations kept
    assert seeds == {"probes.parquet": {0, 1}, STEERING_TABLE: {1}, EVALUATE_TABLE: {1}}
    summary, seeds = run(2, {"folds": 2, "seed": 0})
    assert seeds == {"probes.parquet": {0, 1}, STEERING_TABLE: {1, 2}, EVALUATE_TABLE: {1, 2}}


def test_two_suites_in_one_workspace_keep_their_own_vectors_and_rows(setup, tokenizer):
    root, suite, dataset, data = setup
    other = make_suite(root / "other", tokenizer, steps=(0, 10))
    sweep(root, suite, dataset, data)
    config = sweep(root, other, dataset, data)

    files = sorted((config.workspace / "steering").glob("*.safetensors"))
    assert len(files) == 2 and all("step_0" in f.name for f in files)
    assert {load_vectors(f)[1]["model"] for f in files} == {str(suite.resolve()), str(other.resolve())}
    grid = pd.read_parquet(config.workspace / STEERING_TABLE)
    assert len(grid) == 2 * 2 and grid.groupby("source_model")["vector_file"].nunique().eq(1).all()
    assert set(grid["target_model_id"]) == {str(suite.resolve() / "step_10"), str(other.resolve() / "step_10")}
    evaluated = pd.read_parquet(config.workspace / EVALUATE_TABLE)
    assert evaluated.groupby("target_model_id")["metric"].count().tolist() == [len(evaluated) // 2] * 2


def test_another_scaling_writes_other_vectors_and_keeps_the_first(setup):
    root, suite, dataset, data = setup
    config = sweep(root, suite, dataset, data)
    first = sorted((config.workspace / "steering").glob("*.safetensors"))
    sweep(root, suite, dataset, data, steering=STEERING | {"scaling": "unit"})
    files = sorted((config.workspace / "steering").glob("*.safetensors"))
    assert len(first) == 1 and len(files) == 2 and first[0] in files
    assert set(pd.read_parquet(config.workspace / STEERING_TABLE)["scaling"]) == {"std", "unit"}


def test_a_setting_changed_and_changed_back_keeps_each_setting_s_rows(setup):
    root, suite, dataset, data = setup

    def run(max_rows: int, max_perplexity: float | None):
        config = load_config(write_config(
            root, suite, dataset, data_dir=str(data), stages=["extract", "steering", "evaluate"],
            steering=STEERING | {"max_rows": max_rows, "max_perplexity": max_perplexity},
            evaluate=EVALUATE | {"max_rows": max_rows},
        ))
        summary = run_sweep(config, progress=False)
        assert summary.ok, summary.failed
        return summary, pd.read_parquet(config.workspace / STEERING_TABLE), pd.read_parquet(config.workspace / EVALUATE_TABLE)

    _, steering_a, evaluate_a = run(4, 6.0)
    run(6, 1e9)
    summary, steering, evaluate = run(4, 6.0)
    assert summary.ran == 0  # A's units are done, and A's rows are still there beside B's
    assert set(steering["max_rows"]) == {4, 6} and set(steering["max_perplexity"]) == {6.0, 1e9}
    assert set(evaluate["max_rows"]) == {4, 6} and set(evaluate_a["max_rows"]) == {4}
    pd.testing.assert_frame_equal(
        steering[steering["max_rows"] == 4].reset_index(drop=True), steering_a.reset_index(drop=True), check_dtype=False
    )


def test_grids_of_other_layers_or_alphas_keep_their_own_rows(setup):
    root, suite, dataset, data = setup
    sweep(root, suite, dataset, data, STEERING | {"alphas": [1.0, 2.0]})
    config = sweep(root, suite, dataset, data, STEERING | {"alphas": [2.0]})
    table = pd.read_parquet(config.workspace / STEERING_TABLE)
    assert set(table["grid"]) == {"layers 1; alpha 1, 2", "layers 1; alpha 2"}
    for grid, rows in table.groupby("grid"):  # each grid: its baseline and its own settings, corrected over those
        assert rows["layer"].isna().sum() == 1 and rows["best"].sum() <= 1
        assert sorted(rows["alpha"].iloc[1:]) == ([1.0, 2.0] if "1, 2" in grid else [2.0])


def test_rows_of_former_versions_are_given_the_grid_they_were_computed_as():
    rows = pd.DataFrame({
        "dataset": ["a", "a", "a", "b", "b"], "layer": pd.array([None, 3, 5, None, 3], dtype="Int64"),
        "alpha": [0.0, 2.0, 4.0, 0.0, -1.0], "metric": ["accuracy"] * 5,
    })
    assert legacy_grid(rows).tolist() == ["layers 3, 5; alpha 2, 4"] * 3 + ["layers 3; alpha -1"] * 2
    assert grid_name([5, 3, 3], [4, 2.0]) == "layers 3, 5; alpha 2, 4"  # as the legacy rows name it, in any order


def test_a_source_extracted_by_an_earlier_run_need_not_be_selected(setup):
    from trusttrace.config_checks import check_names

    root, suite, dataset, data = setup
    sweep(root, suite, dataset, data)  # extracts step_0 and step_10
    config = load_config(write_config(
        root, suite, dataset, data_dir=str(data), checkpoints=["step_10"], stages=["steering"],
        steering=STEERING | {"alphas": [4.0]},
    ))
    check_names(config)
    summary = run_sweep(config, progress=False)
    assert summary.ok and summary.ran == 1, summary.failed
    other = root / "other.csv"
    shutil.copy(dataset, other)  # a dataset of which step_0 was never extracted
    config = load_config(write_config(
        root, suite, dataset, datasets=[str(dataset), str(other)], data_dir=str(data), checkpoints=["step_10"],
        stages=["steering"], steering=STEERING | {"datasets": ["other"]},
    ))
    with pytest.raises(ConfigError, match="step_0 is not among the checkpoints the sweep selects .* for other"):
        check_names(config)


def test_rows_of_an_older_statistical_rule_are_recomputed_and_the_vectors_kept(setup, monkeypatch):
    root, suite, dataset, data = setup
    import trusttrace.evaluation.runner as runner
    import trusttrace.steering_stage as stage

    monkeypatch.setattr(runner, "INTERVAL_RULE", "an older rule")
    monkeypatch.setattr(stage, "IMPROVES_RULE", "an older test")
    config = sweep(root, suite, dataset, data)
    vectors = sorted((config.workspace / "steering").glob("*.safetensors"))
    monkeypatch.undo()
    summary = run_sweep(config, progress=False)
    assert summary.ok and summary.ran == 2  # the steering and the evaluate unit, not the extraction
    for table, keys in ((STEERING_TABLE, ["layer", "alpha"]), (EVALUATE_TABLE, ["metric"])):
        rows = pd.read_parquet(config.workspace / table)
        assert set(rows["interval"]) == {"wilson-effective-rows"} and not rows.duplicated(keys).any()
    assert sorted((config.workspace / "steering").glob("*.safetensors")) == vectors


def test_a_replaced_local_target_and_another_dtype_are_evaluated_again(setup, monkeypatch):
    import trusttrace.steering_stage as stage

    root, suite, dataset, data = setup
    target = root / "chat"
    shutil.copytree(suite / "step_10", target)
    asked = []
    identities = stage.target_identities
    monkeypatch.setattr(stage, "target_identities", lambda sweep, name: asked.append(name) or identities(sweep, name))

    def run(**extra):
        config = load_config(write_config(
            root, suite, dataset, data_dir=str(data), stages=["extract", "steering", "evaluate"],
            steering=STEERING | {"target": str(target)}, evaluate=EVALUATE | {"model": str(target)}, **extra,
        ))
        summary = run_sweep(config, progress=False)
        assert summary.ok, summary.failed
        return config, summary

    config, _ = run()
    assert asked == [str(target)]  # one target for both stages: its identity is asked once
    shutil.copy(suite / "step_0" / "model.safetensors", target / "model.safetensors")
    _, replaced = run()
    assert replaced.ran == 2  # the steering and the evaluate unit
    evaluated = pd.read_parquet(config.workspace / EVALUATE_TABLE)
    assert set(evaluated["target_weights_sha256"]) == {weights_of(config.workspace, suite / "step_0")}
    _, bf16 = run(dtype="bfloat16")
    assert bf16.ran == 2 + 2  # extract for both checkpoints, then steering and evaluate
    for table in (EVALUATE_TABLE, STEERING_TABLE):  # both precisions' rows are kept, each once
        rows = pd.read_parquet(config.workspace / table)
        assert rows.groupby("target_dtype").size().to_dict() == {"bfloat16": len(rows) // 2, "float32": len(rows) // 2}
    assert pd.read_parquet(config.workspace / STEERING_TABLE)["max_perplexity"].isna().all()  # as configured: no limit


def test_a_local_target_named_in_a_former_fingerprint_form_is_not_evaluated_again(setup, monkeypatch):
    """0.7.0 fingerprinted a Trainer folder's optimizer state too: its units stay done."""
    import trusttrace.steering_stage as stage
    from trusttrace.models import fingerprint_forms

    root, suite, dataset, data = setup
    target = root / "trained"
    shutil.copytree(suite / "step_10", target)
    torch.save({"state": 1}, target / "optimizer.pt")
    current, former, _ = fingerprint_forms(target)
    forms = stage.target_identities
    monkeypatch.setattr(stage, "target_identities", lambda sweep, name: [(str(target), None, former)])  # as 0.7.0 named it
    steering = STEERING | {"target": str(target)}
    sweep(root, suite, dataset, data, steering)
    monkeypatch.setattr(stage, "target_identities", forms)
    config = load_config(write_config(
        root, suite, dataset, data_dir=str(data), stages=["extract", "steering", "evaluate"], steering=steering,
        evaluate=EVALUATE | {"model": str(target)},
    ))
    again = run_sweep(config, progress=False)
    assert again.ok and again.ran == 1 and current != former  # the evaluate unit only: it ran under another model before


def test_a_hub_target_is_named_by_the_commit_its_branch_resolves_to(monkeypatch):
    from types import SimpleNamespace

    import trusttrace.steering_stage as stage

    sweep = SimpleNamespace(suite=SimpleNamespace(targets={"chat": "org/chat"}), checkpoints=[])
    monkeypatch.setattr(stage, "hub_commit", lambda model_id, revision: "c1")
    before = stage.target_identities(sweep, "chat")
    monkeypatch.setattr(stage, "hub_commit", lambda model_id, revision: "c2")  # main moved
    assert before == [("org/chat", None, "c1")] and stage.target_identities(sweep, "chat") == [("org/chat", None, "c2")]


def test_file_part_keeps_safe_names_and_tells_sanitised_ones_apart():
    assert file_part("pythia-160m") == "pythia-160m" and file_part("step_10") == "step_10"
    local = file_part("local:/runs/a/suite")
    assert local.startswith("local_runs_a_suite-") and "/" not in local and ":" not in local
    assert file_part("local:/runs/a_suite") != file_part("local:/runs/a/suite")
    long = file_part("local:/" + "x" * 300)
    assert len(long) < 60 and long != file_part("local:/" + "x" * 301)
    demo = file_part("/home/someone/trusttrace-demo/checkpoints-quick/step_1000")
    assert demo.startswith("checkpoints-quick_step_1000-")  # cut at a word, not within one


def truthfulqa_data(root: Path) -> Path:
    """A data folder with TruthfulQA's probing rows, held-out questions and MC file, in the study's layout."""
    data = root / "tqa"
    (data / "tracingllm").mkdir(parents=True)
    (data / "upstream" / "truthfulqa").mkdir(parents=True)
    pairs = [(a, b) for a in ("red", "blue", "green", "old") for b in ("small", "quiet", "tall", "young", "red")]
    rows = [{"statement": f"Q: does the {a} cat see?\tA: the {a} cat sees the {b} dog.", "label": i % 2} for i, (a, b) in enumerate(pairs)]
    pd.DataFrame(rows).to_csv(data / "tracingllm" / "truthfulqa_train.csv", index=False)
    questions = ["does the red cat see the house?", "does the blue dog like the garden?", "does the old bird find the tree?"]
    pd.DataFrame({"Question": questions}).to_csv(data / "tracingllm" / "truthfulqa_test.csv", index=False)
    write_mc(data, true_answer="the red cat", questions=questions)
    return data


def write_mc(data: Path, *, true_answer: str, questions: list[str]) -> None:
    choices = ["the red cat", "the blue dog"]
    mc = [{"question": q, "mc1_targets": {c: int(c == true_answer) for c in choices},
           "mc2_targets": {c: int(c == true_answer) for c in choices}} for q in questions]
    (data / "upstream" / "truthfulqa" / "mc_task.json").write_text(json.dumps(mc))


def test_truthfulqa_steering_reads_the_config_s_data_folder_and_reruns_when_its_files_change(tmp_path, tokenizer, monkeypatch):
    monkeypatch.delenv("TRUSTTRACE_DATA", raising=False)  # the config's data_dir alone names the folder
    suite = make_suite(tmp_path, tokenizer, steps=(0, 10))
    data = truthfulqa_data(tmp_path)
    config = load_config(write_config(
        tmp_path, suite, Path("truthfulqa"), datasets=["truthfulqa"], data_dir=str(data),
        stages=["extract", "steering", "evaluate"], steering=STEERING, evaluate={"tasks": ["truthfulqa"]},
    ))
    first = run_sweep(config, progress=False)
    assert first.ok, first.failed
    steering, evaluated = (pd.read_parquet(config.workspace / t) for t in (STEERING_TABLE, EVALUATE_TABLE))
    assert set(steering["task"]) == {"truthfulqa"} and steering["task_inputs"].notna().all()
    write_table(config.workspace / STEERING_TABLE, steering.drop(columns=["task_inputs", "grid"]))  # as 0.7.0 wrote it
    questions = pd.read_csv(data / "tracingllm" / "truthfulqa_test.csv")["Question"].tolist()
    write_mc(data, true_answer="the blue dog", questions=questions)  # the answers swapped
    second = run_sweep(config, progress=False)
    assert second.ok and second.ran == 2  # the steering and the evaluate unit
    steering_after, evaluated_after = (pd.read_parquet(config.workspace / t) for t in (STEERING_TABLE, EVALUATE_TABLE))
    assert len(steering_after) == len(steering)  # the rows of unknown inputs replaced, not kept beside as another grid
    assert steering_after["task_inputs"].nunique() == 1 and evaluated_after["dataset_hash"].nunique() == 2
    mc1 = evaluated_after[evaluated_after["metric"] == "mc1"].sort_values("created")["value"].tolist()
    assert mc1[0] + mc1[1] == pytest.approx(1.0)  # two choices: every question right once, wrong once


def test_the_variant_datasets_are_steered_on_their_own_question():
    assert task_for("sst2_sentiment") == "sst2_sentiment" and task_for("confaide_tier2") == "confaide_tier2"
    assert "sst2_sentiment" not in UNNAMED_TASKS and "confaide_tier2" not in UNNAMED_TASKS  # their units name the task
    assert "positive" in BINARY_TEMPLATES["sst2_sentiment"].text and "privacy" in BINARY_TEMPLATES["confaide_tier2"].text
    assert task_for("my_file") == "binary"
