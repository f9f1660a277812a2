"""The offline demo end to end, shortened: truth becomes decodable, and its direction is causal."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from trusttrace.checkpoints import checkpoint_suite
from trusttrace.demo import build_world, run_demo
from trusttrace.demo.run import set_aside_if_incompatible
from trusttrace.errors import TrustTraceError
from trusttrace.evaluation.scoring import choice_logprobs
from trusttrace.models import load_model
from trusttrace.store import WORKSPACE_FILE, ActivationStore, read_table


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    return run_demo(tmp_path_factory.mktemp("demo"), quick=True, progress=False)


def true_completion_rate(folder, world) -> float:
    model, tokenizer = load_model(folder, dtype="float32", device="cpu")
    items = world.completions[:200]
    scores = choice_logprobs(model, tokenizer, [i.prompt for i in items], [[" " + i.true, " " + i.false] for i in items])
    return float(np.mean([s[0] > s[1] for s in scores]))


def test_probe_accuracy_rises_from_chance_on_held_out_entities(demo):
    assert demo.first_accuracy <= 0.6
    assert demo.last_accuracy >= 0.7
    probes = read_table(demo.workspace / "probes.parquet")
    assert set(probes["split"]) == {"grouped"}  # entity-disjoint folds
    assert probes["checkpoint"].nunique() == 12


def test_label_information_rises_above_its_shuffled_floor(demo):
    """The best layer's I(T;Y) starts at the floor shuffled labels read and ends far above it."""
    assert demo.shuffled_i_ty < 0.05
    assert demo.first_i_ty < demo.shuffled_i_ty + 0.05
    assert demo.last_i_ty > demo.shuffled_i_ty + 0.2
    assert f"shuffled at most {demo.shuffled_i_ty:.2f}" in demo.summary()


def test_the_model_learns_the_facts(demo):
    world = build_world(seed=0)
    checkpoints = checkpoint_suite(f"local:{demo.workspace.parent / 'checkpoints-quick'}").checkpoints
    assert len(checkpoints) == 12
    assert true_completion_rate(checkpoints[0].model_id, world) <= 0.6
    assert true_completion_rate(checkpoints[-1].model_id, world) >= 0.85


def test_the_truth_direction_moves_the_verdicts_with_alpha(demo):
    table = demo.endorsement.pivot(index="alpha", columns="metric", values="value").sort_index()
    for metric in ("endorse_true_claims", "endorse_false_claims"):
        assert table[metric].is_monotonic_increasing, table[metric]
    assert table.loc[table.index.max(), "endorse_false_claims"] > table.loc[0.0, "endorse_false_claims"]
    assert table.loc[table.index.min(), "endorse_true_claims"] < table.loc[0.0, "endorse_true_claims"]
    assert demo.source_checkpoint != "step_0000"


def test_report_and_steering_table_are_written(demo):
    page = demo.report.read_text()
    assert page.count("endorse_true_claims against steering strength") == 1  # the steering figure's caption
    assert "these rows were not tested against the unsteered model" in page and "Holm-corrected p" not in page
    steering = read_table(demo.workspace / "steering.parquet")
    assert set(steering["task"]) == {"claim_endorsement"} and steering["kl"].notna().all()
    for column in ("source_model", "source_weights_sha256", "dataset_hash", "target_weights_sha256", "seed", "trusttrace_version"):
        assert steering[column].notna().all(), column  # its provenance, as a sweep's steering rows carry


def test_a_demo_workspace_of_an_older_format_is_set_aside_not_refused(tmp_path):
    workspace = tmp_path / "workspace"
    workspace.mkdir()
    (workspace / WORKSPACE_FILE).write_text(json.dumps({"format": 1}))
    aside = set_aside_if_incompatible(workspace)
    assert aside is not None and aside.name.startswith("workspace.format-1-") and not workspace.exists()
    ActivationStore(workspace)  # a current one is left alone
    assert set_aside_if_incompatible(workspace) is None and workspace.exists()


def test_the_steering_source_is_an_earlier_checkpoint_never_the_final_one():
    from trusttrace.demo.run import emerged_checkpoint

    index = pd.MultiIndex.from_tuples([(0, "step_0"), (10, "step_10"), (100, "step_100"), (1000, "step_1000")], names=["step", "checkpoint"])
    rising = pd.DataFrame({0: [0.5, 0.6, 0.72, 0.9], 1: [0.5, 0.65, 0.8, 0.95]}, index=index)
    assert emerged_checkpoint(rising) == ("step_100", 1)
    late = pd.DataFrame({0: [0.5, 0.55, 0.62, 0.75], 1: [0.5, 0.58, 0.6, 0.8]}, index=index)
    assert emerged_checkpoint(late) == ("step_100", 0)  # only the final one reaches 0.7: the best earlier one


def test_the_demo_will_not_write_among_other_files(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(TrustTraceError, match="holds other files and is not a demo folder"):
        run_demo(tmp_path, quick=True, progress=False)
    assert [path.name for path in tmp_path.iterdir()] == ["notes.txt"]


def test_the_summary_says_when_the_shuffled_floor_was_not_recorded(demo):
    from dataclasses import replace

    legacy = replace(demo, shuffled_i_ty=float("nan"))
    assert "with the labels shuffled: not recorded (rows from before 0.9.0)" in legacy.summary()
