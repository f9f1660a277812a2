"""The Python API reads what a notebook passes it as meant, or refuses it with a package error
naming the argument: never a silently wrong result, never a deep numpy or torch traceback."""

from __future__ import annotations

import re
import warnings

import numpy as np
import pytest
import torch

import trusttrace as tt
from conftest import CORPUS
from trusttrace.data import DatasetCard, TrustDataset
from trusttrace.errors import DatasetError, EvaluationError, LayerError, ProbeError, SteeringError, StoreError
from trusttrace.models import decoder_layers

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


# ----- layers, batches and statements -----------------------------------------------------------


@pytest.mark.parametrize("layers", [[np.int64(1), 2], torch.tensor([1, 2]), np.array([1, 2]), (1, -2), range(1, 3)])
def test_layer_selections_of_any_integer_type_are_read_as_block_numbers(layers, model_factory, tokenizer):
    model = model_factory("llama")
    assert torch.equal(tt.extract_activations(model, tokenizer, CORPUS[:3], layers=layers),
                       tt.extract_activations(model, tokenizer, CORPUS[:3], layers=[1, 2]))


@pytest.mark.parametrize(
    ("layers", "message"),
    [([1, -3], "layers 1 and -3 both name block 1"), (True, "layer True is not a layer number"),
     ("last", "layers 'last': expected 'all'"), ([1.5], "layer 1.5 is not a layer number")],
)
def test_layer_selections_that_are_ambiguous_are_refused(layers, message, model_factory, tokenizer):
    with pytest.raises(tt.LayerError, match=re.escape(message)):
        tt.extract_activations(model_factory("llama"), tokenizer, CORPUS[:3], layers=layers)


@pytest.mark.parametrize(("option", "value"), [("batch_size", -1), ("batch_size", 0), ("batch_size", 2.5), ("batch_tokens", 0)])
def test_batch_sizes_must_be_whole_and_positive(option, value, model_factory, tokenizer):
    with pytest.raises(tt.TrustTraceError, match=f"{option} must be a whole number of at least 1"):
        tt.extract_activations(model_factory("llama"), tokenizer, CORPUS[:3], **{option: value})


def test_sizes_may_be_numpy_integers(model_factory, tokenizer):
    model = model_factory("llama")
    assert torch.equal(tt.extract_activations(model, tokenizer, CORPUS[:3], batch_size=np.int64(2)),
                       tt.extract_activations(model, tokenizer, CORPUS[:3], batch_size=2))
    from trusttrace.info import check_max_rows

    check_max_rows(np.int64(5))


def test_statements_must_be_strings_and_may_be_any_iterable(model_factory, tokenizer):
    model = model_factory("llama")
    with pytest.raises(tt.TrustTraceError, match="statement 1 is None, not a string"):
        tt.extract_activations(model, tokenizer, ["a cat", None])
    assert torch.equal(tt.extract_activations(model, tokenizer, (s for s in CORPUS[:3])),
                       tt.extract_activations(model, tokenizer, CORPUS[:3]))


@pytest.mark.parametrize(("labels", "message"), [([0.7, 1.0, 0.0], "label 0.7 at row 0"), (["1", "0", "1"], "label '1' at row 0")])
def test_a_dataset_refuses_labels_that_are_not_0_or_1_before_casting_them(labels, message):
    with pytest.raises(DatasetError, match=re.escape(message)):
        TrustDataset(name="x", statements=["a", "b", "c"], labels=labels, groups=None, card=CARD, source="test")
    with pytest.raises(DatasetError, match="statement 1 is None, not a string"):
        TrustDataset(name="x", statements=["a", None, "c"], labels=[0, 1, 0], groups=None, card=CARD, source="test")


# ----- steering ---------------------------------------------------------------------------------


def test_steering_vectors_need_0_1_labels_and_finite_settings(acts, model_factory):
    labels = toy().labels.copy()
    labels[2] = 2
    with pytest.raises(SteeringError, match="label 2 at row 2 is not 0 or 1"):
        tt.steering_vector(acts[0], labels)
    model = model_factory("llama")
    vector = torch.zeros(model.config.hidden_size)
    for vectors, alpha, message in [
        ({1: vector.clone().fill_(float("nan"))}, 1.0, "the vector for layer 1 holds NaN or inf"),
        ({1: vector}, float("nan"), "alpha nan is not a finite number"),
        (vector, 1.0, "vectors must map layer numbers to vectors"),
        ({1: vector, -3: vector}, 1.0, "layers 1 and -3 both name block 1"),
        ({1.7: vector}, 1.0, "layer 1.7 is not a layer number"),
    ]:
        with pytest.raises(tt.TrustTraceError, match=re.escape(message)):
            with tt.steer(model, vectors, alpha):
                pass


