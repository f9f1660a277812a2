"""Loading causal LMs and finding their decoder blocks, whatever the architecture.

`load_model` puts weights straight onto the target device in the target dtype (no full fp32
copy on the CPU first) and records where they came from; `decoder_layers` finds the blocks
whose outputs are the layers trusttrace reads and steers (layer i = output of block i).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import operator
import os
import threading
import warnings
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import transformers
from packaging.version import Version
from safetensors import SafetensorError
from torch import nn
from transformers.utils import logging as hf_logging
from transformers import (
    AutoConfig, AutoModelForCausalLM, AutoModelForMaskedLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase,
)

from trusttrace.checkpoints import LOCAL_PREFIX
from trusttrace.checksums import file_identity, remembered_sha256
from trusttrace.data.hub import NETWORK_ERRORS, first_line, hub_offline, hub_reachable, offline_reason
from trusttrace.devices import check_device, default_device
from trusttrace.errors import CheckpointError, LayerError, ModelError, OfflineError

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}

# Attribute paths of the decoder-block list in common architectures, tried before the generic
# search: Llama/Mistral/Qwen/Gemma/OLMo, GPT-NeoX, GPT-2/GPT-J, OPT, MPT/OLMo-1 (hf_olmo).
KNOWN_LAYER_PATHS = ("model.layers", "gpt_neox.layers", "transformer.h", "model.decoder.layers", "transformer.blocks")

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")
# Besides the weights, the files of a local checkpoint that change its hidden states (config and
# tokenizer), and those that change only what it generates.
STATE_FILES = ("config.json", "tokenizer*", "special_tokens_map.json", "added_tokens.json", "vocab*", "merges.txt", "*.model")
RESULT_FILES = (*STATE_FILES, "generation_config.json", "chat_template*")

try:  # huggingface_hub 1.x checks the types of a config's fields (transformers 5)
    from huggingface_hub.errors import StrictDataclassError
except ImportError:
    StrictDataclassError = TypeError

# transformers renamed from_pretrained's `torch_dtype` to `dtype` in 4.56.
DTYPE_ARGUMENT = "dtype" if Version(transformers.__version__) >= Version("4.56") else "torch_dtype"


@dataclass(frozen=True)
class ModelSource:
    """Where a loaded model came from: the provenance every artefact derived from it carries."""

    model: str
    revision: str | None
    commit: str | None
    weights_sha256: str | None
    dtype: str
    tokenizer: str
    tokenizer_sha256: str
    architecture: str
    files_sha256: str | None = None  # a local folder's config and tokenizer files (see `state_files_checksum`)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@contextmanager
def quiet_transformers() -> Iterator[None]:
    """Hide transformers' own progress bars ("Loading weights", "Writing model shards") in the body:
    trusttrace shows its own progress."""
    enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if enabled:
            hf_logging.enable_progress_bar()


def resolve_dtype(dtype: str | torch.dtype, device: str) -> torch.dtype:
    """Turn a dtype name into a torch dtype; "auto" is bf16 on a GPU and fp32 on the CPU."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype == "auto":
        return torch.bfloat16 if device.startswith("cuda") else torch.float32
    if dtype not in DTYPES:
        raise ModelError(f"unknown dtype {dtype!r}; expected auto, {', '.join(DTYPES)}")
    return DTYPES[dtype]


