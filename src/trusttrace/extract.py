"""Batched, padding-safe extraction of decoder-block outputs for a list of statements.

One forward pass per batch reads every chosen block through forward hooks. Each hook reduces
its block's output to one vector per statement at once (the last real token, the first, or the
mean), so `extract_activations` never holds more than the output plus two batches' states:
the one handed over next and the one being computed (on a GPU, in its memory, and on its way to
the host in pinned memory; see `HostCopy`), each at most STATE_BATCH_BYTES with an automatic
batch size. Statements are sorted by length so that batches carry little padding, and the LM
head is never run.
"""

from __future__ import annotations

import inspect
import numbers
import warnings
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.utils.hooks import RemovableHandle
from tqdm.auto import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from trusttrace.data.dataset import first_non_string
from trusttrace.errors import TrustTraceError
from trusttrace.models import block_hidden, check_layers, context_length, decoder_layers, model_hidden_size

READ_POSITIONS = ("last", "first", "mean")

# Tokens per batch when the caller gives no batch size: enough to keep a CPU busy, and on a
# GPU a budget derived from free memory (see `auto_batch_tokens`).
CPU_BATCH_TOKENS = 4096

# Rows in one batch are at least this close in length to its longest row (0.2: within 20 %).
LENGTH_SPREAD = 0.2

# With an automatic batch size, one batch's captured states (layers x rows x hidden, in the
# model's dtype) stay within this many bytes: a GPU's token budget alone would put thousands of
# short statements in a batch, gigabytes of states on the host (32 x 8000 x 4096 x 2 B for
# Amber in bfloat16).
STATE_BATCH_BYTES = 256 * 1024**2


@dataclass(frozen=True)
class ActivationBatch:
    """The states of one batch: `states[j, k]` is layer `layers[j]` of statement `rows[k]`.

    `truncated` counts the batch's statements that were cut to fit the model's context (None:
    not known, as for states extracted elsewhere).
    """

    rows: np.ndarray
    states: torch.Tensor
    truncated: int | None = None


class HostCopy:
    """A batch's states on their way to the host.

    From a GPU they are copied into pinned memory without blocking, on a side stream that starts
    once the forward pass that made them has ended, so the copy overlaps the next batch's pass.
    A copy to ordinary memory would hold Python until it ended and runs at a fraction of the
    speed: on an H200 it was 22 % of a 7B model's extraction time. `finish` waits for the copy
    and returns the states in ordinary memory, letting go of the pinned block, which goes back to
    torch's pool for a later batch while the caller works on this one.
    """

    def __init__(self, states: torch.Tensor, stream: torch.cuda.Stream | None = None) -> None:
        self.copied: torch.cuda.Event | None = None
        self.host: torch.Tensor | None
        if states.device.type != "cuda":
            self.host = states.cpu()
            return
        stream = stream or torch.cuda.current_stream(states.device)
        stream.wait_stream(torch.cuda.current_stream(states.device))
        self.host = torch.empty(states.shape, dtype=states.dtype, pin_memory=True)
        with torch.cuda.stream(stream):
            self.host.copy_(states, non_blocking=True)
            self.copied = torch.cuda.Event()
            self.copied.record(stream)
        states.record_stream(stream)  # its memory is not reused by the next pass before the copy has read it

    def finish(self) -> torch.Tensor:
        """The states on the host, in ordinary memory, once the copy has ended (call it once)."""
        if self.copied is None:
            return self.host
        self.copied.synchronize()
        pinned, self.host = self.host, None
        return pinned.clone()


