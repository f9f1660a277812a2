"""Side effects of steering: how far it moves the model's next-token distributions on neutral text.

On a set of reference texts, every next-token distribution of the steered model is compared
with the unsteered model's: mean KL(steered ‖ unsteered) per predicted token, and the
perplexity of both. Each text is read as the model's own continuation of its first token, so
"last" and "generated" steering touch every later position, as they would while generating;
with positions="prompt" the whole text is the prompt.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from trusttrace.evaluation.results import make_table, metric_row
from trusttrace.evaluation.templates import NEUTRAL_TEXTS
from trusttrace.extract import accepts_position_ids, pad_batch, pad_token_id, sorted_batches, tokenize_statements
from trusttrace.models import context_length
from trusttrace.steering import Steering, prompt_boundary

TASK = "side_effects"


def side_effects(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    steering: Steering,
    texts: Sequence[str] = NEUTRAL_TEXTS,
    *,
    batch_size: int = 16,
):
    """Table rows kl, perplexity (steered) and perplexity_unsteered over the tokens of `texts`."""
    encoded, _ = tokenize_statements(tokenizer, list(texts), context_length(model, tokenizer))
    device = next(model.parameters()).device
    pass_positions = accepts_position_ids(model)
    kl_sum = nll_steered = nll_plain = 0.0
    tokens = 0
    with torch.inference_mode():
        for rows in sorted_batches([len(ids) for ids in encoded], batch_size):
            ids, mask, positions = pad_batch([encoded[r] for r in rows], pad_token_id(tokenizer, model), "left", device)
            kwargs = {"input_ids": ids, "attention_mask": mask, "use_cache": False}
            if pass_positions:
                kwargs["position_ids"] = positions
            plain = torch.log_softmax(model(**kwargs).logits.float(), dim=-1)
            with steering.apply(model), prompt_boundary(_prompt_part(mask, steering.positions)):
                steered = torch.log_softmax(model(**kwargs).logits.float(), dim=-1)
            predicted = (mask[:, :-1] * mask[:, 1:]).bool()
            targets = ids[:, 1:].unsqueeze(-1)
            kl = F.kl_div(plain[:, :-1], steered[:, :-1], log_target=True, reduction="none").sum(-1)
            kl_sum += float(kl[predicted].sum())
            nll_steered -= float(steered[:, :-1].gather(-1, targets).squeeze(-1)[predicted].sum())
            nll_plain -= float(plain[:, :-1].gather(-1, targets).squeeze(-1)[predicted].sum())
            tokens += int(predicted.sum())
    if tokens == 0:
        return make_table([metric_row(TASK, name, math.nan, 0) for name in ("kl", "perplexity", "perplexity_unsteered")])
    return make_table([
        metric_row(TASK, "kl", kl_sum / tokens, tokens),
        metric_row(TASK, "perplexity", math.exp(nll_steered / tokens), tokens),
        metric_row(TASK, "perplexity_unsteered", math.exp(nll_plain / tokens), tokens),
    ])


def _prompt_part(mask: torch.Tensor, positions: str) -> torch.Tensor:
    """The positions read as prompt: the whole text for "prompt" steering, else its first token."""
    real = mask.bool()
    if positions == "prompt":
        return real
    return real & (real.cumsum(dim=1) == 1)
