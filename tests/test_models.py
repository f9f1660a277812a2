"""Model loading from local folders, decoder-block discovery, and clear errors."""

from __future__ import annotations

import hashlib
import json
import shutil
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from trusttrace.errors import CheckpointError, LayerError, ModelError, OfflineError
from trusttrace.models import check_layers, decoder_layers, folder_checksum, layer_set, load_model
from trusttrace.tiny import tiny_model


def test_load_local_folder_in_requested_dtype(arch, saved_model):
    model, tokenizer = load_model(saved_model(arch), dtype="bfloat16", device="cpu")
    assert next(model.parameters()).dtype == torch.bfloat16
    assert not model.training
    assert tokenizer.pad_token_id is not None
    source = model.trusttrace_source
    assert source.dtype == "bfloat16" and len(source.weights_sha256) == 64


def test_same_weights_same_checksum(saved_model, tmp_path, model_factory, tokenizer):
    first, _ = load_model(saved_model("gpt2"), dtype="float32", device="cpu")
    copy = tmp_path / "copy"
    model_factory("gpt2").save_pretrained(copy)
    tokenizer.save_pretrained(copy)
    second, _ = load_model(copy, dtype="float32", device="cpu")
    assert first.trusttrace_source.weights_sha256 == second.trusttrace_source.weights_sha256 == folder_checksum(copy)
    other = tmp_path / "other"
    tiny_model("gpt2", len(tokenizer), seed=1).save_pretrained(other)
    tokenizer.save_pretrained(other)
    third, _ = load_model(other, dtype="float32", device="cpu")
    assert third.trusttrace_source.weights_sha256 not in (None, first.trusttrace_source.weights_sha256)


def copy_of(folder, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(folder, copy)
    return copy


def counting_checksums(monkeypatch, delay: float = 0.0) -> list:
    import time

    import trusttrace.models as models

    calls, original = [], models.folder_checksum

    def counted(folder):
        calls.append(folder)
        time.sleep(delay)
        return original(folder)

    monkeypatch.setattr(models, "folder_checksum", counted)
    return calls


def test_a_checksum_computed_ahead_is_used_by_the_load(saved_model, tmp_path, monkeypatch):
    from trusttrace.models import checksum_ahead

    folder = copy_of(saved_model("gpt2"), tmp_path)
    expected = folder_checksum(folder)
    calls = counting_checksums(monkeypatch)
    checksum_ahead(folder)()
    model, _ = load_model(folder, dtype="float32", device="cpu")
    assert model.trusttrace_source.weights_sha256 == expected and len(calls) == 1  # the ahead one only


def test_a_load_waits_for_a_checksum_under_way_instead_of_hashing_again(saved_model, tmp_path, monkeypatch):
    import threading

    from trusttrace.models import checksum_ahead

    folder = copy_of(saved_model("gpt2"), tmp_path)
    expected = folder_checksum(folder)
    calls = counting_checksums(monkeypatch, delay=0.5)
    worker = threading.Thread(target=checksum_ahead(folder))
    worker.start()
    model, _ = load_model(folder, dtype="float32", device="cpu")
    worker.join()
    assert model.trusttrace_source.weights_sha256 == expected and len(calls) == 1


def test_weights_changed_after_their_checksum_ahead_are_hashed_again(saved_model, tmp_path, monkeypatch, tokenizer):
    from trusttrace.models import checksum_ahead

    folder = copy_of(saved_model("gpt2"), tmp_path)
    stale = folder_checksum(folder)
    checksum_ahead(folder)()
    tiny_model("gpt2", len(tokenizer), seed=7).save_pretrained(folder)  # the same names and sizes, other weights
    model, _ = load_model(folder, dtype="float32", device="cpu")
    assert model.trusttrace_source.weights_sha256 == folder_checksum(folder) != stale


def test_a_trainer_checkpoint_s_optimizer_and_run_state_are_not_weights(tmp_path):
    (tmp_path / "model.safetensors").write_bytes(b"weights")
    plain = folder_checksum(tmp_path)
    for name in ("optimizer.pt", "scheduler.pt", "rng_state.pth", "training_args.bin"):
        (tmp_path / name).write_bytes(name.encode())  # what transformers' Trainer saves beside them
    assert folder_checksum(tmp_path) == plain
    (tmp_path / "model.safetensors").unlink()
    (tmp_path / "pytorch_model.bin").write_bytes(b"weights")  # an older checkpoint: its .bin files are the weights
    assert folder_checksum(tmp_path) == hashlib.sha256(f"pytorch_model.bin:{hashlib.sha256(b'weights').hexdigest()}".encode()).hexdigest()


def test_folder_checksum_covers_every_weight_file_by_name_and_content(tmp_path):
    """Shards are hashed in parallel; the result is one sha256 over sorted name:sha256 lines."""
    shards = {f"model-0000{i}-of-00003.safetensors": bytes([i]) * (1000 + i) for i in range(1, 4)}
    for name, content in shards.items():
        (tmp_path / name).write_bytes(content)
    (tmp_path / "config.json").write_text("{}")
    lines = [f"{name}:{hashlib.sha256(content).hexdigest()}" for name, content in sorted(shards.items())]
    assert folder_checksum(tmp_path) == hashlib.sha256("\n".join(lines).encode()).hexdigest()
    (tmp_path / "model-00002-of-00003.safetensors").write_bytes(b"changed")
    assert folder_checksum(tmp_path) != hashlib.sha256("\n".join(lines).encode()).hexdigest()
    empty = tmp_path / "empty"
    empty.mkdir()
    assert folder_checksum(empty) is None


def test_a_hub_cached_model_is_checksummed_by_its_blob_names(tmp_path, monkeypatch, model_factory):
    """Files in the Hub cache are named by their sha256: the checksum reads the names, not the bytes."""
    import huggingface_hub

    from trusttrace.models import weights_checksum

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    commit, blob = "c" * 40, "b" * 64
    repo = tmp_path / "models--org--tiny"
    (repo / "blobs").mkdir(parents=True)
    (repo / "blobs" / blob).write_bytes(b"not really weights")
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text("{}")
    (snapshot / "model.safetensors").symlink_to(repo / "blobs" / blob)
    model = model_factory("llama")
    model.name_or_path, model.config._commit_hash = "org/tiny", commit
    assert weights_checksum(model) == hashlib.sha256(f"model.safetensors:{blob}".encode()).hexdigest()
    model.config._commit_hash = "d" * 40  # a revision not in the cache: no checksum rather than a wrong one
    assert weights_checksum(model) is None


def test_decoder_layers_found_for_each_architecture(arch, model_factory):
    model = model_factory(arch)
    assert len(decoder_layers(model)) == 4


def test_decoder_layers_unknown_architecture():
    with pytest.raises(ModelError, match="cannot find its decoder blocks"):
        decoder_layers(torch.nn.Linear(2, 2))


def test_folder_that_is_not_a_causal_lm(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "vit", "hidden_size": 8}))
    with pytest.raises(ModelError, match="not a causal language model"):
        load_model(tmp_path, device="cpu")