def attention_kernels(device: torch.device) -> AbstractContextManager:
    """On a GPU, scaled-dot-product attention without cuDNN's kernel, for one forward pass.
    Extraction batches many short, padded statements; on the study's data cuDNN's kernel took
    99 ms of a 7B model's pass on an H200 (0.44 ms a call), the memory-efficient kernel 69 ms.
    The kernels the user left enabled among the others (flash, memory-efficient, plain math)
    stay. torch's switches are process-wide: hold this around a forward pass, never across a
    generator's yield."""
    try:
        from torch.nn.attention import SDPBackend, sdpa_kernel
    except ImportError:  # torch before 2.3 has no cuDNN attention to leave out
        return nullcontext()
    if device.type != "cuda" or not hasattr(SDPBackend, "CUDNN_ATTENTION") or not torch.backends.cuda.cudnn_sdp_enabled():
        return nullcontext()
    enabled = [
        backend for backend, on in (
            (SDPBackend.FLASH_ATTENTION, torch.backends.cuda.flash_sdp_enabled()),
            (SDPBackend.EFFICIENT_ATTENTION, torch.backends.cuda.mem_efficient_sdp_enabled()),
            (SDPBackend.MATH, torch.backends.cuda.math_sdp_enabled()),
        ) if on
    ]
    return sdpa_kernel(enabled) if enabled else nullcontext()


class _StopForward(Exception):
    """Raised by the hook of the deepest chosen block: later blocks are not needed."""


def tokenize_statements(
    tokenizer: PreTrainedTokenizerBase, statements: Sequence[str], max_length: int, *, limit: str | None = None,
    noun: str = "statement",
) -> tuple[list[list[int]], np.ndarray]:
    """Token ids of each statement with the tokenizer's defaults (BOS where it adds one), and
    which statements were cut.

    Statements longer than `max_length` lose tokens from the left, keeping a leading BOS, so
    the last token survives; a single warning says how many were cut, calling them `noun`s and
    `max_length` `limit` (default: the model's context).
    """
    encoded = tokenizer(list(statements), add_special_tokens=True)["input_ids"]
    empty = [i for i, ids in enumerate(encoded) if not ids]
    if empty:
        raise TrustTraceError(
            f"statement {empty[0]} ({statements[empty[0]]!r}) is no tokens to this tokenizer, which adds no BOS "
            f"({len(empty)} such statement(s)): it has no state to read"
        )
    bos = tokenizer.bos_token_id
    cut = np.zeros(len(encoded), dtype=bool)
    for i, ids in enumerate(encoded):
        if len(ids) > max_length:
            cut[i] = True
            keep_bos = bos is not None and ids[0] == bos
            encoded[i] = ([bos] if keep_bos else []) + ids[len(ids) - max_length + keep_bos :]
    if cut.any():
        default_limit = f"the model's context of {max_length} tokens"
        warnings.warn(
            f"{int(cut.sum())} {noun}(s) are longer than {limit or default_limit} and were truncated from the left "
            "(the last token is kept)",
            stacklevel=3,
        )
    return encoded, cut


def sorted_batches(lengths: Sequence[int], batch_size: int) -> list[np.ndarray]:
    """Row indices in batches of `batch_size`, statements sorted by length, longest first (so a
    batch's rows are of similar length and little of it is padding)."""
    order = np.argsort(-np.asarray(lengths), kind="stable")
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


def pad_token_id(tokenizer: PreTrainedTokenizerBase, model: nn.Module | None = None) -> int:
    """The id batches are padded with: the pad token, else EOS, else 0 (padding is masked out).

    With `model`, an id its input embedding lacks is passed over (a pad token added to the
    tokenizer without resizing the model's embeddings would otherwise fail the lookup).
    """
    rows = _embedding_rows(model)
    for value in (tokenizer.pad_token_id, tokenizer.eos_token_id):
        if value is not None and (rows is None or 0 <= value < rows):
            return int(value)
    return 0


def _embedding_rows(model: nn.Module | None) -> int | None:
    """How many token ids the model's input embedding holds, where it says."""
    embeddings = model.get_input_embeddings() if model is not None and hasattr(model, "get_input_embeddings") else None
    return getattr(embeddings, "num_embeddings", None)


