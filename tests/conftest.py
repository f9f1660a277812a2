"""Shared fixtures: tiny models and tokenizers built locally, and the study's data folder."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# Weight checksums are remembered in a throw-away folder, never the user's cache.
os.environ["TRUSTTRACE_CACHE"] = tempfile.mkdtemp(prefix="trusttrace-cache-")
atexit.register(shutil.rmtree, os.environ["TRUSTTRACE_CACHE"], ignore_errors=True)

from trusttrace.tiny import train_tokenizer, tiny_model  # noqa: E402


@pytest.fixture(autouse=True)
def _hub_probe_forgotten(monkeypatch):
    """Each test asks afresh whether the Hub can be reached (the answer is kept per process)."""
    from trusttrace.data import hub

    monkeypatch.setattr(hub, "UNREACHABLE", [])
    hub._host_answers.cache_clear()
    yield
    hub._host_answers.cache_clear()


@pytest.fixture()
def hub_online(monkeypatch):
    """The Hub as an online machine finds it: not switched off, no proxy, its host answering
    (tests that use this fixture stub the Hub calls themselves)."""
    import contextlib

    from huggingface_hub import constants

    from trusttrace.data import hub

    for variable in hub.OFFLINE_VARIABLES:
        monkeypatch.delenv(variable, raising=False)
    for variable in hub.PROXY_VARIABLES:
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(hub.socket, "create_connection", lambda *args, **kwargs: contextlib.nullcontext())
    return hub



def shared_datasets() -> Path:
    """The folder holding the study's tracingllm/ and upstream/: $TRUSTTRACE_DATA (that folder
    or its tracingllm/ child, as the CLI accepts) or else ../shared/datasets beside the repository."""
    given = os.environ.get("TRUSTTRACE_DATA")
    if not given:
        return Path(__file__).resolve().parents[2] / "shared" / "datasets"
    path = Path(given).resolve()
    return path.parent if path.name == "tracingllm" else path


SHARED_DATA = shared_datasets()

CORPUS = [
    f"the {a} {n} {v} the {b} {m} near the {p}"
    for a in ("red", "blue", "green", "old", "young")
    for n in ("cat", "dog", "bird", "teacher", "river")
    for v in ("sees", "likes", "follows", "finds")
    for b, m, p in (("small", "house", "station"), ("quiet", "garden", "market"), ("tall", "tree", "bridge"))
] + ["answer 0 or 1 , yes or no"]  # the binary tasks' answer tokens, so their two answers differ

STATEMENTS = [
    "the red cat sees the small house",
    "a blue dog likes the quiet garden near the market",
    "bird",
    "the old teacher follows the tall tree near the bridge and the river",
    "young river finds",
    "the green bird sees the small house near the station",
    "the cat",
]


@pytest.fixture(scope="session")
def tokenizer():
    """A word-level tokenizer trained on a few hundred sentences; adds BOS like Llama's."""
    return train_tokenizer(CORPUS, vocab_size=300)


@pytest.fixture(scope="session")
def statements():
    return list(STATEMENTS)


@pytest.fixture(scope="session", params=["llama", "gpt_neox", "gpt2"])
def arch(request):
    return request.param


@pytest.fixture(scope="session")
def model_factory(tokenizer):
    """Build a tiny random model of an architecture (cached per architecture)."""
    cache = {}

    def build(arch: str):
        if arch not in cache:
            cache[arch] = tiny_model(arch, len(tokenizer), seed=0)
        return cache[arch]

    return build


@pytest.fixture(scope="session")
def saved_model(tmp_path_factory, tokenizer, model_factory):
    """Save a tiny model and tokenizer as an ordinary Hugging Face folder (per architecture)."""
    folders = {}

    def save(arch: str) -> Path:
        if arch not in folders:
            folder = tmp_path_factory.mktemp(f"model-{arch}")
            model_factory(arch).save_pretrained(folder)
            tokenizer.save_pretrained(folder)
            folders[arch] = folder
        return folders[arch]

    return save


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The study's datasets beside the repository; tests that need them skip without them."""
    if not (SHARED_DATA / "tracingllm").is_dir():
        pytest.skip(f"the study's datasets are not at {SHARED_DATA}")
    return SHARED_DATA
