"""Steering vectors from stored activations, and `steer`, which adds them to another model.

A steering vector is mean(label 1) − mean(label 0) of one layer's activations over the
development rows. `steer(model, {layer: vector}, alpha)` adds alpha·vector to the output of
decoder block `layer` at the chosen positions of every forward pass, for as long as the
`with` block lasts. Vector files are safetensors with a provenance record; a copy in
lm-evaluation-harness's own steering format can be exported for use there.
"""

from __future__ import annotations

import contextvars
import hashlib
import io
import json
import math
import os
import warnings
import weakref
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save as save_safetensors
from torch import nn

from trusttrace.data import TrustDataset
from trusttrace.errors import LayerError, ProbeError, StoreError, SteeringError
from trusttrace.models import (
    block_hidden, check_layers, decoder_layers, describe_source, layer_numbers, model_hidden_size, with_block_hidden,
)
from trusttrace.provenance import now_utc, trusttrace_version
from trusttrace.splits import check_labels, make_splits, row_indices
from trusttrace.store import atomic_write_bytes

SCALINGS = ("std", "unit", "raw")
STEER_POSITIONS = ("last", "all", "prompt", "generated")
PROTOCOLS = ("default", "paper")

# Share of rows (in file order) the reference code built its vectors from, and the dataset for
# which it used every row instead (its TruthfulQA evaluation questions live in another file).
PAPER_DEV_FRACTION = 0.5
PAPER_ALL_ROWS_DATASETS = ("truthfulqa",)

# lm-evaluation-harness names hookpoints relative to `model.base_model`; decoder blocks are
# "layers.<i>" in most architectures, with these exceptions.
LM_EVAL_HOOKPOINTS = {
    "GPT2LMHeadModel": "h.{layer}",
    "GPTJForCausalLM": "h.{layer}",
    "OPTForCausalLM": "decoder.layers.{layer}",
}

# The settings of each `steer` context active on a model, so that an evaluation run inside one
# can record that it was steered (its result would otherwise read as unsteered).
_ACTIVE: weakref.WeakKeyDictionary[nn.Module, list[dict[str, Any]]] = weakref.WeakKeyDictionary()
_PROMPT_MASK: contextvars.ContextVar[tuple[torch.Tensor, bool] | None] = contextvars.ContextVar("trusttrace_prompt_mask", default=None)


# ----- building vectors ----------------------------------------------------------------


def steering_vector(
    acts: torch.Tensor,
    labels: Sequence[int] | np.ndarray,
    *,
    rows: Sequence[int] | np.ndarray | None = None,
    scaling: str = "std",
    scale_rows: Sequence[int] | np.ndarray | None = None,
) -> torch.Tensor:
    """mean(label 1) − mean(label 0) of one layer's activations `[n, hidden]` over `rows`.

    `scaling="std"` returns the unit direction times the standard deviation of the
    projections of `scale_rows` (default: `rows`) onto it, so alpha counts standard
    deviations; "unit" returns the unit direction, "raw" the plain difference. The reference
    code took the std over all rows, test rows included: pass `scale_rows=range(n)` (or use
    `build_vectors(..., protocol="paper")`) to reproduce that. Activations holding NaN or inf
    (in any row, used or not: they mean the extraction went wrong) raise a SteeringError.
    """
    if scaling not in SCALINGS:
        raise SteeringError(f"unknown scaling {scaling!r}; expected one of {', '.join(SCALINGS)}")
    acts = torch.as_tensor(acts)
    try:
        labels = check_labels(labels)
    except ProbeError as error:
        raise SteeringError(str(error)) from None
    if acts.dim() != 2 or acts.shape[0] != len(labels):
        raise SteeringError(f"activations of shape {tuple(acts.shape)} do not match {len(labels)} labels; expected [n, hidden]")
    check_finite_rows(acts)
    chosen = np.arange(len(labels)) if rows is None else row_indices(rows, len(labels), "rows", SteeringError)
    data = acts.double()
    positive = torch.from_numpy(chosen[labels[chosen] == 1])
    negative = torch.from_numpy(chosen[labels[chosen] == 0])
    if len(positive) == 0 or len(negative) == 0:
        raise SteeringError(f"the {len(chosen)} rows chosen need both labels; found {len(positive)} with 1, {len(negative)} with 0")
    difference = data[positive].mean(dim=0) - data[negative].mean(dim=0)
    if scaling == "raw":
        return difference.float()
    norm = difference.norm()
    if norm == 0:
        raise SteeringError("the two class means are identical: the steering direction is undefined")
    direction = difference / norm
    if scaling == "unit":
        return direction.float()
    spread = chosen if scale_rows is None else row_indices(scale_rows, len(labels), "scale_rows", SteeringError)
    if len(spread) < 2:
        raise SteeringError(f"scale_rows: the spread of the projections needs at least 2 rows, got {len(spread)}")
    return (direction * (data[torch.from_numpy(spread)] @ direction).std()).float()


