"""Pre-train a tiny causal LM on the synthetic world, saving log-spaced checkpoints.

The checkpoints are ordinary Hugging Face model folders (`step_0000`, `step_0020`, ...), each
with the model, the tokenizer and a `trusttrace.json` saying the step and tokens seen, so the
rest of trusttrace can treat the run as a `local:` checkpoint suite.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from tqdm.auto import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerFast

from trusttrace.demo.world import World
from trusttrace.errors import ConfigError
from trusttrace.models import quiet_transformers
from trusttrace.tiny import PAD_ID, tiny_model, train_tokenizer

CHECKPOINT_META = "trusttrace.json"
STAGING = ".staging"
# Large enough for the BPE trainer to merge every word of the world into a single token.
VOCAB_LIMIT = 8000


def checkpoint_steps(steps: int, checkpoints: int) -> list[int]:
    """Step 0, then `checkpoints - 1` log-spaced steps ending at `steps` (fewer if they collide).

    The first non-zero step is `steps / 50` (at least 1): earlier checkpoints of a tiny run
    all look like the random init, so spending more of them there would show nothing.
    """
    if steps < 1:
        raise ConfigError(f"steps must be at least 1, got {steps}")
    if checkpoints < 2:
        raise ConfigError(f"checkpoints must be at least 2 (the random init and the last step), got {checkpoints}")
    first = max(1, steps // 50)
    if checkpoints == 2 or first == steps:
        return [0, steps]
    ratio = (steps / first) ** (1 / (checkpoints - 2))
    return sorted({0, steps, *(min(steps, round(first * ratio**i)) for i in range(checkpoints - 1))})


def checkpoint_name(step: int, steps: int) -> str:
    """Folder name of a checkpoint, zero-padded so that names sort in step order."""
    return f"step_{step:0{max(4, len(str(steps)))}d}"


@contextmanager
def deterministic_torch():
    """Run the body with torch's deterministic algorithms on, restoring the previous setting."""
    previous = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(previous)


def encode_corpus(tokenizer: PreTrainedTokenizerFast, corpus: list[str]) -> list[torch.Tensor]:
    """Token ids of every corpus sentence (each starting with the tokenizer's BOS)."""
    return [torch.tensor(ids) for ids in tokenizer(corpus)["input_ids"]]


def save_checkpoint(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerFast, folder: Path, step: int, tokens: int
) -> Path:
    """Write one checkpoint folder atomically: build it in `.staging/` beside it, then rename it.

    A crash leaves at most a hidden `.staging/` folder, which `local:` suites do not list.
    """
    staging = folder.parent / STAGING
    temp = staging / f"{folder.name}.{os.getpid()}"
    shutil.rmtree(temp, ignore_errors=True)
    temp.mkdir(parents=True)
    try:
        with quiet_transformers():
            model.save_pretrained(temp, safe_serialization=True)
            tokenizer.save_pretrained(temp)
        (temp / CHECKPOINT_META).write_text(json.dumps({"step": step, "tokens": tokens}) + "\n")
        if folder.exists():
            previous = staging / f"{temp.name}.previous"
            folder.replace(previous)
            temp.replace(folder)
            shutil.rmtree(previous)
        else:
            temp.replace(folder)
    except BaseException:
        shutil.rmtree(temp, ignore_errors=True)
        raise
    if not any(staging.iterdir()):
        staging.rmdir()
    return folder


def world_tokenizer(world: World) -> PreTrainedTokenizerFast:
    """A tokenizer trained on the world's corpus in which every word is a single token."""
    tokenizer = train_tokenizer(world.corpus, vocab_size=VOCAB_LIMIT)
    tokenizer.padding_side = "right"
    return tokenizer


def learning_rate(step: int, steps: int, peak: float) -> float:
    """Linear warm-up to `peak` over the first 100 steps (a tenth of short runs), then cosine
    decay to a tenth of `peak` at the last step."""
    warmup = min(100, steps // 10 + 1)
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, steps - warmup)
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def sentence_batches(n_sentences: int, batch_size: int, generator: torch.Generator) -> Iterator[list[int]]:
    """Endless batches of sentence indices: every sentence once per epoch, epochs shuffled.

    Batches mix sentences of all kinds; batching by length would save padding but makes
    batches of one kind (facts, claims), which stops the model from learning to judge claims.
    """
    order: list[int] = []
    while True:
        while len(order) < batch_size:
            order += torch.randperm(n_sentences, generator=generator).tolist()
        yield order[:batch_size]
        order = order[batch_size:]


def next_token_loss(model: PreTrainedModel, sentences: list[torch.Tensor]) -> tuple[torch.Tensor, int]:
    """Mean next-token loss of a batch of sentences (right-padded, padding masked out), and
    the number of tokens in the batch."""
    lengths = torch.tensor([len(sentence) for sentence in sentences])
    input_ids = torch.nn.utils.rnn.pad_sequence(sentences, batch_first=True, padding_value=PAD_ID)
    mask = torch.arange(input_ids.shape[1]) < lengths[:, None]
    labels = input_ids.masked_fill(~mask, -100)
    return model(input_ids=input_ids, attention_mask=mask.long(), labels=labels).loss, int(lengths.sum())


def pretrain(
    world: World,
    out_dir: str | Path,
    *,
    arch: str = "llama",
    steps: int = 1000,
    checkpoints: int = 12,
    seed: int = 0,
    hidden: int = 64,
    layers: int = 4,
    heads: int = 4,
    batch_size: int = 128,
    lr: float = 7e-3,
    weight_decay: float = 0.1,
    progress: bool = True,
) -> list[Path]:
    """Train a tokenizer and a tiny `arch` model on `world.corpus`; return the checkpoint folders.

    Plain next-token training with AdamW on shuffled batches of corpus sentences, checkpoints
    at `checkpoint_steps(steps, checkpoints)` in `out_dir` (step 0 is the random init). The
    same arguments give the same weights.
    """
    if batch_size < 1:
        raise ConfigError(f"batch_size must be at least 1, got {batch_size}")
    save_at = set(checkpoint_steps(steps, checkpoints))
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tokenizer = world_tokenizer(world)
    sentences = encode_corpus(tokenizer, world.corpus)
    context = max(128, max(map(len, sentences)))
    model = tiny_model(arch, len(tokenizer), seed=seed, hidden=hidden, layers=layers, heads=heads, context=context)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    batches = sentence_batches(len(sentences), batch_size, torch.Generator().manual_seed(seed))
    saved: list[Path] = []
    tokens = 0
    with deterministic_torch(), tqdm(total=steps, desc="pre-training", disable=not progress) as bar:
        for step in range(steps + 1):
            if step in save_at:
                folder = out_dir / checkpoint_name(step, steps)
                saved.append(save_checkpoint(model, tokenizer, folder, step, tokens))
            if step == steps:
                break
            for group in optimizer.param_groups:
                group["lr"] = learning_rate(step, steps, lr)
            loss, batch_tokens = next_token_loss(model, [sentences[i] for i in next(batches)])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            tokens += batch_tokens
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.3f}", refresh=False)
    return saved