def test_build_vectors_takes_one_layer_and_checks_the_layer_names_of_the_activations(acts):
    vectors, _ = tt.build_vectors(acts, toy(), 2)
    assert list(vectors) == [2]
    with pytest.raises(tt.TrustTraceError, match="acts_layers names 2 layers for activations of 3"):
        tt.build_vectors(acts, toy(), [2], acts_layers=[0, 2])


def test_an_evaluation_in_a_steer_context_says_it_was_steered(acts, model_factory, tokenizer):
    model = model_factory("llama")
    vectors = {1: torch.ones(model.config.hidden_size)}
    with tt.steer(model, vectors, alpha=2.0):
        with pytest.warns(UserWarning, match="steered by a `steer` context"):
            inside = tt.evaluate(model, tokenizer, "binary", toy())
    given = tt.evaluate(model, tokenizer, "binary", toy(), steering=tt.Steering(vectors, alpha=2.0), side_effect_texts=None)
    assert inside.settings["steering"]["layers"] == "1" and inside.settings["steering"]["alpha"] == 2.0
    assert inside.table[["value", "layers", "alpha"]].equals(given.table[["value", "layers", "alpha"]])
    assert tt.evaluate(model, tokenizer, "binary", toy()).settings["steering"] is None  # the context is over
    with pytest.raises(EvaluationError, match="steering must be a Steering"):
        tt.evaluate(model, tokenizer, "binary", toy(), steering=vectors)


def test_a_steered_evaluation_records_the_block_steered_as_a_steer_context_does(model_factory, tokenizer):
    model = model_factory("llama")
    last = len(decoder_layers(model)) - 1
    vectors = {-1: torch.ones(model.config.hidden_size)}
    with tt.steer(model, vectors), pytest.warns(UserWarning, match="steered by a `steer` context"):
        inside = tt.evaluate(model, tokenizer, "binary", toy())
    given = tt.evaluate(model, tokenizer, "binary", toy(), steering=tt.Steering(vectors), side_effect_texts=None)
    assert inside.settings["steering"]["layers"] == given.settings["steering"]["layers"] == str(last)
    assert set(given.table["layers"]) == {str(last)}
    with pytest.raises(LayerError, match="layer 7"):
        tt.evaluate(model, tokenizer, "binary", toy(), steering=tt.Steering({7: vectors[-1]}), side_effect_texts=None)


def test_evaluating_the_rows_a_vector_was_built_from_warns(acts, model_factory, tokenizer):
    model = model_factory("llama")
    vectors, info = tt.build_vectors(torch.randn(4, N, model.config.hidden_size), toy(), [1], seed=1)
    steering = tt.Steering(vectors, alpha=1.0, provenance=info)
    with pytest.warns(UserWarning, match=r"of the 20 evaluated rows of toy built the steering vectors .* seed 1; evaluated with seed 0"):
        tt.evaluate(model, tokenizer, "binary", toy(), steering=steering, side_effect_texts=None)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        tt.evaluate(model, tokenizer, "binary", toy(), steering=steering, seed=1, side_effect_texts=None)


def test_a_device_this_machine_lacks_is_named(monkeypatch, acts, saved_model):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    with pytest.raises(tt.TrustTraceError, match="device 'cuda': CUDA is not available here"):
        tt.load_model(saved_model("llama"), device="cuda")
    with pytest.raises(tt.TrustTraceError, match="device 'cuda': CUDA is not available here"):
        tt.fit_probes(acts, toy().labels, device="cuda")
    with pytest.raises(tt.TrustTraceError, match="device 'tpu': not a device"):
        tt.information_plane(acts, toy().labels, device="tpu")


# ----- groups, vector files and MI options ------------------------------------------------------


@pytest.mark.parametrize("split", ["grouped", "random", "paper"])
def test_groups_must_name_every_row(split, acts):
    labels = toy().labels
    groups = np.array([f"g{i // 4}" for i in range(N)], dtype=object)
    groups[5] = None
    with pytest.raises(ProbeError, match=r"group of row 5 is missing \(None\)"):
        tt.fit_probes(acts, labels, split=split, groups=groups, folds=2)
    with pytest.raises(ProbeError, match=f"groups of shape \\({N - 1},\\) for {N} rows"):
        tt.fit_probes(acts, labels, split=split, groups=groups[1:], folds=2)


def test_one_vector_saved_for_two_layers_round_trips(tmp_path):
    vector = torch.arange(4.0)
    tt.save_vectors(tmp_path / "v.safetensors", {1: vector, 2: vector}, {})
    loaded, _ = tt.load_vectors(tmp_path / "v.safetensors")
    assert torch.equal(loaded[1], vector) and torch.equal(loaded[2], vector)