def load_model(
    model_id: str | os.PathLike,
    revision: str | None = None,
    *,
    dtype: str | torch.dtype = "auto",
    device: str | None = None,
    trust_remote_code: bool = False,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load a causal LM and its tokenizer by Hub id or local path, in eval mode.

    Weights go straight to `device` in `dtype`. The tokenizer gets a pad token (the EOS token)
    when it has none, so batches can be padded. The model carries a `ModelSource` as
    `model.trusttrace_source` for provenance; a local folder's weights checksum is computed while
    the weights load, or taken from an earlier load of the same unchanged files (see
    `trusttrace.checksums`).
    """
    device = check_device(device) or default_device()
    torch_dtype = resolve_dtype(dtype, device)
    local = _local_folder(model_id, revision)
    name = str(local) if local is not None else str(model_id)
    if local is None:
        hub_reachable()  # offline at once (the cache only) when the Hub cannot be reached
    config = _load_config(name, revision, trust_remote_code)
    check_causal(name, config, trust_remote_code)
    tokenizer = load_tokenizer(name, revision, trust_remote_code)  # before the weights: a missing one fails fast
    ahead = _take_checksum_ahead(local) if local is not None else None
    with ThreadPoolExecutor(max_workers=1) as pool:
        # A local folder's weight files are hashed while they load (unless `checksum_ahead` is at it).
        local_checksum = pool.submit(folder_checksum, local) if local is not None and ahead is None else None
        try:
            with quiet_transformers():
                model, loading = AutoModelForCausalLM.from_pretrained(
                    name,
                    revision=revision,
                    config=config,
                    device_map=device,
                    trust_remote_code=trust_remote_code,
                    output_loading_info=True,
                    **{DTYPE_ARGUMENT: torch_dtype},
                )
        except ValueError as error:
            raise ModelError(f"{name}: not a causal language model ({first_line(error)})") from None
        except SafetensorError as error:
            raise ModelError(f"{name}: a weights file is damaged or incomplete ({first_line(error)})") from None
        except OSError as error:
            raise hub_model_error(name, revision, error) from None
        check_loaded_weights(name, loading)
        if ahead is not None:
            weights_sha256 = _checksum_from_ahead(local, ahead)
        elif local_checksum is not None:
            weights_sha256 = local_checksum.result()
        else:
            weights_sha256 = weights_checksum(model, revision)
    model.eval()
    model.trusttrace_source = ModelSource(
        model=name,
        revision=revision,
        commit=loaded_commit(model, revision) if local is None else None,
        weights_sha256=weights_sha256,
        dtype=str(torch_dtype).removeprefix("torch."),
        tokenizer=getattr(tokenizer, "name_or_path", name) or name,
        tokenizer_sha256=vocabulary_checksum(tokenizer),
        architecture=type(model).__name__,
        files_sha256=state_files_checksum(local) if local is not None else None,
    )
    return model, tokenizer


def _local_folder(model_id: str | os.PathLike, revision: str | None) -> Path | None:
    """The absolute folder of a local model, or None for a Hub id.

    A local folder has no revisions, and a path that names no folder is reported as such rather
    than sent to the Hub as a malformed id.
    """
    path = Path(model_id).expanduser()
    if path.is_dir():
        if revision is not None:
            raise CheckpointError(f"{model_id}: a local folder has no revisions (got {revision!r}); pass the checkpoint's own folder")
        if not (path / "config.json").is_file():
            inner = _model_folders_in(path)
            hint = f"; it holds checkpoint folders ({', '.join(inner[:3])}{', …' if len(inner) > 3 else ''}): pass one" if inner else ""
            raise ModelError(f"{model_id}: a folder without config.json, so not a saved model{hint}")
        return path.resolve()
    text = str(model_id)
    if text.startswith(LOCAL_PREFIX):
        raise ModelError(f"{model_id}: names a suite of checkpoints (for a sweep's config); pass one checkpoint's folder")
    if path.is_absolute() or text.startswith((".", "~")) or text.count("/") > 1 or os.sep != "/" and os.sep in text:
        raise ModelError(f"{model_id}: no such model folder (and not a Hub id of the form org/name)")
    return None


def _model_folders_in(folder: Path, limit: int = 1000) -> list[str]:
    """The names of `folder`'s sub-folders that hold a config.json, sorted (among its first
    `limit` entries; those that cannot be read are passed over): a hint, never an error."""
    found = []
    try:
        for child in itertools.islice(folder.iterdir(), limit):
            try:
                if (child / "config.json").is_file():
                    found.append(child.name)
            except OSError:
                continue
    except OSError:
        pass
    return sorted(found)


def check_local_model(folder: str | os.PathLike, trust_remote_code: bool = False) -> None:
    """A ModelError unless `folder` holds a causal LM's config, read without loading its weights:
    the cheap part of `load_model`'s checks, for a config to be checked before a long run."""
    local = _local_folder(folder, None)
    check_causal(str(local), _load_config(str(local), None, trust_remote_code), trust_remote_code)


