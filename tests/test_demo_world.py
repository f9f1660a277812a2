"""The demo's synthetic world and its tiny pre-training run: content, files, determinism."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer

from trusttrace.data import load_dataset
from trusttrace.demo import ATTRIBUTES, build_world, checkpoint_steps, pretrain, world_tokenizer
from trusttrace.demo.pretrain import STAGING
from trusttrace.errors import ConfigError
from trusttrace.tiny import ARCHITECTURES


@pytest.fixture(scope="module")
def world():
    return build_world(seed=3, n_entities=40)


def test_probing_set_is_balanced_per_entity_and_attribute(world):
    assert len(world.statements) == len(world.labels) == len(world.groups) == 40 * len(ATTRIBUTES) * 2
    assert len(set(world.groups)) == 40
    for name in set(world.groups):
        labels = [label for label, group in zip(world.labels, world.groups) if group == name]
        assert labels.count(1) == labels.count(0) == len(ATTRIBUTES)
    assert len(set(world.statements)) == len(world.statements)


def test_true_statements_match_the_facts_and_false_ones_do_not(world):
    facts = {entity.name: entity.facts for entity in world.entities}
    for statement, label, group in zip(world.statements, world.labels, world.groups):
        value = statement.split()[-1]
        assert group in statement.split()
        assert (value in facts[group].values()) == (label == 1)


def test_every_fact_is_in_the_corpus_and_no_false_probing_statement_is(world):
    lines = [f" {line} " for line in world.corpus]
    for statement, label in zip(world.statements, world.labels):
        seen = any(f" {statement} " in line for line in lines)
        assert seen == (label == 1), statement
    for entity in world.entities:
        for value in entity.facts.values():
            assert sum(f" {entity.name} " in line and f" {value} ." in line for line in lines) >= 3


def test_completions_rebuild_the_statements(world):
    assert len(world.completions) == len(world.statements) // 2
    for i, item in enumerate(world.completions):
        assert f"{item.prompt} {item.true}" == world.statements[2 * i]
        assert f"{item.prompt} {item.false}" == world.statements[2 * i + 1]
        assert item.group == world.groups[2 * i]


def test_world_is_determined_by_its_seed():
    assert build_world(seed=5, n_entities=10) == build_world(seed=5, n_entities=10)
    assert build_world(seed=5, n_entities=10).corpus != build_world(seed=6, n_entities=10).corpus


def test_probing_csv_loads_as_a_dataset(world, tmp_path):
    path = world.write_probing_csv(tmp_path / "facts.csv")
    assert [p.name for p in tmp_path.iterdir()] == ["facts.csv"]
    dataset = load_dataset(path)
    assert list(dataset.statements) == world.statements
    assert [int(label) for label in dataset.labels] == world.labels
    assert list(dataset.groups) == world.groups


def test_tokenizer_keeps_every_word_whole(world):
    tokenizer = world_tokenizer(world)
    words = {word for text in world.corpus + world.statements for word in text.split()}
    for word in words:
        assert tokenizer.tokenize(word) == [word]
    assert tokenizer("lives in")["input_ids"][0] == tokenizer.bos_token_id


@pytest.mark.parametrize("steps,checkpoints", [(3000, 12), (100, 12), (7, 12), (1, 5), (50, 2)])
def test_checkpoint_steps_are_log_spaced_from_zero_to_the_end(steps, checkpoints):
    chosen = checkpoint_steps(steps, checkpoints)
    assert chosen[0] == 0 and chosen[-1] == steps
    assert chosen == sorted(set(chosen)) and len(chosen) <= checkpoints
    if steps >= 50 * checkpoints:
        assert len(chosen) == checkpoints
        ratios = np.array(chosen[2:]) / np.array(chosen[1:-1])
        assert ratios.max() / ratios.min() < 1.05


@pytest.mark.parametrize(
    "call",
    [
        lambda out: build_world(n_entities=1),
        lambda out: checkpoint_steps(0, 12),
        lambda out: checkpoint_steps(100, 1),
        lambda out: pretrain(build_world(n_entities=4), out, batch_size=0, progress=False),
    ],
)
def test_bad_settings_raise_a_config_error_before_any_write(call, tmp_path):
    with pytest.raises(ConfigError):
        call(tmp_path / "out")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_pretrain_writes_loadable_checkpoints_and_is_deterministic(tmp_path, arch):
    small = build_world(seed=1, n_entities=8)
    kwargs = dict(arch=arch, steps=6, checkpoints=3, hidden=16, layers=2, heads=2, batch_size=4, progress=False)
    first = pretrain(small, tmp_path / "a", **kwargs)
    second = pretrain(small, tmp_path / "b", **kwargs)
    assert [p.name for p in first] == ["step_0000", "step_0001", "step_0006"]
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == [p.name for p in first]
    tokens = []
    for a, b in zip(first, second):
        files = {p.name for p in a.iterdir()}
        assert {"config.json", "model.safetensors", "tokenizer.json", "trusttrace.json"} <= files
        weights_a, weights_b = load_file(a / "model.safetensors"), load_file(b / "model.safetensors")
        assert all(torch.equal(weights_a[key], weights_b[key]) for key in weights_a)
        meta = json.loads((a / "trusttrace.json").read_text())
        assert meta == json.loads((b / "trusttrace.json").read_text())
        tokens.append(meta["tokens"])
    assert tokens[0] == 0 and tokens[1] < tokens[2]
    start, end = load_file(first[0] / "model.safetensors"), load_file(first[-1] / "model.safetensors")
    assert not all(torch.equal(start[key], end[key]) for key in start)
    model = AutoModelForCausalLM.from_pretrained(first[-1])
    tokenizer = AutoTokenizer.from_pretrained(first[-1])
    assert model.config.vocab_size == len(tokenizer)
    assert model(**tokenizer(small.statements[:1], return_tensors="pt")).logits.shape[-1] == len(tokenizer)


def test_pretrain_again_replaces_checkpoints_in_place(tmp_path):
    small = build_world(seed=1, n_entities=8)
    kwargs = dict(steps=2, checkpoints=2, hidden=16, layers=1, heads=2, batch_size=4, progress=False)
    pretrain(small, tmp_path, seed=0, **kwargs)
    before = load_file(tmp_path / "step_0002" / "model.safetensors")
    pretrain(small, tmp_path, seed=1, **kwargs)
    after = load_file(tmp_path / "step_0002" / "model.safetensors")
    assert not all(torch.equal(before[key], after[key]) for key in before)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step_0000", "step_0002"]
    assert not (tmp_path / STAGING).exists()
