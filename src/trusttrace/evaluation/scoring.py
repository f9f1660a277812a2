"""Batched scoring and greedy generation with a causal LM, padding-safe and steering-aware.

`choice_logprobs` gives the summed log-probability of each candidate continuation of a
prompt: one forward per prompt when every continuation is a single token, else one forward per
(prompt, continuation) run under `prompt_boundary`, so a steered model scores a continuation
exactly as it would generate it token by token. Batches are left-padded with position ids that
count real tokens only, so results do not depend on the batch; a prefix all prompts share is
computed once and its KV cache reused.
"""

from __future__ import annotations

import copy
import inspect
import os
from collections.abc import Sequence

import numpy as np
import torch
from tqdm.auto import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from trusttrace.errors import EvaluationError
from trusttrace.extract import accepts_position_ids, pad_batch, pad_token_id, sorted_batches, tokenize_statements
from trusttrace.models import context_length
from trusttrace.steering import prompt_boundary

# A prefix shared by every prompt is run once and cached when it has at least this many tokens.
MIN_SHARED_PREFIX = 16


def choice_logprobs(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    choices: Sequence[Sequence[str]],
    *,
    batch_size: int = 16,
    desc: str = "score",
) -> list[np.ndarray]:
    """Summed log-probability of each of `choices[i]` as the continuation of `prompts[i]`.

    A continuation's tokens are those the tokenizer gives `prompt + choice` beyond the prompt's
    own tokens (or the choice tokenized alone when the two disagree at the boundary).
    Prompts too long for the model lose tokens from the left.
    """
    if len(prompts) != len(choices):
        raise EvaluationError(f"{len(prompts)} prompts but {len(choices)} lists of choices")
    pairs = [(i, j) for i, options in enumerate(choices) for j in range(len(options))]
    if not pairs:
        return [np.zeros(0) for _ in prompts]
    continuations = _continuations(tokenizer, prompts, choices, pairs)
    longest = max(len(c) for c in continuations)
    fitted, _ = _fit_prompts(tokenizer, prompts, context_length(model, tokenizer), longest, "the longest answer")
    scores = [np.zeros(len(options)) for options in choices]
    if longest == 1:
        wanted = [[] for _ in prompts]
        for (i, j), tokens in zip(pairs, continuations):
            wanted[i].append((j, tokens[0]))
        for rows, logprobs in _forward_batches(model, tokenizer, fitted, [len(p) for p in fitted], 1, batch_size, desc):
            for k, row in enumerate(rows):
                columns, tokens = zip(*wanted[row])
                scores[row][list(columns)] = logprobs[k, -1, list(tokens)].cpu().numpy()
        return scores
    sequences = [fitted[i] + tokens for (i, _), tokens in zip(pairs, continuations)]
    prompt_lengths = [len(fitted[i]) for i, _ in pairs]
    for rows, logprobs in _forward_batches(model, tokenizer, sequences, prompt_lengths, longest + 1, batch_size, desc):
        for k, row in enumerate(rows):
            tokens = torch.tensor(continuations[row], device=logprobs.device)
            width = logprobs.shape[1]
            picked = logprobs[k, width - 1 - len(tokens) : width - 1].gather(1, tokens.unsqueeze(1))
            i, j = pairs[row]
            scores[i][j] = float(picked.sum())
    return scores


def _continuations(
    tokenizer: PreTrainedTokenizerBase, prompts: Sequence[str], choices: Sequence[Sequence[str]], pairs: list[tuple[int, int]]
) -> list[list[int]]:
    """The token ids each choice adds to its prompt."""
    prompt_ids = tokenizer(list(prompts))["input_ids"]
    full_ids = tokenizer([prompts[i] + choices[i][j] for i, j in pairs])["input_ids"]
    result = []
    for (i, j), full in zip(pairs, full_ids):
        prompt = prompt_ids[i]
        if full[: len(prompt)] == prompt and len(full) > len(prompt):
            result.append(list(full[len(prompt) :]))
            continue
        alone = tokenizer(choices[i][j], add_special_tokens=False)["input_ids"]
        if not alone:
            raise EvaluationError(f"choice {choices[i][j]!r} of prompt {i} has no tokens")
        result.append(list(alone))
    _check_distinct(choices, pairs, result)
    return result


def _check_distinct(choices: Sequence[Sequence[str]], pairs: list[tuple[int, int]], continuations: list[list[int]]) -> None:
    """An EvaluationError when two choices of one prompt are the same tokens: their scores could
    never differ, and every answer would silently be the first (e.g. both are the unknown token)."""
    seen: dict[tuple[int, tuple[int, ...]], int] = {}
    for (i, j), tokens in zip(pairs, continuations):
        earlier = seen.setdefault((i, tuple(tokens)), j)
        if earlier != j:
            raise EvaluationError(
                f"choices {choices[i][earlier]!r} and {choices[i][j]!r} of prompt {i} are the same tokens {tokens} for "
                "this tokenizer, so their scores cannot differ (an unknown token?); choose answers it can tell apart"
            )


