"""Tiny models and tokenizers built locally, with no download.

The offline demo, the tests and the benchmarks all need real `transformers` models and real
tokenizers without the Hugging Face Hub; this module makes them from small configs (random
weights) and a word-level tokenizer trained with `tokenizers` on the given texts.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
from transformers import AutoModelForCausalLM, PreTrainedModel, PreTrainedTokenizerFast
from transformers import GPT2Config, GPTNeoXConfig, LlamaConfig

ARCHITECTURES = ("llama", "gpt_neox", "gpt2")

SPECIAL_TOKENS = {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "pad_token": "<pad>"}
# Ids follow the order of SPECIAL_TOKENS, which the trainer assigns first.
BOS_ID, EOS_ID, PAD_ID = 0, 1, 3


def train_tokenizer(texts: Iterable[str], vocab_size: int = 2000) -> PreTrainedTokenizerFast:
    """Train a lower-casing word-level BPE tokenizer on `texts` and wrap it for transformers.

    It prepends `<s>` to every text, as Llama-style tokenizers do.
    """
    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.normalizer = normalizers.Lowercase()
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=list(SPECIAL_TOKENS.values()), show_progress=False
    )
    tokenizer.train_from_iterator(list(texts), trainer=trainer)
    bos_id = tokenizer.token_to_id("<s>")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", bos_id)]
    )
    # A causal LM's inputs: without this, transformers before 4.4x also returns token_type_ids, which Llama refuses.
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, model_input_names=["input_ids", "attention_mask"], **SPECIAL_TOKENS)


def tiny_config(arch: str, vocab_size: int, hidden: int = 64, layers: int = 4, heads: int = 4, context: int = 128):
    """A small `transformers` config of the named architecture (llama, gpt_neox or gpt2)."""
    if arch == "llama":
        return LlamaConfig(
            vocab_size=vocab_size, hidden_size=hidden, intermediate_size=hidden * 2, num_hidden_layers=layers,
            num_attention_heads=heads, num_key_value_heads=heads, max_position_embeddings=context,
            bos_token_id=BOS_ID, eos_token_id=EOS_ID, pad_token_id=PAD_ID, tie_word_embeddings=False,
        )
    if arch == "gpt_neox":
        return GPTNeoXConfig(
            vocab_size=vocab_size, hidden_size=hidden, intermediate_size=hidden * 4, num_hidden_layers=layers,
            num_attention_heads=heads, max_position_embeddings=context, bos_token_id=BOS_ID, eos_token_id=EOS_ID,
            pad_token_id=PAD_ID, use_parallel_residual=True, rotary_pct=0.25,
        )
    if arch == "gpt2":
        return GPT2Config(
            vocab_size=vocab_size, n_embd=hidden, n_layer=layers, n_head=heads, n_positions=context,
            bos_token_id=BOS_ID, eos_token_id=EOS_ID, pad_token_id=PAD_ID,
        )
    raise ValueError(f"unknown tiny architecture {arch!r}; expected one of {ARCHITECTURES}")


def tiny_model(arch: str, vocab_size: int, seed: int = 0, **config_kwargs) -> PreTrainedModel:
    """A randomly initialised causal LM of the named architecture, in fp32 and eval mode."""
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(tiny_config(arch, vocab_size, **config_kwargs))
    model.eval()
    return model
