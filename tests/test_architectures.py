"""Other decoder families the study's suites and their fine-tunes use: Mistral, Qwen2, Gemma, OLMo (and Bloom).

Each is built from a small random config (no download). Block discovery must find their
decoder layers without per-model code, and batched extraction (with the deepest block's
feed-forward network cut to the read position) must equal one statement at a time.
"""

from __future__ import annotations

import pytest
import torch
import transformers
from transformers import AutoConfig, AutoModelForCausalLM

from test_extract import one_at_a_time
from trusttrace.extract import extract_activations
from trusttrace.models import decoder_layers
from trusttrace.tiny import BOS_ID, EOS_ID, PAD_ID

FAMILIES = ["mistral", "qwen2", "gemma", "olmo", "olmo2", "qwen3", "gemma2", "bloom"]  # bloom's mlp adds the residual it is given


def family_model(model_type: str, vocab_size: int):
    config = AutoConfig.for_model(
        model_type, vocab_size=vocab_size, hidden_size=64, intermediate_size=128, num_hidden_layers=3,
        num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=128,
        bos_token_id=BOS_ID, eos_token_id=EOS_ID, pad_token_id=PAD_ID,
    )
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(config).eval()


@pytest.mark.parametrize("model_type", FAMILIES)
@pytest.mark.parametrize("side", ["left", "right"])
def test_blocks_found_and_batched_extraction_equals_one_at_a_time(model_type, side, tokenizer, statements):
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    if model_type not in CONFIG_MAPPING:
        pytest.skip(f"transformers {transformers.__version__} has no {model_type} models")
    model = family_model(model_type, len(tokenizer))
    assert len(decoder_layers(model)) == 3
    tokenizer.padding_side = side
    try:
        batched = extract_activations(model, tokenizer, statements, batch_size=4)
    finally:
        tokenizer.padding_side = "right"
    torch.testing.assert_close(batched, one_at_a_time(model, tokenizer, statements), rtol=1e-4, atol=1e-5)