def check_causal(name: str, config, trust_remote_code: bool) -> None:
    """A ModelError unless `config` describes a decoder-only causal LM.

    Encoders such as BERT have a causal-LM class in transformers, which only makes sense when
    their config says `is_decoder`; an encoder checkpoint loaded through it would give states
    of a model that never read text left to right.
    """
    kind = type(config).__name__
    if not trust_remote_code and type(config) not in AutoModelForCausalLM._model_mapping:
        raise ModelError(f"{name}: not a causal language model (its config is {kind})")
    if getattr(config, "is_encoder_decoder", False):
        raise ModelError(f"{name}: an encoder-decoder model ({kind}), not a decoder-only causal language model")
    if type(config) in AutoModelForMaskedLM._model_mapping and not getattr(config, "is_decoder", False):
        raise ModelError(f"{name}: an encoder ({kind}, is_decoder false), not a causal language model")


def check_loaded_weights(name: str, loading: dict[str, Any]) -> None:
    """A ModelError when the checkpoint lacks weights the model needs or holds some of the wrong shape.

    transformers would otherwise initialise them at random and go on, and every state read from
    the model would be noise. Unexpected extra weights (old buffers) are harmless and ignored.
    """
    for kind, what in (("missing_keys", "lacks"), ("mismatched_keys", "has weights of the wrong shape for")):
        keys = sorted(str(key if isinstance(key, str) else key[0]) for key in loading.get(kind) or [])
        if keys:
            shown = ", ".join(keys[:3]) + (f" and {len(keys) - 3} more" if len(keys) > 3 else "")
            raise ModelError(f"{name}: the checkpoint {what} {len(keys)} weight(s) the model needs: {shown}")


def load_tokenizer(name: str, revision: str | None = None, trust_remote_code: bool = False) -> PreTrainedTokenizerBase:
    """The model's tokenizer, with the EOS token as pad token when it has no pad token."""
    try:
        tokenizer = AutoTokenizer.from_pretrained(name, revision=revision, trust_remote_code=trust_remote_code)
    except OSError as error:
        raise hub_model_error(name, revision, error) from None
    except ValueError as error:
        raise ModelError(
            f"{name}: cannot load its tokenizer; a model folder needs its tokenizer files, e.g. tokenizer.json "
            f"({first_line(error)})"
        ) from None
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def _load_config(name: str, revision: str | None, trust_remote_code: bool):
    """The model's config, with package errors for a missing model, revision or network."""
    try:
        return AutoConfig.from_pretrained(name, revision=revision, trust_remote_code=trust_remote_code)
    except (ValueError, TypeError, AttributeError, StrictDataclassError) as error:  # also a config.json of wrong shape or types
        raise ModelError(f"{name}: cannot read a model config ({first_line(error)})") from None
    except OSError as error:
        raise hub_model_error(name, revision, error) from None


def vocabulary_checksum(tokenizer: PreTrainedTokenizerBase) -> str:
    """A sha256 of the tokenizer's vocabulary (token to id), equal for the same tokenizer anywhere."""
    items = sorted(tokenizer.get_vocab().items(), key=lambda item: item[1])
    return hashlib.sha256(json.dumps(items, ensure_ascii=False).encode()).hexdigest()


def hub_model_error(name: str, revision: str | None, error: OSError) -> Exception:
    """Translate transformers' OSError for a model it cannot find into one clear package error
    (also used for the other Hub models trusttrace loads: classifiers)."""
    text = str(error)
    where = f"{name}@{revision}" if revision else name
    if "couldn't connect" in text.lower() or "offline" in text.lower():
        state = f"is off ({offline_reason()})" if hub_offline() else "cannot be reached"
        return OfflineError(
            f"{where}: the Hugging Face Hub {state} and the model is not in the local cache; "
            "go online once, or pass a local folder"
        )
    if revision and "revision" in text.lower():
        return CheckpointError(f"{where}: unknown revision {revision!r}")
    if Path(name).exists():
        return ModelError(f"{name}: not a loadable model folder ({first_line(error)})")
    return ModelError(f"{where}: cannot load the model ({first_line(error)})")