def check_finite_rows(acts: torch.Tensor) -> None:
    """A SteeringError naming the first row and column of `acts` [n, hidden] that holds NaN or inf."""
    bad = torch.nonzero(~torch.isfinite(acts))
    if len(bad):
        row, column = (int(i) for i in bad[0])
        raise SteeringError(
            f"activations hold {acts[row, column].item()} at row {row}, column {column}; "
            "steering vectors need finite activations (re-extract them, e.g. in float32)"
        )


def development_rows(dataset: TrustDataset, protocol: str = "default", seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The rows vectors are built from and the held-out rows evaluations use, as (dev, held_out).

    Default: the two halves of a grouped split (rows sharing a question, context or twin stay
    together; a stratified random split for a dataset without groups). "paper": the first 50 % of rows in file order and the rest, except TruthfulQA,
    where the reference code used every row (its evaluation questions are another file).
    """
    if protocol not in PROTOCOLS:
        raise SteeringError(f"unknown protocol {protocol!r}; expected one of {', '.join(PROTOCOLS)}")
    n = len(dataset.labels)
    if protocol == "paper":
        cut = n if dataset.name in PAPER_ALL_ROWS_DATASETS else int(n * PAPER_DEV_FRACTION)
        return np.arange(cut), np.arange(cut, n)
    return make_splits(dataset.labels, split="grouped", groups=dataset.groups, folds=1, test_size=0.5, seed=seed)[0]


def build_vectors(
    acts: torch.Tensor,
    dataset: TrustDataset,
    layers: int | Sequence[int],
    *,
    acts_layers: Sequence[int] | None = None,
    protocol: str = "default",
    scaling: str = "std",
    seed: int = 0,
    source: Mapping[str, Any] | None = None,
) -> tuple[dict[int, torch.Tensor], dict[str, Any]]:
    """Steering vectors for `layers` from activations `[n_layers, n, hidden]`, with their provenance.

    `acts_layers[j]` is the model layer of `acts[j]` (default: j). `source` is the activation
    set's provenance (model, revision, checkpoint...), copied into the vectors' provenance.
    "paper" reproduces the reference: vector from the first half of the rows, std scale over
    all rows; the default uses the development half of a grouped split for both.
    """
    if not isinstance(dataset, TrustDataset):
        raise SteeringError(f"dataset must be the TrustDataset the activations were extracted from, not a {type(dataset).__name__}")
    stored = list(range(acts.shape[0])) if acts_layers is None else list(acts_layers)
    if len(stored) != acts.shape[0]:
        raise LayerError(f"acts_layers names {len(stored)} layers for activations of {acts.shape[0]}")
    layers = layer_numbers(layers)
    if len(set(layers)) != len(layers):
        raise LayerError(f"layers {layers}: name each layer once")
    missing = [layer for layer in layers if layer not in stored]
    if missing:
        raise LayerError(f"layers {missing} are not in the activations (they hold layers {stored})")
    dev, _ = development_rows(dataset, protocol, seed)
    scale_rows = np.arange(len(dataset.labels)) if protocol == "paper" else dev
    vectors = {
        int(layer): steering_vector(acts[stored.index(layer)], dataset.labels, rows=dev, scaling=scaling, scale_rows=scale_rows)
        for layer in layers
    }
    source = dict(source or {})
    provenance = {
        **{key: source.get(key) for key in ("model", "revision", "commit", "weights_sha256", "architecture",
                                            "checkpoint", "step", "tokenizer", "tokenizer_sha256", "position", "dtype")},
        "layers": sorted(vectors),
        "dataset": dataset.name,
        "dataset_hash": dataset.content_hash,
        "rows": len(dev),
        "rows_sha256": rows_digest(dev),
        "scale_rows": len(scale_rows),
        "protocol": protocol,
        "scaling": scaling,
        "seed": seed,
        "hidden_size": int(acts.shape[-1]),
        "trusttrace_version": trusttrace_version(),
        "created": now_utc(),
    }
    return vectors, provenance


def rows_digest(rows: Sequence[int] | np.ndarray) -> str:
    """sha256 of the row indices (int64, in order): names the exact rows a vector came from."""
    return hashlib.sha256(np.asarray(rows, dtype=np.int64).tobytes()).hexdigest()


# ----- files ---------------------------------------------------------------------------


def save_vectors(path: str | os.PathLike, vectors: Mapping[int, torch.Tensor], provenance: Mapping[str, Any]) -> Path:
    """Write vectors as safetensors ("layer.<i>" tensors) with the provenance in the metadata, atomically."""
    if not vectors:
        raise SteeringError("no vectors to save")
    # a copy each: safetensors refuses tensors that share memory (one vector given for two layers)
    tensors = {f"layer.{int(layer)}": torch.as_tensor(vector).detach().float().cpu().clone() for layer, vector in vectors.items()}
    metadata = {"trusttrace": json.dumps(dict(provenance), sort_keys=True, default=str)}
    atomic_write_bytes(path, save_safetensors(tensors, metadata=metadata))
    return Path(path)


def load_vectors(path: str | os.PathLike) -> tuple[dict[int, torch.Tensor], dict[str, Any]]:
    """The vectors `{layer: tensor}` and provenance of a file written by `save_vectors`."""
    path = Path(path)
    if path.is_dir():
        raise StoreError(f"{path}: a folder, not a vector file")
    try:
        with safe_open(path, framework="pt") as handle:
            provenance = json.loads((handle.metadata() or {})["trusttrace"])
            vectors = {int(name.removeprefix("layer.")): handle.get_tensor(name) for name in handle.keys()}
    except OSError as error:
        raise StoreError(f"{path}: cannot read the vector file ({error.strerror or error})") from None
    except (SafetensorError, ValueError, KeyError) as error:
        raise StoreError(f"{path}: not a trusttrace steering-vector file ({type(error).__name__}: {error})") from None
    if not isinstance(provenance, dict):
        raise StoreError(f"{path}: its trusttrace metadata is a JSON {type(provenance).__name__}, not an object of provenance")
    return dict(sorted(vectors.items())), provenance


def lm_eval_hookpoint(layer: int, *, model: nn.Module | None = None, architecture: str | None = None) -> str:
    """The name lm-evaluation-harness's `steered` model uses for the output of decoder block `layer`.

    With a model it is the block's name inside `model.base_model`, exactly; otherwise it is
    derived from the architecture name ("layers.<i>" for Llama, GPT-NeoX, OLMo, Mistral...).
    """
    if model is not None:
        block = decoder_layers(model)[layer]
        for name, module in model.base_model.named_modules():
            if module is block:
                return name
        raise SteeringError(f"{type(model).__name__}: decoder block {layer} is not inside model.base_model")
    return LM_EVAL_HOOKPOINTS.get(architecture or "", "layers.{layer}").format(layer=layer)


def export_lm_eval(
    path: str | os.PathLike,
    vectors: Mapping[int, torch.Tensor],
    alpha: float,
    *,
    model: nn.Module | None = None,
    architecture: str | None = None,
) -> Path:
    """Write the `.pt` steering file of lm-evaluation-harness's `steered` model (`--model steered
    --model_args pretrained=...,steer_path=FILE`).

    The format is the one `SteeredModel.__init__` in EleutherAI/lm-evaluation-harness
    `lm_eval/models/hf_steered.py` reads with `torch.load(weights_only=True)`: a dict
    `{hookpoint: {"steering_vector": Tensor, "steering_coefficient": float, "action": "add",
    "bias": None, "head_index": None}}`, hookpoints named inside `model.base_model`. This is a
    torch pickle, which trusttrace never uses for its own artefacts; it is written only because
    the harness reads nothing else. Note the harness adds the vector at every position
    (trusttrace's positions="all"), not only the last.
    """
    _vector_map(vectors)
    check_alpha(alpha)
    config = {
        lm_eval_hookpoint(int(layer), model=model, architecture=architecture): {
            "steering_vector": torch.as_tensor(vector).detach().float().cpu().contiguous(),
            "steering_coefficient": float(alpha),
            "action": "add",
            "bias": None,
            "head_index": None,
        }
        for layer, vector in vectors.items()
    }
    buffer = io.BytesIO()
    torch.save(config, buffer)
    atomic_write_bytes(path, buffer.getvalue())
    return Path(path)


# ----- applying vectors ----------------------------------------------------------------


def check_positions(positions: str) -> None:
    """A SteeringError for a position rule that is not one of STEER_POSITIONS."""
    if positions not in STEER_POSITIONS:
        raise SteeringError(f"unknown positions {positions!r}; expected one of {', '.join(STEER_POSITIONS)}")


@dataclass(frozen=True)
class Steering:
    """What to add where: vectors per layer, their multiplier and the positions they go to."""

    vectors: Mapping[int, torch.Tensor]
    alpha: float = 1.0
    positions: str = "last"
    provenance: Mapping[str, Any] | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        check_positions(self.positions)  # at once, not when a model has loaded and the setting is applied

    @classmethod
    def from_file(
        cls, path: str | os.PathLike, alpha: float = 1.0, positions: str = "last", layers: Sequence[int] | None = None
    ) -> Steering:
        """The vectors of a file (all, or the chosen `layers`) with their provenance."""
        vectors, provenance = load_vectors(path)
        chosen = list(vectors) if layers is None else list(layers)
        missing = [layer for layer in chosen if layer not in vectors]
        if missing:
            raise LayerError(f"{path}: no vector for layers {missing} (the file holds {sorted(vectors)})")
        return cls({layer: vectors[layer] for layer in chosen}, alpha, positions, provenance)

    def on(self, model: nn.Module) -> Steering:
        """This setting with its layers named as `model`'s blocks (-1 of 4 blocks is 3), so that
        what a result records is the block steered, as a `steer` context records it."""
        blocks = check_layers(list(_vector_map(self.vectors)), len(decoder_layers(model)))
        return replace(self, vectors=dict(zip(blocks, self.vectors.values())))

    def apply(self, model: nn.Module):
        """The `steer` context for this setting on `model`."""
        return steer(model, self.vectors, self.alpha, self.positions, provenance=self.provenance)

    def describe(self) -> dict[str, Any]:
        """The setting as table columns: layers ("3,4"), alpha, positions."""
        return {"layers": ",".join(str(layer) for layer in sorted(self.vectors)), "alpha": float(self.alpha), "positions": self.positions}


@contextmanager
def prompt_boundary(prompt_mask: torch.Tensor, *, complete: bool = True) -> Iterator[None]:
    """Mark which positions of the next forward passes are prompt (True) and which are continuation.

    Inside, one forward over prompt + continuation is steered as a cached generation of that
    continuation would be: "last" steers the prompt's last real token and every continuation
    token, "prompt" the prompt, "generated" the continuation. Scoring a continuation's
    log-likelihood this way equals scoring it token by token under KV-cache generation.
    `complete=False` marks a pass holding only the start of the prompt (a shared prefix run
    once and cached), whose last token is not the prompt's last.
    """
    token = _PROMPT_MASK.set((prompt_mask, complete))
    try:
        yield
    finally:
        _PROMPT_MASK.reset(token)


def position_mask(
    rule: str,
    batch: int,
    seq: int,
    *,
    attention: torch.Tensor | None = None,
    past: int = 0,
    prompt: torch.Tensor | None = None,
    prompt_complete: bool = True,
) -> torch.Tensor | None:
    """Bool mask `[batch, seq]` of the positions one forward pass steers (None means all).

    Without a prompt mask a pass with an empty cache is the prompt and a pass with a cache
    holds generated tokens; "last" is the last real token (by `attention`, the mask of this
    pass's columns) of every pass, so each new token under KV-cache generation. With a prompt
    mask, see `prompt_boundary`.
    """
    if rule == "all":
        return None
    real = torch.ones((batch, seq), dtype=torch.bool) if attention is None else attention.bool()
    if prompt is not None:
        prompt = prompt.bool().to(real.device) & real
        generated = real & ~prompt
        if rule != "last":
            return prompt if rule == "prompt" else generated
        return (_last_true(prompt) | generated) if prompt_complete else generated
    nothing = torch.zeros_like(real)
    if rule == "prompt":
        return real if past == 0 else nothing
    if rule == "generated":
        return nothing if past == 0 else real
    return _last_true(real)


def _last_true(mask: torch.Tensor) -> torch.Tensor:
    """A mask with only the last True of each row of `mask` kept."""
    columns = torch.arange(mask.shape[1], device=mask.device)
    last = torch.where(mask, columns, -1).max(dim=1).values
    return columns.unsqueeze(0) == last.unsqueeze(1)


@contextmanager
def steer(
    model: nn.Module,
    vectors: Mapping[int, torch.Tensor],
    alpha: float = 1.0,
    positions: str = "last",
    *,
    provenance: Mapping[str, Any] | None = None,
) -> Iterator[None]:
    """Add `alpha * vectors[layer]` to the output of decoder block `layer` while the `with` block runs.

    positions: "last" (default, the reference's rule) = the last real token of every forward
    pass, so each new token under KV-cache generation; "all" = every position; "prompt" = the
    positions of passes with an empty cache; "generated" = the positions of passes with a
    cache. The padding side does not matter: the attention mask passed to the model gives the
    real tokens. Hooks are removed on exit, also when the body raises. Vectors are checked
    against the model (hidden size, layer range) before anything runs, and `provenance` (from
    `load_vectors`) is compared with the model's: another architecture or tokenizer warns.
    """
    check_positions(positions)
    blocks = decoder_layers(model)
    deltas = _checked_deltas(model, blocks, vectors, alpha)
    if provenance:
        _warn_if_foreign(model, provenance)
    state: dict[str, Any] = {}
    owner = _block_owner(model, blocks)

    def capture(_module, args, kwargs):
        state.clear()
        candidates = (kwargs.get("input_ids"), kwargs.get("inputs_embeds"), args[0] if args else None)
        tokens = next((value for value in candidates if isinstance(value, torch.Tensor)), None)
        if tokens is not None and tokens.dim() >= 2:
            state["mask"] = _pass_mask(positions, tokens.shape[0], tokens.shape[1], kwargs)

    def release(_module, _args, _output):
        state.clear()

    def make_hook(delta: torch.Tensor):
        def hook(_module, _args, output):
            hidden = block_hidden(output)
            shape = (hidden.shape[0], hidden.shape[1])
            mask = state["mask"] if "mask" in state else _pass_mask(positions, *shape, {})
            if mask is None:
                steered = hidden + delta
            elif mask.shape == shape:
                steered = torch.where(mask.to(hidden.device).unsqueeze(-1), hidden + delta, hidden)
            else:
                raise SteeringError(f"the steering mask {tuple(mask.shape)} does not fit a block output {tuple(hidden.shape)}")
            return with_block_hidden(output, steered)

        return hook

    setting = {**Steering(deltas, float(alpha), positions).describe(), "provenance": dict(provenance or {})}
    handles = [owner.register_forward_pre_hook(capture, with_kwargs=True), owner.register_forward_hook(release)]
    _ACTIVE.setdefault(model, []).append(setting)
    try:
        handles += [blocks[layer].register_forward_hook(make_hook(delta)) for layer, delta in deltas.items()]
        yield
    finally:
        for handle in handles:
            handle.remove()
        _ACTIVE[model] = [active for active in _ACTIVE[model] if active is not setting]


def active_steering(model: nn.Module) -> list[dict[str, Any]]:
    """The settings (layers, alpha, positions, provenance) of the `steer` contexts now active on `model`, outermost first."""
    return list(_ACTIVE.get(model, []))


def development_overlap(dataset: TrustDataset, rows: np.ndarray, provenance: Mapping[str, Any] | None) -> int:
    """How many of `rows` of `dataset` built the vectors of `provenance` (from `build_vectors`):
    0 when they were built on another dataset or their rows are not known."""
    provenance = provenance or {}
    seed = provenance.get("seed") or 0
    if (provenance.get("dataset_hash") != dataset.content_hash or provenance.get("protocol") not in PROTOCOLS
            or not isinstance(seed, int) or isinstance(seed, bool)):
        return 0
    dev, _ = development_rows(dataset, provenance["protocol"], seed)
    if provenance.get("rows_sha256") not in (None, rows_digest(dev)):
        return 0
    return int(np.isin(rows, dev).sum())


def _block_owner(model: nn.Module, blocks: nn.ModuleList) -> nn.Module:
    """The module whose forward runs the blocks and receives the attention mask and the cache."""
    base = getattr(model, "base_model", model)
    return base if any(module is blocks for module in base.modules()) else model


def _pass_mask(positions: str, batch: int, seq: int, kwargs: dict[str, Any]) -> torch.Tensor | None:
    """The positions one forward pass steers, from its attention mask, cache and any prompt boundary."""
    attention = kwargs.get("attention_mask")
    if not (isinstance(attention, torch.Tensor) and attention.dim() == 2 and attention.shape[0] == batch and attention.shape[1] >= seq):
        attention = None
    prompt, complete = _PROMPT_MASK.get() or (None, True)
    if prompt is not None and tuple(prompt.shape) != (batch, seq):
        raise SteeringError(f"prompt_boundary mask of shape {tuple(prompt.shape)} does not match the forward pass {(batch, seq)}")
    return position_mask(
        positions, batch, seq,
        attention=None if attention is None else attention[:, -seq:],
        past=_past_length(kwargs), prompt=prompt, prompt_complete=complete,
    )


def _past_length(kwargs: dict[str, Any]) -> int:
    """How many tokens the model's KV cache already holds at the start of a forward pass."""
    for key in ("past_key_values", "cache"):
        cache = kwargs.get(key)
        if hasattr(cache, "get_seq_length"):
            return int(cache.get_seq_length())
        if isinstance(cache, (tuple, list)) and cache and cache[0] is not None:
            return int(cache[0][0].shape[-2])
    cache_position = kwargs.get("cache_position")
    if isinstance(cache_position, torch.Tensor) and cache_position.numel():
        return int(cache_position.reshape(-1)[0])
    return 0


def _vector_map(vectors: object) -> Mapping[int, torch.Tensor]:
    """`vectors` if it maps layers to vectors and is not empty, else a SteeringError."""
    if not isinstance(vectors, Mapping):
        raise SteeringError(f"vectors must map layer numbers to vectors, e.g. {{16: vector}}; got a {type(vectors).__name__}")
    if not vectors:
        raise SteeringError("no steering vectors given")
    return vectors


def check_alpha(alpha: float) -> None:
    """A SteeringError unless the steering strength `alpha` is a finite number."""
    if not math.isfinite(float(alpha)):
        raise SteeringError(f"alpha {alpha} is not a finite number")


def _checked_deltas(
    model: nn.Module, blocks: nn.ModuleList, vectors: Mapping[int, torch.Tensor], alpha: float
) -> dict[int, torch.Tensor]:
    """alpha·vector per (normalised) layer, in each block's dtype and device, after checking
    layers (each block once), sizes and that alpha and the vectors are finite."""
    _vector_map(vectors)
    check_alpha(alpha)
    hidden_size = model_hidden_size(model)
    deltas = {}
    for index, (layer, vector) in zip(check_layers(list(vectors), len(blocks)), vectors.items()):
        vector = torch.as_tensor(vector)
        if vector.dim() != 1 or (hidden_size is not None and vector.shape[0] != hidden_size):
            raise SteeringError(
                f"the vector for layer {layer} has shape {tuple(vector.shape)}; the model's hidden size is {hidden_size}"
            )
        if not torch.isfinite(vector).all():
            raise SteeringError(f"the vector for layer {layer} holds NaN or inf")
        parameter = next(blocks[index].parameters(), None)
        parameter = parameter if parameter is not None else next(model.parameters())
        deltas[index] = (float(alpha) * vector.double()).to(device=parameter.device, dtype=parameter.dtype)
    return deltas


def _warn_if_foreign(model: nn.Module, provenance: Mapping[str, Any]) -> None:
    """Warn when vectors come from another architecture or tokenizer than the target model's."""
    target = describe_source(model)
    # Tokenizers are compared by vocabulary when both sides know it: checkpoints of one run
    # share a tokenizer saved in different folders.
    same_vocab = provenance.get("tokenizer_sha256") and provenance.get("tokenizer_sha256") == target.get("tokenizer_sha256")
    for key in ("architecture",) if same_vocab else ("architecture", "tokenizer"):
        source_value, target_value = _name(provenance.get(key)), _name(target.get(key))
        if source_value and target_value and source_value != target_value:
            warnings.warn(
                f"steering vectors come from {key} {source_value!r} but the target model has {target_value!r}; "
                "hidden sizes match, but the directions may not mean the same thing",
                stacklevel=4,
            )


def _name(value: Any) -> str | None:
    """A tokenizer or architecture name without the class suffix tokenizer_name() adds."""
    return str(value).split(" (")[0] if value else None