def plan_batches(
    lengths: Sequence[int], batch_size: int | None, batch_tokens: int, spread: float = LENGTH_SPREAD,
    max_rows: int | None = None,
) -> list[np.ndarray]:
    """Row indices of each batch, its statements of similar length (not in input order).

    With `batch_size` every batch has that many rows. Otherwise a batch holds as many rows as
    fit in `batch_tokens` padded tokens (and at most `max_rows`) and whose lengths are within
    `spread` of its longest, so little of the work is padding even when the budget is large (as
    on a GPU). The first batch holds the longest statements, the others follow by falling size.
    """
    if batch_size is not None:
        return sorted_batches(lengths, batch_size)
    order = np.argsort(-np.asarray(lengths), kind="stable")
    batches, start = [], 0
    while start < len(order):
        longest = max(lengths[order[start]], 1)
        end = start + 1
        while (
            end < len(order)
            and (end - start + 1) * longest <= batch_tokens
            and (max_rows is None or end - start < max_rows)
            and lengths[order[end]] >= (1 - spread) * longest
        ):
            end += 1
        batches.append(order[start:end])
        start = end
    # The longest statements stay first (a batch too large for memory fails at once); the rest go
    # by falling row count, so the last batch, whose hand-over nothing overlaps, is a small one.
    return batches[:1] + sorted(batches[1:], key=len, reverse=True)


