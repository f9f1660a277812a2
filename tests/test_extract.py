"""Extraction: batched equals one-at-a-time, layer i is block i's output, positions, truncation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from trusttrace.errors import LayerError, TrustTraceError
from trusttrace.extract import extract_activations, iter_activations, plan_batches, reduce_positions
from trusttrace.models import block_hidden, decoder_layers, text_config


def one_at_a_time(model, tokenizer, statements, position="last"):
    """The reference protocol: one statement per forward pass, a hook on every block."""
    blocks = decoder_layers(model)
    out = torch.zeros(len(blocks), len(statements), text_config(model).hidden_size)
    for i, text in enumerate(statements):
        captured = {}
        handles = [
            block.register_forward_hook(lambda _m, _i, o, j=j: captured.__setitem__(j, block_hidden(o)))
            for j, block in enumerate(blocks)
        ]
        inputs = tokenizer(text, return_tensors="pt")
        with torch.no_grad():
            model(**inputs)
        for handle in handles:
            handle.remove()
        ids = inputs["input_ids"][0]
        own = 1 if len(ids) > 1 and ids[0] == tokenizer.bos_token_id else 0  # the statement's own tokens
        for j in range(len(blocks)):
            states = captured[j][0]
            out[j, i] = {"last": states[-1], "first": states[own], "mean": states[own:].mean(0)}[position]
    return out


@pytest.mark.parametrize("side", ["left", "right"])
@pytest.mark.parametrize("position", ["last", "first", "mean"])
def test_batched_equals_one_at_a_time(arch, side, position, model_factory, tokenizer, statements):
    model = model_factory(arch)
    tokenizer.padding_side = side
    try:
        batched = extract_activations(model, tokenizer, statements, position=position, batch_size=4)
    finally:
        tokenizer.padding_side = "right"
    reference = one_at_a_time(model, tokenizer, statements, position)
    assert batched.shape == reference.shape
    torch.testing.assert_close(batched, reference, rtol=1e-4, atol=1e-5)


def test_first_and_mean_read_the_statement_not_its_bos(model_factory, tokenizer, statements):
    assert tokenizer(statements[0])["input_ids"][0] == tokenizer.bos_token_id
    model = model_factory("llama")
    for position in ("first", "mean"):
        acts = extract_activations(model, tokenizer, statements[:6], position=position, batch_size=3)
        assert acts.std(dim=1).amax() > 1e-3  # a BOS state would be the same for every statement
        torch.testing.assert_close(acts, one_at_a_time(model, tokenizer, statements[:6], position), rtol=1e-4, atol=1e-5)
    with pytest.raises(TrustTraceError, match="list of strings"):
        extract_activations(model, tokenizer, "one statement")


def test_layer_i_is_output_of_block_i_not_final_norm(arch, model_factory, tokenizer, statements):
    model = model_factory(arch)
    acts = extract_activations(model, tokenizer, statements[:2], batch_size=2)
    with torch.no_grad():
        hidden = model(**tokenizer(statements[0], return_tensors="pt"), output_hidden_states=True).hidden_states
    # hidden_states[0] is the embedding output; [i + 1] is block i, except the last, which may be normed.
    for layer in range(acts.shape[0] - 1):
        torch.testing.assert_close(acts[layer, 0], hidden[layer + 1][0, -1], rtol=1e-4, atol=1e-5)
    assert not torch.allclose(acts[-1, 0], hidden[-1][0, -1], atol=1e-3)


def _unwrap_first_input(_module, args, kwargs):
    if args and isinstance(args[0], tuple):
        args = (args[0][0], *args[1:])
    if isinstance(kwargs.get("hidden_states"), tuple):
        kwargs["hidden_states"] = kwargs["hidden_states"][0]
    return args, kwargs


@pytest.mark.parametrize("arch_name", ["llama", "gpt_neox", "gpt2"])
def test_tuple_block_outputs_read_like_bare_tensors(arch_name, model_factory, tokenizer, statements):
    """Blocks return a tuple (transformers 4) or a bare tensor (5): both must read the same."""
    model = model_factory(arch_name)
    blocks = decoder_layers(model)
    chosen = list(range(len(blocks) - 1))  # the last block's output would feed the final norm
    plain = extract_activations(model, tokenizer, statements, layers=chosen, batch_size=3)
    handles = [block.register_forward_hook(lambda _m, _i, o: o if isinstance(o, tuple) else (o, None)) for block in blocks]
    handles += [block.register_forward_pre_hook(_unwrap_first_input, with_kwargs=True) for block in blocks]
    try:
        as_tuples = extract_activations(model, tokenizer, statements, layers=chosen, batch_size=3)
    finally:
        for handle in handles:
            handle.remove()
    torch.testing.assert_close(plain, as_tuples)


def test_a_feed_forward_network_shared_by_blocks_runs_everywhere(tokenizer, statements):
    """Only the deepest block's own network may be cut to the read positions, never a shared one."""
    from trusttrace.tiny import tiny_model

    model = tiny_model("llama", len(tokenizer), seed=0)  # its own copy: the blocks are rewired below
    blocks = decoder_layers(model)
    for block in blocks[1:]:
        block.mlp = blocks[0].mlp
    acts = extract_activations(model, tokenizer, statements, layers=[0, 1], batch_size=4)
    torch.testing.assert_close(acts, one_at_a_time(model, tokenizer, statements)[:2], rtol=1e-4, atol=1e-5)