def weights_checksum(model: PreTrainedModel, revision: str | None = None) -> str | None:
    """A checksum of the weight files the model was loaded from (None for an in-memory model);
    `revision` is the one it was loaded at, for a Hub model (see `loaded_commit`).

    Files in the Hugging Face cache are stored under their sha256 (the blob name), so they are
    not re-read; local files are hashed once. The result is one sha256 over name:digest lines,
    identical for identical weights, which is how duplicate revisions are found.
    """
    folder = _weights_folder(model, revision)
    return None if folder is None else folder_checksum(folder)


def weight_files(folder: Path) -> list[Path]:
    """The weight files in `folder`, sorted by name (none when it is not a folder)."""
    return sorted(p for p in folder.iterdir() if p.name.endswith(WEIGHT_SUFFIXES)) if folder.is_dir() else []


def loaded_weight_files(folder: Path) -> list[Path]:
    """The weight files transformers loads from `folder`: its safetensors files where it has any,
    else its PyTorch .bin files. A Trainer checkpoint's optimizer.pt, scheduler.pt, rng_state.pth
    and training_args.bin are not weights: hashing them would cost twice the weights' time and
    tell identical weights apart."""
    files = weight_files(folder)
    safetensors = [path for path in files if path.suffix == ".safetensors"]
    return safetensors or [path for path in files if path.suffix == ".bin" and path.name != "training_args.bin"]


def folder_checksum(folder: Path) -> str | None:
    """The weights checksum of the weight files in `folder` that a load reads (`loaded_weight_files`;
    None when it holds none), files hashed in parallel."""
    files = loaded_weight_files(folder)
    if not files:
        return None
    with ThreadPoolExecutor(max_workers=min(len(files), os.cpu_count() or 1)) as pool:
        digests = list(pool.map(file_sha256, files))
    lines = [f"{path.name}:{digest}" for path, digest in zip(files, digests)]
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


# Weight checksums of local folders that `checksum_ahead` computes (or is computing) for a later
# `load_model`: each is the signature of the files it read and their checksum, or None if it failed.
_AHEAD: dict[Path, Future] = {}
_AHEAD_LOCK = threading.Lock()


def checksum_ahead(folder: Path) -> Callable[[], None]:
    """Claim `folder`'s weights checksum for a later `load_model` of it, and return the work that
    computes it, to run in a background thread.

    The sweep does this for the checkpoint after the one it works on: a 7B model's sha256 takes
    about 10 s on a host that hashes at 1 GB/s, about five times its load, and the read leaves
    the files in the page cache for the load. A `load_model` that comes while the work runs waits
    for it rather than hashing again; one that comes before it has started, or finds the files
    changed since, hashes them itself.
    """
    key = Path(folder).resolve()
    future: Future = Future()
    with _AHEAD_LOCK:
        _AHEAD[key] = future

    def work() -> None:
        if not future.set_running_or_notify_cancel():  # a load came first and hashes the files itself
            return
        try:
            files = loaded_weight_files(key)
            signature = weight_signature(files)
            digest = folder_checksum(key)
            future.set_result((signature, digest) if digest is not None and weight_signature(files) == signature else None)
        except BaseException:  # the load hashes the files itself
            future.set_result(None)

    return work


def _take_checksum_ahead(folder: Path) -> Future | None:
    """The work `checksum_ahead` claimed for `folder` if it has started (the load waits for it);
    a claim not yet started is withdrawn, and the load hashes the folder itself."""
    with _AHEAD_LOCK:
        future = _AHEAD.pop(folder.resolve(), None)
    return None if future is None or future.cancel() else future


def _checksum_from_ahead(folder: Path, ahead: Future) -> str | None:
    """The checksum `checksum_ahead` computed for `folder` if its weight files are the ones it
    read, else the folder hashed now."""
    found = ahead.result()
    if found is not None and weight_signature(loaded_weight_files(folder.resolve())) == found[0]:
        return found[1]
    return folder_checksum(folder)


def weight_signature(files: list[Path]) -> list[tuple[str, tuple[int, ...]]]:
    """Each file's name and identity (`file_identity`): a file written anew, or changed in
    place, has another one."""
    return [(path.name, file_identity(path.stat())) for path in files]