def _forward_batches(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    sequences: list[list[int]],
    prompt_lengths: list[int],
    keep: int,
    batch_size: int,
    desc: str,
):
    """Yield (rows, log-probs of the last `keep` positions, float32 [batch, keep, vocab] on the model's device) per batch.

    A token prefix that every prompt shares (a template's instructions, a few-shot primer) is
    run once and its KV cache reused by every batch, which then holds only the rest.
    """
    device = next(model.parameters()).device
    keep_argument = _logits_to_keep_argument(model)
    cache_argument = _cache_argument(model)
    pass_positions = accepts_position_ids(model)
    pad = pad_token_id(tokenizer, model)
    with torch.inference_mode(), tqdm(total=len(sequences), desc=desc, unit="seq", disable=None, leave=False) as bar:
        shared, prefix_cache = _prefix_cache(model, sequences, prompt_lengths, cache_argument, device)
        batches = sorted_batches([len(s) - shared for s in sequences], batch_size)
        for rows in batches:
            ids, mask, positions = pad_batch([sequences[r][shared:] for r in rows], pad, "left", device)
            width = ids.shape[1]
            prompt = torch.zeros_like(mask, dtype=torch.bool)
            for k, r in enumerate(rows):
                start = width - (len(sequences[r]) - shared)
                prompt[k, start : start + prompt_lengths[r] - shared] = True
            kwargs = {"position_ids": positions + shared} if pass_positions else {}
            if keep_argument:
                kwargs[keep_argument] = min(keep, width)
            if prefix_cache is not None:
                cache = copy.deepcopy(prefix_cache)
                cache.batch_repeat_interleave(len(rows))
                kwargs[cache_argument] = cache
                mask = torch.cat([torch.ones((len(rows), shared), dtype=mask.dtype, device=device), mask], dim=1)
            with prompt_boundary(prompt):
                logits = model(input_ids=ids, attention_mask=mask, use_cache=prefix_cache is not None, **kwargs).logits
            yield rows, torch.log_softmax(logits[:, -keep:].float(), dim=-1)
            bar.update(len(rows))


def _prefix_cache(model: PreTrainedModel, sequences: list[list[int]], prompt_lengths: list[int], cache_argument: str | None, device):
    """(length, KV cache) of the token prefix all sequences share, or (0, None) when not worth it.

    The prefix stops before every prompt's last token, so each batch still computes the
    log-probs it needs. Models whose cache cannot be repeated across a batch get no sharing.
    """
    if len(sequences) < 2 or cache_argument is None:
        return 0, None
    length = min(min(prompt_lengths) - 1, len(os.path.commonprefix(sequences)))
    if length < MIN_SHARED_PREFIX:
        return 0, None
    ids = torch.tensor([sequences[0][:length]], device=device)
    with prompt_boundary(torch.ones_like(ids, dtype=torch.bool), complete=False):
        output = model(input_ids=ids, attention_mask=torch.ones_like(ids), use_cache=True)
    cache = output.get(cache_argument)  # the output names the cache like the argument
    return (length, cache) if hasattr(cache, "batch_repeat_interleave") else (0, None)


def _cache_argument(model: PreTrainedModel) -> str | None:
    """The forward argument that takes a KV cache ("cache" in transformers 5, "past_key_values" before)."""
    parameters = inspect.signature(model.forward).parameters
    return next((name for name in ("cache", "past_key_values") if name in parameters), None)


def _logits_to_keep_argument(model: PreTrainedModel) -> str | None:
    """The forward argument that limits the LM head to the last positions (name varies by version)."""
    parameters = inspect.signature(model.forward).parameters
    return next((name for name in ("logits_to_keep", "num_logits_to_keep") if name in parameters), None)


def generate_texts(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    *,
    max_new_tokens: int,
    batch_size: int = 16,
    desc: str = "generate",
) -> list[str]:
    """Greedy continuations of `prompts` (new text only), in batches with left padding.

    Prompts longer than the model's context minus `max_new_tokens` lose tokens from the left.
    """
    if max_new_tokens < 1:
        raise EvaluationError(f"max_new_tokens must be at least 1, got {max_new_tokens}")
    encoded, _ = _fit_prompts(tokenizer, prompts, context_length(model, tokenizer), max_new_tokens, "the generated tokens")
    device = next(model.parameters()).device
    pad = pad_token_id(tokenizer, model)
    config = greedy_config(model, max_new_tokens, pad)
    texts = [""] * len(prompts)
    batches = sorted_batches([len(ids) for ids in encoded], batch_size)
    with torch.inference_mode(), tqdm(total=len(prompts), desc=desc, unit="prompt", disable=None, leave=False) as bar:
        for rows in batches:
            ids, mask, _ = pad_batch([encoded[r] for r in rows], pad, "left", device)
            output = model.generate(input_ids=ids, attention_mask=mask, generation_config=config)
            for k, row in enumerate(rows):
                texts[row] = tokenizer.decode(output[k, ids.shape[1] :], skip_special_tokens=True)
            bar.update(len(rows))
    return texts


def greedy_config(model: PreTrainedModel, max_new_tokens: int, pad: int):
    """The model's generation config made greedy and deterministic, with a fixed length budget."""
    config = copy.deepcopy(model.generation_config)
    config.update(
        do_sample=False, num_beams=1, temperature=None, top_p=None, top_k=None,
        max_new_tokens=max_new_tokens, max_length=None, min_length=None, pad_token_id=pad,
    )
    return config


def _fit_prompts(
    tokenizer: PreTrainedTokenizerBase, prompts: Sequence[str], context: int, reserved: int, for_what: str
) -> tuple[list[list[int]], np.ndarray]:
    """The prompts' token ids, each cut from the left to leave `reserved` of the model's `context` tokens for `for_what`."""
    room = context - reserved
    limit = f"the {room} tokens the model's context of {context} leaves beside {for_what} ({reserved})"
    return tokenize_statements(tokenizer, prompts, room, limit=limit, noun="prompt")