def test_an_encoder_with_a_causal_lm_class_is_refused(tmp_path, tokenizer):
    from transformers import BertConfig, BertModel

    config = BertConfig(vocab_size=len(tokenizer), hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32)
    BertModel(config).save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    with pytest.raises(ModelError, match="an encoder \\(BertConfig"):
        load_model(tmp_path, device="cpu")


def test_a_checkpoint_missing_weights_is_refused_not_filled_at_random(saved_model, tmp_path):
    from safetensors.torch import load_file, save_file

    folder = tmp_path / "damaged"
    shutil.copytree(saved_model("llama"), folder)
    weights = load_file(folder / "model.safetensors")
    save_file({k: v for k, v in weights.items() if ".layers.1." not in k}, folder / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ModelError, match="lacks .* weight\\(s\\) the model needs: model.layers.1"):
        load_model(folder, device="cpu")



def test_a_cut_weights_file_and_a_folder_without_tokenizer_are_named(saved_model, tmp_path):
    cut = tmp_path / "cut"
    shutil.copytree(saved_model("llama"), cut)
    weights = cut / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])  # an interrupted copy
    with pytest.raises(ModelError, match="cut: a weights file is damaged or incomplete"):
        load_model(cut, device="cpu")
    bare = tmp_path / "bare"
    shutil.copytree(saved_model("llama"), bare)
    for path in bare.glob("tokenizer*"):
        path.unlink()
    with pytest.raises(ModelError, match="bare: cannot load its tokenizer"):
        load_model(bare, device="cpu")

def test_a_local_folder_has_no_revisions_and_a_missing_folder_is_named(saved_model, tmp_path):
    with pytest.raises(CheckpointError, match="a local folder has no revisions"):
        load_model(saved_model("gpt2"), revision="step1000", device="cpu")
    for missing in (tmp_path / "nowhere", "./nowhere"):
        with pytest.raises(ModelError, match="no such model folder"):
            load_model(missing, device="cpu")


def test_a_relative_path_is_recorded_as_the_absolute_folder(saved_model, monkeypatch):
    folder = saved_model("gpt2")
    monkeypatch.chdir(folder.parent)
    model, _ = load_model(folder.name, device="cpu")
    assert model.trusttrace_source.model == str(folder.resolve())


def test_folder_without_a_model(tmp_path):
    with pytest.raises(ModelError, match=str(tmp_path)):
        load_model(tmp_path, device="cpu")


def test_a_folder_of_checkpoints_or_a_suite_name_points_at_one_checkpoint(saved_model, tmp_path):
    suite = tmp_path / "suite"
    for step in ("step_100", "step_200"):
        shutil.copytree(saved_model("gpt2"), suite / step)
    (suite / "runs").mkdir()  # no config.json: not named
    with pytest.raises(ModelError, match=r"suite: a folder without config.json.*checkpoint folders \(step_100, step_200\): pass one$"):
        load_model(suite, device="cpu")
    for step in ("step_300", "step_400"):
        shutil.copytree(suite / "step_100", suite / step)
    with pytest.raises(ModelError, match=r"checkpoint folders \(step_100, step_200, step_300, …\): pass one$"):
        load_model(suite, device="cpu")
    with pytest.raises(ModelError, match="names a suite of checkpoints.*pass one checkpoint's folder"):
        load_model(f"local:{suite}", device="cpu")