def state_files_checksum(folder: Path) -> str:
    """One sha256 over the names and bytes of a local model's config and tokenizer files (STATE_FILES):
    what besides the weights changes its states (a Hub model's commit says the same of its files)."""
    digest = hashlib.sha256()
    for path in _matching_files(folder, STATE_FILES):
        digest.update(f"{path.name}:{file_sha256(path)}\n".encode())
    return digest.hexdigest()


def _matching_files(folder: Path, patterns: Sequence[str]) -> list[Path]:
    return sorted({path for pattern in patterns for path in folder.glob(pattern) if path.is_file()})


def checkpoint_fingerprint(folder: Path) -> str | None:
    """Names, sizes and modification times of a local checkpoint's weight files (those a load
    reads), then of its config and tokenizer files, as "WEIGHTS+OTHERS" (None when it holds no weights).

    Not a checksum: a cheap sign, read on every sweep, that a local checkpoint's files were
    replaced since its units ran (hashing them again would cost as much as loading them).
    """
    weights = loaded_weight_files(folder)
    if not weights:
        return None
    return f"{_stat_digest(weights)}+{_stat_digest(_matching_files(folder, RESULT_FILES))}"


def fingerprint_forms(folder: Path) -> list[str]:
    """`folder`'s `checkpoint_fingerprint`, then the same files in the forms former versions
    recorded: that of 0.7.0 and earlier (every .bin/.pt/.pth file counted as weights, a Trainer's
    optimizer state included) and the first (weight files alone, no "+"). Empty when it holds no weights."""
    current = checkpoint_fingerprint(folder)
    if current is None:
        return []
    every = weight_files(folder)
    others = _stat_digest(_matching_files(folder, RESULT_FILES))
    return list(dict.fromkeys([current, f"{_stat_digest(every)}+{others}", _stat_digest(every)]))


def fingerprint_matches(recorded: str, folder: Path) -> bool:
    """Whether `folder`'s files are those a fingerprint recorded earlier, in any form, describes."""
    return recorded in fingerprint_forms(folder)


def _stat_digest(files: list[Path]) -> str:
    """One sha256 over the files' name:size:modification-time lines."""
    lines = []
    for path in files:
        stat = path.stat()
        lines.append(f"{path.name}:{stat.st_size}:{stat.st_mtime_ns}")
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


def _weights_folder(model: PreTrainedModel, revision: str | None) -> Path | None:
    """The folder of the weight files: the local path, or the Hub cache snapshot."""
    name = getattr(model, "name_or_path", "") or ""
    return Path(name) if name and Path(name).is_dir() else _hub_snapshot(model, revision)


def loaded_commit(model: PreTrainedModel, revision: str | None) -> str | None:
    """The Hub commit a model loaded at `revision` came from (see `_hub_snapshot`); None for a
    model not from the Hub."""
    commit = getattr(model.config, "_commit_hash", None)
    if commit:
        return commit
    snapshot = _hub_snapshot(model, revision)
    return snapshot.name if snapshot is not None else None


def _hub_snapshot(model: PreTrainedModel, revision: str | None) -> Path | None:
    """The cache snapshot a Hub model was loaded from: that of the commit its config records
    (transformers 4 does), else the one `revision` (main when None) names, which is what the load
    just read (transformers 5 records no commit); None for a local or in-memory model."""
    name = getattr(model, "name_or_path", "") or ""
    if not name or Path(name).is_dir():
        return None
    return cached_snapshot(name, getattr(model.config, "_commit_hash", None) or revision)


def cached_snapshot(model_id: str, revision: str | None) -> Path | None:
    """The Hugging Face cache's snapshot folder of a Hub revision (a branch, tag or commit; main
    when None), or None when the cache lacks it or `model_id` is no Hub id."""
    from huggingface_hub import try_to_load_from_cache

    try:
        config = try_to_load_from_cache(model_id, "config.json", revision=revision)
    except ValueError:  # HFValidationError: not a repository id
        return None
    return Path(config).parent if isinstance(config, str) else None