def test_layer_subset_and_order(model_factory, tokenizer, statements):
    model = model_factory("llama")
    every = extract_activations(model, tokenizer, statements)
    some = extract_activations(model, tokenizer, statements, layers=[3, 1, -4])
    torch.testing.assert_close(some, every[[3, 1, 0]])


def test_layer_out_of_range(model_factory, tokenizer, statements):
    with pytest.raises(LayerError, match="layer 4 is out of range"):
        extract_activations(model_factory("gpt2"), tokenizer, statements, layers=[0, 4])


def test_unknown_position(model_factory, tokenizer, statements):
    with pytest.raises(TrustTraceError, match="unknown position 'middle'"):
        extract_activations(model_factory("gpt2"), tokenizer, statements, position="middle")


def test_long_statement_truncated_from_left_with_one_warning(tokenizer):
    from trusttrace.tiny import tiny_model

    model = tiny_model("llama", len(tokenizer), context=8)
    long_text = " ".join(["the red cat sees the house"] * 4)
    with pytest.warns(UserWarning, match="2 statement\\(s\\) are longer than the model's context of 8") as caught:
        acts = extract_activations(model, tokenizer, [long_text, long_text, "the cat"])
    assert len(caught) == 1
    kept = tokenizer(long_text)["input_ids"]
    truncated = [kept[0]] + kept[-7:]
    with torch.no_grad():
        out = model(input_ids=torch.tensor([truncated]), output_hidden_states=True).hidden_states
    torch.testing.assert_close(acts[0, 0], out[1][0, -1], rtol=1e-4, atol=1e-5)



def test_the_sidecar_counts_truncated_statements(tokenizer, tmp_path):
    from trusttrace.data import DatasetCard, TrustDataset
    from trusttrace.store import ActivationStore
    from trusttrace.tiny import tiny_model
    from trusttrace.extract_stage import extract_to_store

    model = tiny_model("llama", len(tokenizer), context=8)
    long_text = " ".join(["the red cat sees the house"] * 4)
    card = DatasetCard(name="lengths", dimension="user", label_1="long", label_0="short", source="test", licence="none")
    statements = [long_text, "the cat", long_text + " again", "a dog"]
    data = TrustDataset(name="lengths", statements=statements, labels=np.array([1, 0, 1, 0]), groups=None, card=card, source="test")
    with pytest.warns(UserWarning, match="2 statement"):
        record = extract_to_store(model, tokenizer, data, ActivationStore(tmp_path), batch_size=1)
    assert record.provenance["truncated"] == 2
    assert ActivationStore(tmp_path).records()[0].provenance["truncated"] == 2
    elsewhere = ActivationStore(tmp_path / "api").save(torch.zeros(2, 4, 3), data, record.provenance | {"layers": [0, 1]})
    assert elsewhere.provenance["truncated"] is None  # states extracted outside the store: not known