@pytest.mark.parametrize("variable", ["HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"])
def test_hub_model_offline_is_a_clear_error_naming_the_variable(monkeypatch, variable):
    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv(variable, "1")
    with pytest.raises(OfflineError, match=rf"EleutherAI/pythia-70m@step1000: the Hugging Face Hub is off \({variable} is set\)"):
        load_model("EleutherAI/pythia-70m", revision="step1000", device="cpu")


def test_an_unreachable_hub_fails_a_hub_model_at_once_in_one_line(hub_online, monkeypatch):
    import socket
    import time

    from huggingface_hub import constants

    def refused(address, timeout):
        raise OSError("Name or service not known")

    monkeypatch.setattr(socket, "create_connection", refused)
    start = time.perf_counter()
    with pytest.raises(OfflineError, match=r"not-a-cached/model: the Hugging Face Hub is off \(huggingface.co cannot be reached\)"):
        load_model("not-a-cached/model", device="cpu")
    assert time.perf_counter() - start < 10  # no retries with back-off
    assert constants.HF_HUB_OFFLINE and hub_online.offline_reason() == "huggingface.co cannot be reached"


def test_behind_a_proxy_the_hub_is_not_probed(hub_online, monkeypatch):
    import socket

    monkeypatch.setenv("HTTPS_PROXY", "http://proxy:3128")
    monkeypatch.setattr(socket, "create_connection", lambda *args, **kwargs: pytest.fail("probed past the proxy"))
    assert hub_online.hub_reachable()


def test_a_hub_revision_resolves_to_its_commit_online_and_from_the_cache_offline(hub_online, monkeypatch, tmp_path):
    import huggingface_hub
    from huggingface_hub import constants

    from trusttrace.models import hub_commit

    asked = []
    monkeypatch.setattr(huggingface_hub.HfApi, "model_info",
                        lambda self, repo, revision=None: asked.append((repo, revision)) or SimpleNamespace(sha="c0ffee"))
    assert hub_commit("org/chat") == "c0ffee" and asked == [("org/chat", None)]
    snapshot = tmp_path / "models--org--chat" / "snapshots" / "abc123"  # the cache as huggingface_hub lays it out
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text("{}")
    (tmp_path / "models--org--chat" / "refs").mkdir()
    (tmp_path / "models--org--chat" / "refs" / "main").write_text("abc123")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    assert hub_commit("org/chat") == "abc123" and len(asked) == 1  # offline: the cache's main, no Hub call
    assert hub_commit("org/other") is None


def test_a_model_loaded_from_the_hub_cache_records_its_commit_and_weights(tmp_path, monkeypatch, tokenizer):
    """transformers 5 no longer keeps the commit on the config: it is read from the cache snapshot."""
    from huggingface_hub import constants

    from trusttrace.models import hub_commit

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    commit = "c" * 40
    repo = tmp_path / "models--org--tiny"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    snapshot = repo / "snapshots" / commit
    tiny_model("llama", len(tokenizer), seed=0).save_pretrained(snapshot)
    tokenizer.save_pretrained(snapshot)
    model, _ = load_model("org/tiny", dtype="float32", device="cpu")
    source = model.trusttrace_source
    assert (source.model, source.revision, source.commit) == ("org/tiny", None, commit)
    assert source.weights_sha256 == folder_checksum(snapshot) is not None
    with pytest.raises(ModelError, match="neither a local model folder nor a Hub model id"):
        hub_commit("../not/a/folder")


def test_a_set_of_layers_to_store_names_each_block_once_in_block_order():
    assert layer_set([2, -1, 0], 3) == [0, 2] and layer_set("all", 3) == [0, 1, 2] and layer_set(np.array([1]), 3) == [1]
    assert layer_set(-1, 3) == [2]
    with pytest.raises(LayerError, match="no layers chosen"):
        layer_set([], 3)
    with pytest.raises(LayerError, match="layer 3 is out of range"):
        layer_set([0, 3], 3)


def test_check_layers():
    assert check_layers("all", 3) == [0, 1, 2]
    assert check_layers([-1, 0], 3) == [2, 0]
    with pytest.raises(LayerError, match="layer 2 is named twice"):  # layer j of a result stands for entry j
        check_layers([2, 1, 2], 3)
    with pytest.raises(LayerError, match="layer 3 is out of range"):
        check_layers([3], 3)


def test_a_checksum_claimed_ahead_but_never_computed_does_not_hold_the_load(saved_model, tmp_path, monkeypatch):
    from trusttrace.models import checksum_ahead

    folder = copy_of(saved_model("gpt2"), tmp_path)
    expected = folder_checksum(folder)
    work = checksum_ahead(folder)  # claimed, never run before the load
    model, _ = load_model(folder, dtype="float32", device="cpu")
    assert model.trusttrace_source.weights_sha256 == expected
    calls = counting_checksums(monkeypatch)
    work()  # withdrawn by the load: computes nothing
    assert calls == []