def hub_commit(model_id: str, revision: str | None = None) -> str | None:
    """The commit a Hub revision (main when None) resolves to: asked of the Hub when it can be
    reached, else the one the local cache holds (what an offline load would use); None when
    neither knows. A moved branch thus names another commit."""
    from huggingface_hub import HfApi
    from huggingface_hub.utils import HfHubHTTPError, validate_repo_id

    try:
        validate_repo_id(model_id)
    except ValueError:
        raise ModelError(f"{model_id}: neither a local model folder nor a Hub model id") from None
    if hub_reachable():
        try:
            return HfApi().model_info(model_id, revision=revision).sha
        except (*NETWORK_ERRORS, HfHubHTTPError):
            pass
    snapshot = cached_snapshot(model_id, revision)
    return snapshot.name if snapshot is not None else None


def file_sha256(path: Path) -> str:
    """The sha256 of a file; for a Hub-cache symlink to an LFS blob, the blob's name already is,
    and a large local file's may be remembered from an earlier load (`remembered_sha256`)."""
    resolved = path.resolve()
    if resolved.parent.name == "blobs" and len(resolved.name) == 64:
        return resolved.name
    return remembered_sha256(resolved)


def decoder_layers(model: nn.Module) -> nn.ModuleList:
    """The model's decoder blocks, in order: layer i is the output of block i.

    Known attribute paths are tried first; otherwise the one ModuleList whose length equals the
    config's layer count is used. Anything else is a ModelError naming the model class.
    """
    count = num_hidden_layers(model)
    for path in KNOWN_LAYER_PATHS:
        module = _get_path(model, path)
        if isinstance(module, nn.ModuleList) and (count is None or len(module) == count):
            return module
    candidates = [
        (name, module)
        for name, module in model.named_modules()
        if isinstance(module, nn.ModuleList) and count is not None and len(module) == count
    ]
    if len(candidates) >= 1:
        return min(candidates, key=lambda item: item[0].count("."))[1]
    looked_for = f"no ModuleList of {count} blocks" if count is not None else "its config gives no block count"
    raise ModelError(
        f"{type(model).__name__}: cannot find its decoder blocks ({looked_for}); "
        "architectures known to work: Llama, GPT-NeoX, OLMo, GPT-2, Mistral, Qwen, Gemma"
    )


def text_config(model: nn.Module) -> Any:
    """The model's config of its language model (a multimodal config's text part), or None."""
    config = getattr(model, "config", None)
    return config.get_text_config() if hasattr(config, "get_text_config") else config


def model_hidden_size(model: nn.Module) -> int | None:
    """The width of the residual stream the decoder blocks output, None where the config does not say."""
    return getattr(text_config(model), "hidden_size", None)


def num_hidden_layers(model: nn.Module) -> int | None:
    """The number of decoder blocks the config declares, under any of its usual names."""
    config = text_config(model)
    for key in ("num_hidden_layers", "n_layer", "num_layers", "n_layers"):
        value = getattr(config, key, None)
        if isinstance(value, int):
            return value
    return None


def _get_path(module: nn.Module, path: str) -> Any:
    for part in path.split("."):
        module = getattr(module, part, None)
        if module is None:
            return None
    return module


def check_layers(layers: "str | int | Sequence[int] | torch.Tensor", count: int) -> list[int]:
    """Normalise a layer selection to block indices in the order given: "all", a layer number,
    or a sequence, array or tensor of them (numpy and torch integers included; negatives count
    from the last block).

    A block named twice (1 and -3 of a 4-block model, say) is an error, since each layer of a
    result stands for one entry of the selection; so is anything that is not a whole number.
    """
    if isinstance(layers, str):
        if layers == "all":
            return list(range(count))
        raise LayerError(f"layers {layers!r}: expected 'all', a layer number or a list of layer numbers")
    result: dict[int, int] = {}
    for index in layer_numbers(layers):
        if not -count <= index < count:
            raise LayerError(f"layer {index} is out of range: the model has {count} decoder blocks (0..{count - 1})")
        block = index % count
        if block in result:
            first = result[block]
            twice = f"layer {index} is named twice" if first == index else f"layers {first} and {index} both name block {block}"
            raise LayerError(f"{twice}; name each block once")
        result[block] = index
    if not result:
        raise LayerError("no layers chosen")
    return list(result)