@pytest.mark.parametrize(
    ("options", "message"),
    [({"sigma": 0}, "sigma"), ({"sigma": -1.0}, "sigma"), ({"epsilon": 0}, "epsilon"), ({"dtype": torch.bfloat16}, "dtype")],
)
def test_kernel_options_outside_their_range_are_refused(options, message, acts):
    with pytest.raises(ProbeError, match=message):
        tt.mutual_information(acts[0], acts[1], estimator="nhsic", **options)


def test_build_vectors_reads_layers_as_check_layers_does(acts):
    vectors, _ = tt.build_vectors(acts, toy(), np.int64(2))
    assert list(vectors) == [2]
    for layers, message in (([2, 2], "name each layer once"), ([True], "not a layer number"), ([2.0], "not a layer number")):
        with pytest.raises(tt.LayerError, match=message):
            tt.build_vectors(acts, toy(), layers)


def test_a_dataset_refuses_missing_groups_and_reads_object_labels():
    with pytest.raises(DatasetError, match="group of row 1 is missing"):
        TrustDataset(name="x", statements=["a", "b", "c"], labels=[0, 1, 0], groups=["g", None, "h"], card=CARD, source="test")
    labels = np.array([0, 1, 0], dtype=object)
    assert TrustDataset(name="x", statements=["a", "b", "c"], labels=labels, groups=None, card=CARD, source="test").labels.tolist() == [0, 1, 0]


def test_a_saved_tensor_is_stored_in_shards_of_the_usual_size(tmp_path, acts, monkeypatch):
    import trusttrace.store as store_module

    monkeypatch.setattr(store_module, "DEFAULT_SHARD_BYTES", 3 * 8 * 4 * 10)  # ten rows of these activations
    store = tt.ActivationStore(tmp_path / "ws")
    record = store.save(acts, toy(), {})
    assert len(list(record.path.glob("shard-*.safetensors"))) == N // 10 and torch.equal(store.load(record), acts)


def test_free_memory_counts_a_container_limit(monkeypatch, tmp_path):
    import trusttrace.devices as devices

    monkeypatch.setattr(devices, "CGROUP", tmp_path)
    assert devices._container_headroom() is None  # no cgroup files: no limit
    (tmp_path / "memory.current").write_text("400\n")
    (tmp_path / "memory.max").write_text("1000\n")
    assert devices._container_headroom() == 600 and devices.free_memory(torch.device("cpu")) <= 600
    (tmp_path / "memory.current").write_text("1200\n")  # over the limit: nothing left, not a negative size
    assert devices._container_headroom() == 0 and devices.free_memory(torch.device("cpu")) == 0
    (tmp_path / "memory.max").write_text("max\n")
    assert devices._container_headroom() is None and devices.free_memory(torch.device("cpu")) > 0


def test_api_calls_given_the_wrong_kind_of_thing_say_what_they_need(tmp_path, acts, model_factory, tokenizer):
    for call in (lambda: tt.run_probes(str(tmp_path)), lambda: tt.run_mi(str(tmp_path)),
                 lambda: tt.extract_to_store(model_factory("llama"), tokenizer, toy(), str(tmp_path))):
        with pytest.raises(StoreError, match=r"expected an ActivationStore, e.g. tt.ActivationStore\("):
            call()
    assert list(tmp_path.iterdir()) == []  # no workspace made of a folder given by mistake
    with pytest.raises(SteeringError, match="must be the TrustDataset the activations were extracted from, not a ndarray"):
        tt.build_vectors(acts, toy().labels, 1)
    with pytest.raises(SteeringError, match="no steering vectors given"):
        tt.export_lm_eval(tmp_path / "empty.pt", {}, 2.0)
    assert not (tmp_path / "empty.pt").exists()
    model = model_factory("llama")
    with pytest.raises(SteeringError, match="no alphas"):
        tt.steering_grid(model, tokenizer, {1: torch.zeros(model.config.hidden_size)}, [], task="binary", dataset=toy())
    with pytest.raises(tt.TrustTraceError, match="cannot find its decoder blocks \\(its config gives no block count\\)"):
        decoder_layers(torch.nn.Sequential(torch.nn.Linear(2, 2)))


def test_a_report_folder_that_is_a_file_is_a_report_error(tmp_path):
    import pandas as pd

    from trusttrace.errors import ReportError
    from trusttrace.store import write_table

    tt.ActivationStore(tmp_path / "ws")
    write_table(tmp_path / "ws" / "probes.parquet", pd.DataFrame({"model": ["m"], "checkpoint": ["c"]}))
    (tmp_path / "afile").write_text("x")
    with pytest.raises(ReportError, match="afile: cannot write the report there"):
        tt.write_report(tmp_path / "ws", out_dir=tmp_path / "afile")
