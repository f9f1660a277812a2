"""The Python API reads what a notebook passes it as meant, or refuses it with a package error
naming the argument: never a silently wrong result, never a deep numpy or torch traceback."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

import trusttrace as tt
from conftest import CORPUS
from trusttrace.data import DatasetCard, TrustDataset
from trusttrace.errors import DatasetError, EvaluationError, ProbeError, SteeringError, StoreError

CARD = DatasetCard(name="toy", dimension="user", label_1="true", label_0="false", source="test", licence="none")
N = 40


def toy(name: str = "toy", offset: int = 0) -> TrustDataset:
    statements = [f"{CORPUS[(i + offset) % len(CORPUS)]} {i}" for i in range(N)]
    return TrustDataset(name=name, statements=statements, labels=np.arange(N) % 2, groups=None, card=CARD, source="test")


@pytest.fixture(scope="module")
def acts() -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    states = torch.randn(3, N, 8, generator=generator)
    states[:, 1::2] += 1.0  # label 1 rows shifted: a direction to find
    return states


# ----- rows -------------------------------------------------------------------------------------


def test_a_boolean_mask_picks_its_true_rows_everywhere(acts, model_factory, tokenizer):
    mask = np.arange(N) < 30
    positions = np.flatnonzero(mask)
    labels = toy().labels
    assert tt.information_plane(acts, labels, rows=mask).equals(tt.information_plane(acts, labels, rows=positions))
    assert torch.equal(tt.steering_vector(acts[0], labels, rows=mask), tt.steering_vector(acts[0], labels, rows=positions))
    assert toy().subset(mask).statements == toy().subset(positions).statements
    result = tt.evaluate(model_factory("llama"), tokenizer, "binary", toy(), rows=mask)
    assert sorted(result.records["row"]) == list(positions)


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ([0.5, 1.7, 2.2], "must be row numbers (integers) or a boolean mask"),
        ([0, -1], "row -1 is outside"),
        ([0, N], f"row {N} is outside"),
        (np.ones(N + 1, dtype=bool), f"a boolean mask of {N + 1} entries for {N} rows"),
        (np.zeros((2, 2), dtype=int), "got shape (2, 2)"),
    ],
)
def test_rows_that_are_not_row_numbers_or_a_mask_are_refused(rows, message, acts, model_factory, tokenizer):
    labels = toy().labels
    expected = re.escape(message)
    with pytest.raises(ProbeError, match=f"^rows.*{expected}"):
        tt.information_plane(acts, labels, rows=rows)
    with pytest.raises(SteeringError, match=f"^rows.*{expected}"):
        tt.steering_vector(acts[0], labels, rows=rows)
    with pytest.raises(DatasetError, match=f"^toy: rows.*{expected}"):
        toy().subset(rows)
    with pytest.raises(EvaluationError, match=f"^rows.*{expected}"):
        tt.evaluate(model_factory("llama"), tokenizer, "binary", toy(), rows=rows)


def test_evaluate_refuses_an_empty_row_list_and_steering_a_spread_of_one_row(acts, model_factory, tokenizer):
    with pytest.raises(EvaluationError, match="no rows to evaluate"):
        tt.evaluate(model_factory("llama"), tokenizer, "binary", toy(), rows=[])
    with pytest.raises(SteeringError, match="scale_rows: .* at least 2 rows, got 1"):
        tt.steering_vector(acts[0], toy().labels, scale_rows=[0])


# ----- the activation store ---------------------------------------------------------------------


def test_two_datasets_saved_with_the_same_provenance_keep_their_own_sets(tmp_path, acts):
    store = tt.ActivationStore(tmp_path / "ws")
    first = store.save(acts, toy("first"), {"model": "m"})
    second = store.save(acts + 1, toy("second", offset=3), {"model": "m"})
    assert first.key != second.key and len(store.records()) == 2
    assert torch.equal(store.load(first), acts) and torch.equal(store.load(second), acts + 1)
    assert store.load_dataset(first).statements == toy("first").statements
    assert first.provenance["layers"] == [0, 1, 2] and first.provenance["n"] == N


@pytest.mark.parametrize(
    ("states", "provenance", "message"),
    [
        (torch.zeros(3, N - 1, 8), {}, rf"shape \(3, {N - 1}, 8\) for the {N} rows of toy"),
        (torch.zeros(N, 8), {}, rf"shape \({N}, 8\)"),
        (torch.zeros(3, N, 8), {"layers": [0, 1]}, "names 2 layers for activations of 3"),
        (torch.zeros(3, N, 8), {"dataset_hash": "another"}, "provenance dataset_hash 'another' does not match"),
    ],
)
def test_a_store_refuses_activations_that_do_not_fit_their_dataset(tmp_path, states, provenance, message):
    store = tt.ActivationStore(tmp_path / "ws")
    with pytest.raises(StoreError, match=message):
        store.save(states, toy(), provenance)
    assert store.records() == []