def layer_set(layers: "str | int | Sequence[int] | torch.Tensor", count: int) -> list[int]:
    """The distinct blocks a selection of layers to store names, in block order: as `check_layers`,
    except that a block named twice (31 and -1 of 32 blocks) is one stored layer, since a set of
    stored layers has no positions to keep apart."""
    if isinstance(layers, str):
        return check_layers(layers, count)
    numbers = layer_numbers(layers)
    if not numbers:
        raise LayerError("no layers chosen")
    return sorted({block for number in numbers for block in check_layers(number, count)})


def layer_numbers(layers: "int | Sequence[int] | torch.Tensor") -> list[int]:
    """A layer number, or a sequence, array or tensor of them, as a list of ints (numpy and torch
    integers included); a bool, a float or a string is a LayerError."""
    if isinstance(layers, (torch.Tensor, np.ndarray)):
        layers = layers.tolist()
    chosen = list(layers) if isinstance(layers, (list, tuple, range)) else [layers]
    return [_layer_number(layer) for layer in chosen]


def _layer_number(layer: object) -> int:
    """A layer given as any integer type (not a bool, a float or a string) as an int."""
    if isinstance(layer, bool):
        raise LayerError(f"layer {layer!r} is not a layer number")
    try:
        return operator.index(layer)
    except TypeError:
        raise LayerError(f"layer {layer!r} is not a layer number (a whole number, negatives from the last block)") from None


def block_hidden(output: Any) -> torch.Tensor:
    """The hidden states in a decoder block's output, which is a tuple or a bare tensor."""
    return output[0] if isinstance(output, (tuple, list)) else output


def with_block_hidden(output: Any, hidden: torch.Tensor) -> Any:
    """The block output with its hidden states replaced, keeping the output's own type."""
    if isinstance(output, tuple):
        return (hidden, *output[1:])
    if isinstance(output, list):
        return [hidden, *output[1:]]
    return hidden


def context_length(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> int:
    """The longest input the model takes: the smaller of the config's and the tokenizer's limits."""
    config = text_config(model)
    limits = [
        getattr(config, key)
        for key in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length")
        if isinstance(getattr(config, key, None), int)
    ]
    tokenizer_limit = getattr(tokenizer, "model_max_length", None)
    if isinstance(tokenizer_limit, int) and tokenizer_limit < 1_000_000:
        limits.append(tokenizer_limit)
    return min(limits) if limits else 2048


def describe_source(model: PreTrainedModel) -> dict[str, Any]:
    """The model's provenance as a dict; for a model built in memory, what can be said of it
    without reading its weights (see `state_checksum` for where a checksum of them is needed).

    The dtype is the one its parameters have now: a model cast after loading is described as cast.
    """
    dtype = str(next(model.parameters()).dtype).removeprefix("torch.")
    source = getattr(model, "trusttrace_source", None)
    if source is not None:
        return source.as_dict() | {"dtype": dtype}
    return {
        "model": getattr(model, "name_or_path", "") or type(model).__name__,
        "revision": None,
        "commit": None,
        "weights_sha256": None,
        "dtype": dtype,
        "tokenizer": None,
        "tokenizer_sha256": None,
        "architecture": type(model).__name__,
    }


def state_checksum(model: nn.Module) -> str | None:
    """A sha256 over the name, dtype, shape and bytes of every tensor of the model's state dict,
    one tensor at a time on the CPU: what names a model built (or changed) in memory, which has no
    weight files. Read afresh on each call, since weights can change in place. None, with a
    warning, when some weights are offloaded (on the meta device) and cannot be read here.
    """
    state = model.state_dict()
    if any(tensor.is_meta for tensor in state.values()):
        warnings.warn(
            f"{type(model).__name__}: some weights are offloaded (meta device), so they cannot be checksummed; "
            "its activation sets are named by its name and class alone", stacklevel=3,
        )
        return None
    digest = hashlib.sha256()
    for name, tensor in state.items():
        flat = tensor.detach().reshape(-1).contiguous().cpu()
        digest.update(f"{name}:{flat.dtype}:{tuple(tensor.shape)}\n".encode())
        if flat.numel():
            digest.update(flat.view(torch.uint8).numpy())
    return digest.hexdigest()