def test_a_batch_is_handed_over_once_the_next_is_queued(model_factory, tokenizer, statements):
    """So that on a GPU the caller's work on a batch overlaps the next forward pass."""
    model = model_factory("llama")
    forwards = []
    handle = model.base_model.register_forward_pre_hook(lambda *_: forwards.append(len(forwards)))
    try:
        handed = [len(forwards) for _ in iter_activations(model, tokenizer, statements, batch_size=2)]
    finally:
        handle.remove()
    batches = len(forwards)
    assert batches == -(-len(statements) // 2) >= 3
    assert handed == list(range(2, batches + 1)) + [batches]  # batch k comes after forward k + 1 ran


def test_while_a_batch_is_computed_at_most_one_other_is_held(model_factory, tokenizer, statements):
    """The memory bound: the output plus the batch handed over next and the one being computed."""
    import gc

    from trusttrace.extract import ActivationBatch, HostCopy

    model = model_factory("llama")
    held = []

    def count(*_):
        gc.collect()
        held.append(sum(type(value) in (ActivationBatch, HostCopy) for value in gc.get_objects()))

    handle = model.base_model.register_forward_pre_hook(count)
    try:
        extract_activations(model, tokenizer, statements, batch_size=2)
    finally:
        handle.remove()
    assert len(held) >= 3 and max(held) == 1


def test_batches_by_token_budget_cover_every_row_once():
    lengths = [5, 1, 9, 3, 3, 7, 2]
    batches = plan_batches(lengths, batch_size=None, batch_tokens=10)
    rows = sorted(int(r) for batch in batches for r in batch)
    assert rows == list(range(len(lengths)))
    for batch in batches:
        assert len(batch) * max(lengths[r] for r in batch) <= 10 or len(batch) == 1


def test_the_longest_statements_come_first_then_batches_by_falling_size():
    """The longest batch first (memory fails at once), the smallest last (its hand-over is not overlapped)."""
    lengths = [20, 19, 10, 10, 10, 10, 5, 5, 5, 5, 5, 5, 5, 5, 2, 2]
    batches = plan_batches(lengths, batch_size=None, batch_tokens=40)
    assert sorted(batches[0].tolist()) == [0, 1]
    sizes = [len(batch) for batch in batches[1:]]
    assert sizes == sorted(sizes, reverse=True) and len(set(sizes)) > 1
    assert sorted(int(r) for batch in batches for r in batch) == list(range(len(lengths)))


def test_a_batch_holds_at_most_max_rows_however_large_the_token_budget():
    lengths = [4] * 25
    batches = plan_batches(lengths, batch_size=None, batch_tokens=10_000, max_rows=10)
    assert [len(batch) for batch in batches] == [10, 10, 5]
    assert sorted(int(r) for batch in batches for r in batch) == list(range(25))


def test_reduce_positions_under_both_paddings():
    hidden = torch.arange(2 * 4, dtype=torch.float32).reshape(2, 4, 1)
    right = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1]])
    left = torch.tensor([[0, 0, 1, 1], [1, 1, 1, 1]])
    assert reduce_positions(hidden, right, "last").flatten().tolist() == [1.0, 7.0]
    assert reduce_positions(hidden, left, "last").flatten().tolist() == [3.0, 7.0]
    assert reduce_positions(hidden, left, "first").flatten().tolist() == [2.0, 4.0]
    assert reduce_positions(hidden, right, "mean").flatten().tolist() == [0.5, 5.5]


def test_a_statement_of_no_tokens_is_one_clear_error(tokenizer):
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    from trusttrace.tiny import SPECIAL_TOKENS, tiny_model

    raw = Tokenizer.from_str(tokenizer.backend_tokenizer.to_str())
    raw.post_processor = None  # no BOS, as GPT-2's and Pythia's tokenizers
    no_bos = PreTrainedTokenizerFast(tokenizer_object=raw, model_input_names=["input_ids", "attention_mask"], **SPECIAL_TOKENS)
    with pytest.raises(TrustTraceError, match=r"statement 1 \(''\) is no tokens to this tokenizer, which adds no BOS"):
        extract_activations(tiny_model("gpt_neox", len(tokenizer)), no_bos, ["the cat", "", "the red cat"])


def test_a_pad_id_the_embedding_lacks_is_passed_over(tokenizer, statements):
    import copy

    from trusttrace.extract import pad_token_id
    from trusttrace.tiny import tiny_model

    model = tiny_model("llama", len(tokenizer))
    added = copy.deepcopy(tokenizer)
    added.add_special_tokens({"pad_token": "<newpad>"})  # without resizing the model's embeddings
    assert added.pad_token_id == len(tokenizer) and pad_token_id(added, model) == added.eos_token_id
    torch.testing.assert_close(
        extract_activations(model, added, statements, batch_size=4), one_at_a_time(model, added, statements), rtol=1e-4, atol=1e-5
    )