def auto_batch_tokens(model: PreTrainedModel) -> int:
    """A token budget per batch: a fixed one on the CPU, a share of free memory on a GPU."""
    device = next(model.parameters()).device
    if device.type != "cuda":
        return CPU_BATCH_TOKENS
    free, _ = torch.cuda.mem_get_info(device)
    hidden = model_hidden_size(model) or 4096  # a 7B model's width where the config does not say
    bytes_per_token = hidden * next(model.parameters()).element_size() * 40
    return int(min(max(free * 0.5 // bytes_per_token, 512), 262_144))


def pad_batch(
    sequences: Sequence[Sequence[int]], pad_id: int, side: str, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Input ids, attention mask and position ids of a padded batch.

    Position ids count real tokens only, so a statement gets the same positions whatever the
    padding side and the batch it is in (left padding would otherwise shift rotary positions).
    """
    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for i, seq in enumerate(sequences):
        span = slice(width - len(seq), width) if side == "left" else slice(0, len(seq))
        ids[i, span] = torch.tensor(seq, dtype=torch.long)
        mask[i, span] = 1
    positions = (mask.cumsum(dim=1) - 1).clamp(min=0)
    return ids.to(device), mask.to(device), positions.to(device)


def reduce_positions(hidden: torch.Tensor, mask: torch.Tensor, position: str) -> torch.Tensor:
    """One vector per row of a block output [batch, seq, hidden]: last, first or mean real token."""
    if position == "mean":
        weights = mask.to(hidden.dtype).unsqueeze(-1)
        return (hidden * weights).sum(dim=1) / weights.sum(dim=1)
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), position_index(mask, position)]


def statement_mask(ids: torch.Tensor, mask: torch.Tensor, bos_id: int | None) -> torch.Tensor:
    """The attention mask without a leading BOS token, where a row has more than that token.

    BOS is the same input in every statement, so (under causal attention) its state is too:
    "first" must read the statement's first own token, and "mean" average over its own tokens.
    """
    if bos_id is None:
        return mask
    rows = torch.arange(mask.shape[0], device=mask.device)
    first = position_index(mask, "first")
    leading_bos = (ids[rows, first] == bos_id) & (mask.sum(dim=1) > 1)
    reading = mask.clone()
    reading[rows[leading_bos], first[leading_bos]] = 0
    return reading


def position_index(mask: torch.Tensor, position: str) -> torch.Tensor:
    """The column of each row's last (or first) real token, from an attention mask [batch, seq]."""
    columns = torch.arange(mask.shape[1], device=mask.device)
    real = mask.bool()
    if position == "last":
        return torch.where(real, columns, -1).max(dim=1).values
    return torch.where(real, columns, mask.shape[1]).min(dim=1).values


def feed_forward_at(block: nn.Module, index: list[torch.Tensor]) -> list[RemovableHandle]:
    """Run `block`'s feed-forward network (its `mlp`) only at the columns `index[0]` of each row.

    Used on the deepest block read at one position: its output elsewhere feeds nothing (later
    blocks do not run), and the feed-forward network acts on each position alone, so the read
    positions come out the same while most of the block's work is skipped. Elsewhere the
    network's output is zero. A block without an `mlp` module runs whole. Every argument laid out
    per position like the hidden states is cut alike: Bloom's network, for one, adds the residual
    it is given.
    """
    mlp = getattr(block, "mlp", None)
    if not isinstance(mlp, nn.Module):
        return []
    shapes: list[torch.Size] = []

    def before(_module, args, kwargs):
        shapes.clear()
        if not args or not isinstance(args[0], torch.Tensor) or args[0].ndim != 3:
            return None
        hidden = args[0]
        shapes.append(hidden.shape)
        rows = torch.arange(hidden.shape[0], device=hidden.device)

        def cut(value):
            if isinstance(value, torch.Tensor) and value.ndim >= 2 and value.shape[:2] == hidden.shape[:2]:
                return value[rows, index[0]].unsqueeze(1)
            return value

        return tuple(cut(value) for value in args), {name: cut(value) for name, value in kwargs.items()}

    def after(_module, _args, output):
        if not shapes:
            return None
        first = output[0] if isinstance(output, tuple) else output
        full = first.new_zeros(shapes[0])
        full[torch.arange(full.shape[0], device=full.device), index[0]] = first[:, 0]
        return (full, *output[1:]) if isinstance(output, tuple) else full

    return [mlp.register_forward_pre_hook(before, with_kwargs=True), mlp.register_forward_hook(after)]


def accepts_position_ids(module: nn.Module) -> bool:
    """Whether the module's forward takes position_ids (then padded batches pass them explicitly)."""
    return "position_ids" in inspect.signature(module.forward).parameters


def check_position(position: str) -> str:
    """The position rule, validated: last, first or mean."""
    if position not in READ_POSITIONS:
        raise TrustTraceError(f"unknown position {position!r}; expected one of {', '.join(READ_POSITIONS)}")
    return position


def check_statements(statements: Sequence[str]) -> list[str]:
    """The statements as a list, each a string; one string, or an entry that is not one, is a TrustTraceError."""
    if isinstance(statements, str):
        raise TrustTraceError("statements must be a list of strings, not one string")
    statements = list(statements)
    bad = first_non_string(statements)
    if bad is not None:
        raise TrustTraceError(f"statement {bad} is {statements[bad]!r}, not a string")
    return statements


def iter_activations(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    statements: Sequence[str],
    *,
    layers: str | int | Sequence[int] = "all",
    position: str = "last",
    batch_size: int | None = None,
    batch_tokens: int | None = None,
    progress: bool = False,
) -> Iterator[ActivationBatch]:
    """Yield the chosen blocks' states batch by batch (statements of similar length together, not
    in input order), in the dtype the model computed them in: a bfloat16 model's states are kept
    as they are, half the bytes of float32 to move and store, with nothing lost.

    The reading hooks stay on the model while the generator is paused between batches: run the
    model for anything else only once it is exhausted or closed (`close()` removes them).
    """
    check_position(position)
    statements = check_statements(statements)
    for name, value in (("batch_size", batch_size), ("batch_tokens", batch_tokens)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1):
            raise TrustTraceError(f"{name} must be a whole number of at least 1 (or None: automatic), got {value!r}")
    blocks = decoder_layers(model)
    chosen = check_layers(layers, len(blocks))
    encoded, cut = tokenize_statements(tokenizer, statements, context_length(model, tokenizer))
    hidden = model_hidden_size(model)
    state_bytes = next(model.parameters()).element_size()
    batches = plan_batches(  # LENGTH_SPREAD read now, not at import: bench/extract.py --spreads varies it
        [len(ids) for ids in encoded], batch_size, batch_tokens or auto_batch_tokens(model), spread=LENGTH_SPREAD,
        max_rows=None if hidden is None else max(1, STATE_BATCH_BYTES // (len(chosen) * hidden * state_bytes)),
    )
    device = next(model.parameters()).device
    copy_stream = torch.cuda.Stream(device) if device.type == "cuda" else None
    base = model.base_model
    pass_positions = accepts_position_ids(base)
    pad_id = pad_token_id(tokenizer, model)
    side = getattr(tokenizer, "padding_side", "right")
    captured: dict[int, torch.Tensor] = {}
    current_mask: list[torch.Tensor] = []
    deepest = max(chosen)

    def make_hook(layer: int):
        def hook(_module, _inputs, output):
            captured[layer] = reduce_positions(block_hidden(output), current_mask[0], position)
            if layer == deepest:
                raise _StopForward

        return hook

    handles = [blocks[layer].register_forward_hook(make_hook(layer)) for layer in chosen]
    read: list[torch.Tensor] = []
    shared_mlp = sum(getattr(block, "mlp", None) is getattr(blocks[deepest], "mlp", None) for block in blocks) > 1
    if position != "mean" and not shared_mlp:
        handles += feed_forward_at(blocks[deepest], read)

    def hand_over(rows: np.ndarray, copy: HostCopy) -> ActivationBatch:
        return ActivationBatch(rows=rows, states=copy.finish(), truncated=int(cut[rows].sum()))

    def launch(rows: np.ndarray) -> torch.Tensor:
        """Queue one batch's forward pass; its states `[layers, rows, hidden]` on the model's device."""
        ids, mask, positions = pad_batch([encoded[r] for r in rows], pad_id, side, device)
        reading = statement_mask(ids, mask, tokenizer.bos_token_id)
        current_mask[:] = [reading]
        read[:] = [position_index(reading, position)] if position != "mean" else []
        captured.clear()
        kwargs = {"position_ids": positions} if pass_positions else {}
        try:
            with attention_kernels(device):
                base(input_ids=ids, attention_mask=mask, use_cache=False, **kwargs)
        except _StopForward:
            pass
        states = torch.stack([captured[layer] for layer in chosen])
        captured.clear()
        return states

    try:
        bar = tqdm(total=len(statements), desc="extract", unit="stmt", disable=not progress)
        with torch.inference_mode(), bar:
            # A batch is handed over only once the next one is queued: on a GPU, which runs
            # queued work while Python goes on, the caller's work on a batch (converting,
            # scattering, writing a shard) then overlaps the next forward pass.
            pending: tuple[np.ndarray, HostCopy] | None = None
            for rows in batches:
                states = launch(rows)
                copy = HostCopy(states, copy_stream)
                del states  # on a GPU, its device copy: not kept through the next forward pass
                if pending is not None:
                    yield hand_over(*pending)
                    bar.update(len(pending[0]))
                pending = (np.asarray(rows), copy)
            if pending is not None:
                yield hand_over(*pending)
                bar.update(len(pending[0]))
    finally:
        for handle in handles:
            handle.remove()


def extract_activations(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    statements: Sequence[str],
    *,
    layers: str | int | Sequence[int] = "all",
    position: str = "last",
    batch_size: int | None = None,
    batch_tokens: int | None = None,
    progress: bool = False,
) -> torch.Tensor:
    """Hidden states of the chosen decoder blocks, `[n_layers, n_statements, hidden]`, float32 on the CPU.

    Layer j of the result is the output of block `layers[j]` (all blocks by default) at the
    chosen position of each statement, in the statements' order: its last token, its first
    token after the BOS the tokenizer adds (if any), or the mean over its tokens after that BOS.
    """
    statements = check_statements(statements)
    if len(statements) == 0:
        raise TrustTraceError("no statements to extract")
    result: torch.Tensor | None = None
    for batch in iter_activations(
        model, tokenizer, statements, layers=layers, position=position,
        batch_size=batch_size, batch_tokens=batch_tokens, progress=progress,
    ):
        if result is None:
            result = torch.empty((batch.states.shape[0], len(statements), batch.states.shape[2]), dtype=torch.float32)
        _place(result, batch)
        del batch  # not held while the next batch comes to the host
    return result


def _place(result: torch.Tensor, batch: ActivationBatch) -> None:
    """Write a batch's states into their rows of `result`, layer by layer (a quarter of the time
    of one scatter over all layers)."""
    rows = torch.from_numpy(batch.rows)
    for layer, states in zip(result, batch.states):
        layer[rows] = states.float()
