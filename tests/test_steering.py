"""Steering: vectors, the steer() hooks and their position rules, vector files, lm-eval export, `trusttrace steer`."""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from typer.testing import CliRunner

from trusttrace.cli.app import app
from trusttrace.data import DatasetCard, TrustDataset
from trusttrace.errors import LayerError, StoreError, SteeringError
from trusttrace.models import decoder_layers, text_config
from trusttrace.steering import (
    Steering,
    build_vectors,
    development_overlap,
    development_rows,
    export_lm_eval,
    lm_eval_hookpoint,
    load_vectors,
    position_mask,
    prompt_boundary,
    save_vectors,
    steer,
    steering_vector,
)
from trusttrace.store import ActivationStore
from trusttrace.tiny import PAD_ID, tiny_model, train_tokenizer
from trusttrace.extract_stage import extract_to_store

ARCHS = ["llama", "gpt_neox", "gpt2"]
WORDS = "the a red blue cat dog sees likes house garden near river bridge old young tall small quiet".split()


@pytest.fixture(scope="module")
def tok():
    corpus = [" ".join(WORDS[i:] + WORDS[:i]) for i in range(len(WORDS))]
    return train_tokenizer(corpus, vocab_size=200)


@pytest.fixture(scope="module")
def models(tok):
    cache = {}

    def build(arch):
        if arch not in cache:
            cache[arch] = tiny_model(arch, len(tok), seed=1)
        return cache[arch]

    return build


def card():
    return DatasetCard("toy", "user", "one", "zero", "test", "none")


def toy_dataset(n=40, groups=True, name="toy"):
    rng = np.random.default_rng(0)
    labels = np.tile([0, 1], n // 2)
    statements = [" ".join(rng.choice(WORDS, 5)) for _ in range(n)]
    return TrustDataset(name, statements, labels, np.arange(n) // 2 if groups else None, card(), "test")


def random_vector(model, seed=0, scale=1.0):
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(text_config(model).hidden_size, generator=generator) * scale


def ids_of(tok, text):
    return torch.tensor([tok(text)["input_ids"]])


# ----- vectors -------------------------------------------------------------------------


def test_steering_vector_scalings():
    acts = torch.randn(30, 8, generator=torch.Generator().manual_seed(0))
    labels = np.array([0, 1] * 15)
    rows = np.arange(20)
    difference = acts[rows][labels[rows] == 1].mean(0) - acts[rows][labels[rows] == 0].mean(0)
    raw = steering_vector(acts, labels, rows=rows, scaling="raw")
    torch.testing.assert_close(raw, difference)
    unit = steering_vector(acts, labels, rows=rows, scaling="unit")
    torch.testing.assert_close(unit, difference / difference.norm())
    std = steering_vector(acts, labels, rows=rows)
    torch.testing.assert_close(std, unit * (acts[rows] @ unit).std())
    everything = steering_vector(acts, labels, rows=rows, scale_rows=np.arange(30))
    torch.testing.assert_close(everything, unit * (acts @ unit).std())
    assert not torch.allclose(std, everything)


def test_steering_vector_bad_inputs():
    acts = torch.randn(6, 4)
    with pytest.raises(SteeringError, match="both labels"):
        steering_vector(acts, [1, 1, 1, 0, 0, 0], rows=[0, 1, 2])
    with pytest.raises(SteeringError, match="do not match"):
        steering_vector(acts, [0, 1])
    with pytest.raises(SteeringError, match="unknown scaling"):
        steering_vector(acts, [0, 1] * 3, scaling="norm")


def test_steering_vector_refuses_non_finite_activations():
    """One NaN or inf used to give a NaN vector (or [-0., nan, ...] with scaling="unit")."""
    acts = torch.randn(6, 4)
    acts[4, 0] = float("inf")
    acts[3, 2] = float("nan")
    with pytest.raises(SteeringError, match="nan at row 3, column 2"):
        steering_vector(acts, [0, 1] * 3)
    acts[3, 2] = 0.0
    for scaling in ("std", "unit", "raw"):
        with pytest.raises(SteeringError, match="inf at row 4, column 0"):
            steering_vector(acts, [0, 1] * 3, scaling=scaling, rows=[0, 1, 2, 3])  # even in a row not used


def test_development_rows_default_keeps_groups_together_and_paper_is_file_order():
    data = toy_dataset(40)
    dev, held_out = development_rows(data)
    assert len(dev) == len(held_out) == 20 and not set(dev) & set(held_out)
    assert not set(data.groups[dev]) & set(data.groups[held_out])
    assert set(data.labels[dev]) == {0, 1}
    dev, held_out = development_rows(data, "paper")
    assert list(dev) == list(range(20)) and list(held_out) == list(range(20, 40))
    truthful = toy_dataset(40, name="truthfulqa")
    assert len(development_rows(truthful, "paper")[0]) == 40


def test_build_vectors_paper_protocol_and_provenance():
    data = toy_dataset(40)
    acts = torch.randn(3, 40, 8, generator=torch.Generator().manual_seed(1))
    vectors, provenance = build_vectors(acts, data, [5, 7], acts_layers=[3, 5, 7], protocol="paper", source={"model": "m", "checkpoint": "step9"})
    expected = steering_vector(acts[2], data.labels, rows=np.arange(20), scale_rows=np.arange(40))
    torch.testing.assert_close(vectors[7], expected)
    assert provenance["model"] == "m" and provenance["checkpoint"] == "step9" and provenance["layers"] == [5, 7]
    assert provenance["rows"] == 20 and provenance["scale_rows"] == 40 and provenance["dataset_hash"] == data.content_hash
    assert provenance["hidden_size"] == 8 and provenance["scaling"] == "std" and len(provenance["rows_sha256"]) == 64
    _, default = build_vectors(acts, data, [5], acts_layers=[3, 5, 7])
    assert default["rows"] == default["scale_rows"] == len(development_rows(data)[0])
    with pytest.raises(LayerError, match=r"\[4\]"):
        build_vectors(acts, data, [4], acts_layers=[3, 5, 7])


def test_vector_file_round_trip_and_damage(tmp_path):
    vectors = {3: torch.randn(8), 11: torch.randn(8)}
    path = save_vectors(tmp_path / "v.safetensors", vectors, {"model": "m", "layers": [3, 11]})
    loaded, provenance = load_vectors(path)
    assert list(loaded) == [3, 11] and provenance == {"model": "m", "layers": [3, 11]}
    for layer in vectors:
        assert torch.equal(loaded[layer], vectors[layer])
    assert not list(tmp_path.glob(".*tmp"))
    (tmp_path / "bad.safetensors").write_bytes(b"not a tensor file")
    with pytest.raises(StoreError, match="bad.safetensors"):
        load_vectors(tmp_path / "bad.safetensors")
    with pytest.raises(StoreError, match="cannot read"):
        load_vectors(tmp_path / "missing.safetensors")
    save_file({"layer.1": torch.randn(8)}, tmp_path / "list.safetensors", metadata={"trusttrace": json.dumps(["x"])})
    with pytest.raises(StoreError, match="list.safetensors: its trusttrace metadata is a JSON list"):
        load_vectors(tmp_path / "list.safetensors")


def test_provenance_with_a_seed_that_is_no_number_names_no_development_rows():
    data = toy_dataset()
    dev = development_rows(data)[0]
    provenance = {"dataset_hash": data.content_hash, "protocol": "default", "seed": 0}
    assert development_overlap(data, dev, provenance) == len(dev)
    assert development_overlap(data, dev, provenance | {"seed": "abc"}) == 0


# ----- steer -----------------------------------------------------------------------------


@pytest.mark.parametrize("arch", ARCHS)
def test_alpha_zero_is_bit_identical_and_hooks_leave(arch, models, tok):
    model = models(arch)
    ids = ids_of(tok, "the red cat sees the old bridge")
    config = dict(max_new_tokens=4, do_sample=False, pad_token_id=PAD_ID, output_logits=True, return_dict_in_generate=True)
    with torch.no_grad():
        plain = model(ids).logits
        plain_gen = model.generate(ids, attention_mask=torch.ones_like(ids), **config)
        with steer(model, {1: random_vector(model), 3: random_vector(model, 1)}, alpha=0.0, positions="all"):
            zero = model(ids).logits
            zero_gen = model.generate(ids, attention_mask=torch.ones_like(ids), **config)
        with steer(model, {1: random_vector(model)}, alpha=4.0):
            moved = model(ids).logits
        after = model(ids).logits
    assert torch.equal(plain, zero) and torch.equal(plain, after)
    assert torch.equal(plain_gen.sequences, zero_gen.sequences)
    assert all(torch.equal(a, b) for a, b in zip(plain_gen.logits, zero_gen.logits))
    assert not torch.allclose(plain[:, -1], moved[:, -1]) and torch.equal(plain[:, :-1], moved[:, :-1])
    assert all(not block._forward_hooks for block in decoder_layers(model))
    assert not model.base_model._forward_pre_hooks and not model.base_model._forward_hooks


def test_hooks_are_removed_when_the_body_raises(models, tok):
    model = models("llama")
    ids = ids_of(tok, "a blue dog")
    with torch.no_grad():
        plain = model(ids).logits
        with pytest.raises(RuntimeError, match="boom"):
            with steer(model, {2: random_vector(model)}, alpha=3.0):
                raise RuntimeError("boom")
        assert torch.equal(model(ids).logits, plain)
    assert all(not block._forward_hooks for block in decoder_layers(model))


@pytest.mark.parametrize("arch", ARCHS)
def test_cached_generation_equals_recomputation_without_cache(arch, models, tok):
    """Under "last", each generated token is steered when it enters the cache, so recomputing
    the whole sequence without a cache must steer the prompt's last token and every generated one."""
    model = models(arch)
    ids = ids_of(tok, "the old dog likes the quiet garden")
    steps = 6
    vector = random_vector(model, 3, scale=6.0)
    config = dict(max_new_tokens=steps, do_sample=False, pad_token_id=PAD_ID, eos_token_id=None, output_logits=True, return_dict_in_generate=True)
    with torch.no_grad():
        unsteered = model.generate(ids, attention_mask=torch.ones_like(ids), **config).sequences
        with steer(model, {1: vector}, alpha=1.0):
            cached = model.generate(ids, attention_mask=torch.ones_like(ids), **config)
            for t in range(steps):
                prefix = cached.sequences[:, : ids.shape[1] + t]
                prompt = torch.zeros_like(prefix, dtype=torch.bool)
                prompt[:, : ids.shape[1]] = True
                with prompt_boundary(prompt):
                    logits = model(prefix, use_cache=False).logits[:, -1]
                torch.testing.assert_close(logits, cached.logits[t], atol=1e-5, rtol=1e-5)
                assert int(logits.argmax()) == int(cached.sequences[0, ids.shape[1] + t])
    assert not torch.equal(unsteered, cached.sequences), "the vector should change the greedy tokens"


def test_tuple_block_outputs_are_steered_like_bare_tensors(models, tok):
    """The reference hook indexed output[0] whatever the block returned; a tuple or a tensor must steer alike."""
    model = models("llama")
    blocks = decoder_layers(model)
    ids = ids_of(tok, "the tall river")
    vector = random_vector(model, 2)
    with torch.no_grad(), steer(model, {1: vector}, alpha=2.0):
        bare = model(ids).logits

    def as_tuple(_module, _inputs, output):
        return output if isinstance(output, tuple) else (output, None)

    def unwrap(_module, args, kwargs):
        if args and isinstance(args[0], tuple):
            args = (args[0][0], *args[1:])
        if isinstance(kwargs.get("hidden_states"), tuple):
            kwargs["hidden_states"] = kwargs["hidden_states"][0]
        return args, kwargs

    handles = [block.register_forward_hook(as_tuple) for block in blocks[:-1]]
    handles += [block.register_forward_pre_hook(unwrap, with_kwargs=True) for block in blocks]
    try:
        with torch.no_grad(), steer(model, {1: vector}, alpha=2.0):
            tupled = model(ids).logits
    finally:
        for handle in handles:
            handle.remove()
    torch.testing.assert_close(bare, tupled)


def _padded(tok, texts, side):
    encoded = [tok(text)["input_ids"] for text in texts]
    width = max(map(len, encoded))
    ids = torch.full((len(texts), width), PAD_ID)
    mask = torch.zeros((len(texts), width), dtype=torch.long)
    for i, seq in enumerate(encoded):
        span = slice(width - len(seq), width) if side == "left" else slice(0, len(seq))
        ids[i, span] = torch.tensor(seq)
        mask[i, span] = 1
    return ids, mask, encoded


@pytest.mark.parametrize("side", ["left", "right"])
@pytest.mark.parametrize("positions", ["last", "all", "prompt"])
def test_positions_under_padding_match_unpadded(side, positions, models, tok):
    model = models("gpt_neox")
    texts = ["the red cat sees the old bridge near the river", "a dog"]
    ids, mask, encoded = _padded(tok, texts, side)
    position_ids = (mask.cumsum(1) - 1).clamp(min=0)
    vector = random_vector(model, 4, scale=3.0)
    with torch.no_grad(), steer(model, {2: vector}, alpha=1.0, positions=positions):
        batched = model(ids, attention_mask=mask, position_ids=position_ids).logits
        for i, seq in enumerate(encoded):
            alone = model(torch.tensor([seq])).logits[0]
            real = batched[i][mask[i].bool()]
            torch.testing.assert_close(real, alone, atol=1e-5, rtol=1e-4)


def test_position_mask_rules():
    left = torch.tensor([[0, 1, 1], [1, 1, 1]])
    right = torch.tensor([[1, 1, 0], [1, 1, 1]])
    assert position_mask("last", 2, 3, attention=left).tolist() == [[False, False, True], [False, False, True]]
    assert position_mask("last", 2, 3, attention=right).tolist() == [[False, True, False], [False, False, True]]
    assert position_mask("all", 2, 3, attention=left) is None
    assert position_mask("prompt", 2, 3, attention=left).tolist() == left.bool().tolist()
    assert not position_mask("prompt", 2, 1, past=5).any() and position_mask("generated", 2, 1, past=5).all()
    assert not position_mask("generated", 2, 3, attention=left).any()
    prompt = torch.tensor([[False, True, False], [True, True, False]])
    assert position_mask("last", 2, 3, attention=left, prompt=prompt).tolist() == [[False, True, True], [False, True, True]]
    assert position_mask("generated", 2, 3, attention=left, prompt=prompt).tolist() == [[False, False, True], [False, False, True]]


def test_prompt_and_generated_positions_during_generation(models, tok):
    """"generated" leaves the first new token alone (it comes from the prompt pass); "prompt" steers only that pass."""
    model = models("llama")
    ids = ids_of(tok, "the quiet garden near the house")
    config = dict(max_new_tokens=3, do_sample=False, pad_token_id=PAD_ID, output_logits=True, return_dict_in_generate=True)
    vector = random_vector(model, 5, scale=6.0)
    with torch.no_grad():
        plain = model.generate(ids, attention_mask=torch.ones_like(ids), **config)
        with steer(model, {1: vector}, positions="generated"):
            generated = model.generate(ids, attention_mask=torch.ones_like(ids), **config)
        with steer(model, {1: vector}, positions="prompt"):
            prompted = model.generate(ids, attention_mask=torch.ones_like(ids), **config)
            full = model(ids).logits[:, -1]
    assert torch.equal(generated.logits[0], plain.logits[0]) and not torch.allclose(generated.logits[1], plain.logits[1])
    torch.testing.assert_close(prompted.logits[0], full)
    assert not torch.allclose(prompted.logits[0], plain.logits[0])


def test_bad_vectors_and_layers(models, tok):
    model = models("gpt2")
    with pytest.raises(SteeringError, match="hidden size is 64"):
        with steer(model, {1: torch.zeros(65)}):
            pass
    with pytest.raises(LayerError, match="out of range"):
        with steer(model, {4: torch.zeros(64)}):
            pass
    with pytest.raises(SteeringError, match="unknown positions"):
        with steer(model, {1: torch.zeros(64)}, positions="first"):
            pass
    assert all(not block._forward_hooks for block in decoder_layers(model))


def test_foreign_provenance_warns(models):
    model = models("gpt2")
    with pytest.warns(UserWarning, match="architecture 'LlamaForCausalLM'"):
        with steer(model, {1: torch.zeros(64)}, provenance={"architecture": "LlamaForCausalLM"}):
            pass
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with steer(model, {1: torch.zeros(64)}, provenance={"architecture": "GPT2LMHeadModel"}):
            pass


def test_steering_from_file_picks_layers(tmp_path):
    path = save_vectors(tmp_path / "v.safetensors", {1: torch.ones(64), 2: torch.ones(64)}, {"architecture": "GPT2LMHeadModel"})
    steering = Steering.from_file(path, alpha=2.0, layers=[2])
    assert list(steering.vectors) == [2] and steering.describe() == {"layers": "2", "alpha": 2.0, "positions": "last"}
    with pytest.raises(LayerError, match="no vector for layers \\[3\\]"):
        Steering.from_file(path, layers=[3])


# ----- lm-evaluation-harness export ------------------------------------------------------


def lm_eval_steered_forward(model, path, ids):
    """What lm-evaluation-harness's SteeredModel does with a .pt steer_path: load it with
    weights_only=True, hook each named module of model.base_model and add coefficient x vector
    to the module's output (first element of a tuple) at every position."""
    config = torch.load(path, weights_only=True)
    modules = dict(model.base_model.named_modules())
    handles = []
    for hookpoint, info in config.items():
        assert info["action"] == "add" and info["bias"] is None and info["head_index"] is None
        delta = info["steering_vector"].to(model.dtype) * float(info["steering_coefficient"])

        def hook(_module, _input, output, delta=delta):
            return (output[0] + delta, *output[1:]) if isinstance(output, tuple) else output + delta

        handles.append(modules[hookpoint].register_forward_hook(hook))
    try:
        with torch.no_grad():
            return model(ids).logits
    finally:
        for handle in handles:
            handle.remove()


@pytest.mark.parametrize("arch", ARCHS)
def test_lm_eval_export_round_trips_through_the_harness_reader(arch, models, tok, tmp_path):
    model = models(arch)
    vectors = {1: random_vector(model, 6), 3: random_vector(model, 7)}
    path = export_lm_eval(tmp_path / "steer.pt", vectors, 1.5, architecture=type(model).__name__)
    for layer in vectors:
        assert lm_eval_hookpoint(layer, model=model) == lm_eval_hookpoint(layer, architecture=type(model).__name__)
    ids = ids_of(tok, "the blue house near the tall bridge")
    with torch.no_grad(), steer(model, vectors, alpha=1.5, positions="all"):
        ours = model(ids).logits
    torch.testing.assert_close(lm_eval_steered_forward(model, path, ids), ours)


# ----- the CLI ---------------------------------------------------------------------------


def test_cli_steer_builds_vectors_from_stored_activations(tmp_path, models, tok):
    data = toy_dataset(24)
    store = ActivationStore(tmp_path / "ws")
    record = extract_to_store(models("gpt2"), tok, data, store, layers=[1, 2], checkpoint="step7")
    result = CliRunner().invoke(app, [
        "steer", str(tmp_path / "ws"), "--checkpoint", "step7", "--dataset", "toy", "--layers", "2",
        "--protocol", "paper", "--export-lm-eval", str(tmp_path / "x.pt"), "--alpha", "2",
    ])
    assert result.exit_code == 0, result.output
    vectors, provenance = load_vectors(tmp_path / "ws" / "steering" / f"toy__step7__paper-std__L2__seed0__{record.key[:8]}.safetensors")
    acts = store.load(record, layers=[2])[0]
    torch.testing.assert_close(vectors[2], steering_vector(acts, data.labels, rows=np.arange(12), scale_rows=np.arange(24)))
    assert provenance["checkpoint"] == "step7" and provenance["architecture"] == "GPT2LMHeadModel" and provenance["protocol"] == "paper"
    assert list(torch.load(tmp_path / "x.pt", weights_only=True)) == ["h.2"]


def test_select_record_knows_a_local_checkpoint_by_its_folder_name():
    from trusttrace.cli.steering import select_record
    from trusttrace.store import ActivationRecord

    local = ActivationRecord("k1", Path("k1"), {"model": "/runs/a/step_1000", "checkpoint": "/runs/a/step_1000", "dataset": "toy"})
    hub = ActivationRecord("k2", Path("k2"), {"model": "org/m", "checkpoint": "step8", "revision": "step8", "dataset": "toy"})
    assert select_record([local, hub], "step_1000", "toy", None) is local
    assert select_record([local, hub], "/runs/a/step_1000", "toy", None) is local
    assert select_record([local, hub], "step8", "toy", None) is hub


def test_select_record_prefers_the_set_storing_the_layers_and_else_names_each_for_set():
    from trusttrace.cli.steering import select_record
    from trusttrace.store import ActivationRecord

    base = {"model": "org/m", "checkpoint": "step8", "dataset": "toy", "position": "last", "dtype": "float32"}
    every = ActivationRecord("aaaa1111", Path("a"), base | {"layers": [0, 1, 2, 3]})
    last = ActivationRecord("bbbb2222", Path("b"), base | {"layers": [3]})
    assert select_record([every, last], "step8", "toy", None, [1]) is every
    with pytest.raises(StoreError, match=r"2 activation sets match .*aaaa1111 \(model org/m, layers 0..3, .*bbbb2222 .*--set KEY"):
        select_record([every, last], "step8", "toy", None, [3])
    assert select_record([every, last], "step8", "toy", None, [3], key="bbbb") is last
    with pytest.raises(StoreError, match="--set 'cccc' names 0"):
        select_record([every, last], "step8", "toy", None, [3], key="cccc")


@pytest.mark.parametrize(
    "arguments, message",
    [
        (["--checkpoint", "step8", "--dataset", "toy", "--layers", "1"], "no activations for checkpoint 'step8'"),
        (["--checkpoint", "step7", "--dataset", "toy", "--layers", "3"], "layers [3] are not stored"),
        (["--checkpoint", "step7", "--dataset", "toy", "--layers", "1", "--export-lm-eval", "x.pt"], "needs --alpha"),
        (["--checkpoint", "step7", "--dataset", "toy", "--layers", "1", "--alpha", "3"], "--alpha is the coefficient of the --export-lm-eval file"),
        (["--checkpoint", "step7", "--dataset", "toy", "--layers", "1", "--model", "other"],
         "--model 'other' excludes the 1 that match); the workspace holds: checkpoint=step7 dataset=toy model="),
    ],
)
def test_cli_steer_errors_exit_2(arguments, message, tmp_path, models, tok, monkeypatch, capsys):
    from trusttrace.cli import main

    extract_to_store(models("gpt2"), tok, toy_dataset(24), ActivationStore(tmp_path / "ws"), layers=[1, 2], checkpoint="step7")
    monkeypatch.setattr(sys, "argv", ["trusttrace", "steer", str(tmp_path / "ws"), *arguments])
    with pytest.raises(SystemExit) as exited:
        main()
    assert exited.value.code == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and message in error
