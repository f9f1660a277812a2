"""The activation store: round trip, sharding, corruption detection, atomicity, resume keys."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import warnings
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors import safe_open

from trusttrace.data import DatasetCard, TrustDataset
from trusttrace.errors import CorruptArtefactError, DatasetError, StoreError
from trusttrace.extract import ActivationBatch, extract_activations, iter_activations
from trusttrace.models import load_model
from trusttrace.store import WORKSPACE_FILE, ActivationStore, append_table, read_table
from trusttrace.extract_stage import extract_to_store

CARD = DatasetCard(name="toy", dimension="user", label_1="true", label_0="false", source="test", licence="none")


def toy_dataset(statements) -> TrustDataset:
    labels = np.arange(len(statements)) % 2
    return TrustDataset(name="toy", statements=statements, labels=labels, groups=None, card=CARD, source="test")


def provenance(n: int, layers=(0, 1, 2)) -> dict:
    return {
        "model": "toy-model", "revision": "r1", "commit": None, "weights_sha256": "abc", "checkpoint": "r1",
        "step": 10, "tokens": None, "dataset": "toy", "n": n, "position": "last",
        "layers": list(layers), "dtype": "float32", "tokenizer": "t", "template": None,
    }


def test_round_trip_and_layer_selection(tmp_path, statements):
    store = ActivationStore(tmp_path)
    dataset = toy_dataset(statements)
    acts = torch.randn(3, len(statements), 8)
    record = store.save(acts, dataset, provenance(len(statements)) | {"dataset_hash": dataset.content_hash})
    assert store.records() == [record]
    torch.testing.assert_close(store.load(record), acts)
    torch.testing.assert_close(store.load(record, layers=[2, 0]), acts[[2, 0]])
    back = store.load_dataset(record)
    assert back.statements == dataset.statements and back.content_hash == dataset.content_hash
    with pytest.raises(StoreError, match="layers \\[5\\] are not stored"):
        store.load(record, layers=[5])


def test_streamed_shards_in_batch_order_load_in_row_order(tmp_path, saved_model, statements):
    model, tokenizer = load_model(saved_model("llama"), dtype="float32", device="cpu")
    dataset = toy_dataset(statements)
    store = ActivationStore(tmp_path)
    record = extract_to_store(model, tokenizer, dataset, store, batch_size=2, memory_budget=1)
    meta = json.loads((record.path / "meta.json").read_text())
    assert len(meta["files"]) == 4  # one shard per batch of two statements
    direct = torch.cat([b.states for b in iter_activations(model, tokenizer, statements, batch_size=len(statements))], 1)
    order = next(iter_activations(model, tokenizer, statements, batch_size=len(statements))).rows
    expected = torch.empty_like(direct)
    expected[:, torch.from_numpy(order)] = direct
    torch.testing.assert_close(store.load(record), expected)
    for key in ("model", "revision", "commit", "weights_sha256", "dataset_hash", "position", "dtype", "tokenizer", "trusttrace_version"):
        assert key in record.provenance


def test_existing_set_is_reused_and_corrupt_set_recomputed(tmp_path, saved_model, statements):
    model, tokenizer = load_model(saved_model("gpt2"), dtype="float32", device="cpu")
    store = ActivationStore(tmp_path)
    dataset = toy_dataset(statements)
    first = extract_to_store(model, tokenizer, dataset, store)
    good = store.load(first)
    shard = next(first.path.glob("shard-*.safetensors"))
    stamp = shard.stat().st_mtime_ns
    again = extract_to_store(model, tokenizer, dataset, store)
    assert again.key == first.key and shard.stat().st_mtime_ns == stamp
    data = bytearray(shard.read_bytes())
    data[-5] ^= 0xFF
    shard.write_bytes(bytes(data))
    with pytest.raises(CorruptArtefactError, match="checksum mismatch"):
        store.load(first)
    assert not store.verify(first)
    with pytest.warns(UserWarning, match="checksum mismatch.*: the activation set is damaged and is recomputed"):
        redone = extract_to_store(model, tokenizer, dataset, store)
    torch.testing.assert_close(store.load(redone), good)
    (redone.path / "meta.json").write_text("{not json")
    with pytest.warns(UserWarning, match="meta.json: unreadable sidecar.*is recomputed"):
        again = extract_to_store(model, tokenizer, dataset, store)
    assert again.key == first.key and store.verify(again)
    torch.testing.assert_close(store.load(again), good)


def test_models_built_in_memory_are_told_apart_and_a_cast_is_recorded(tmp_path, tokenizer, statements):
    from trusttrace.tiny import tiny_model

    store, dataset = ActivationStore(tmp_path), toy_dataset(statements)
    first = extract_to_store(tiny_model("llama", len(tokenizer), seed=0), tokenizer, dataset, store)
    second_model = tiny_model("llama", len(tokenizer), seed=1)
    second = extract_to_store(second_model, tokenizer, dataset, store)
    assert second.key != first.key  # same class and name, other weights
    torch.testing.assert_close(store.load(second), extract_activations(second_model, tokenizer, statements))
    with torch.no_grad():
        next(second_model.parameters()).data.mul_(2.0)  # in place, through .data: no version counter moves
    changed = extract_to_store(second_model, tokenizer, dataset, store)
    assert changed.key not in (first.key, second.key)
    cast = extract_to_store(second_model.to(torch.bfloat16), tokenizer, dataset, store)
    assert cast.provenance["dtype"] == "bfloat16" and cast.key not in (second.key, changed.key)


def test_a_bfloat16_model_s_states_are_stored_as_computed_and_read_back_as_float32(tmp_path, saved_model, statements):
    model, tokenizer = load_model(saved_model("llama"), dtype="bfloat16", device="cpu")
    batch = next(iter_activations(model, tokenizer, statements, batch_size=len(statements)))
    assert batch.states.dtype == torch.bfloat16  # nothing rounded on the way, half the bytes to move
    store = ActivationStore(tmp_path)
    record = extract_to_store(model, tokenizer, toy_dataset(statements), store)
    with safe_open(next(record.path.glob("shard-*")), framework="pt") as shard:
        assert shard.get_tensor(f"layer.{record.layers[0]}").dtype == torch.bfloat16
    loaded = store.load(record)
    assert loaded.dtype == torch.float32
    torch.testing.assert_close(loaded, extract_activations(model, tokenizer, statements), rtol=0, atol=0)


def test_a_load_reads_only_the_layers_asked_for_and_checksums_cover_every_shard(tmp_path, statements):
    store = ActivationStore(tmp_path)
    dataset = toy_dataset(statements)
    acts = torch.randn(3, len(statements), 4)
    record = store.save(acts, dataset, provenance(len(statements)) | {"dataset_hash": dataset.content_hash})
    shard = next(record.path.glob("shard-*"))
    data = bytearray(shard.read_bytes())
    where = data.find(acts[2, 0].numpy().tobytes())  # inside layer 2's tensor
    data[where] ^= 0xFF
    shard.write_bytes(bytes(data))
    torch.testing.assert_close(store.load(record, layers=[0, 1], checksums=False), acts[[0, 1]])  # layer 2 never read
    assert not torch.equal(store.load(record, layers=[2], checksums=False), acts[[2]])
    with pytest.raises(CorruptArtefactError, match="checksum mismatch"):
        store.load(record, layers=[0])
    with pytest.raises(CorruptArtefactError, match="shard-00000.safetensors: checksum mismatch"):
        store.check(record)
    store.check(record, checksums=False)  # present, which is all that is asked


def test_a_set_loads_by_its_key_and_an_unknown_key_is_named(tmp_path, statements):
    store = ActivationStore(tmp_path)
    dataset = toy_dataset(statements)
    acts = torch.randn(3, len(statements), 4)
    record = store.save(acts, dataset, provenance(len(statements)) | {"dataset_hash": dataset.content_hash})
    torch.testing.assert_close(store.load(store.records()[0].key, layers=[1]), acts[[1]])
    for key in ("0123abcd", "../" + record.key):
        with pytest.raises(StoreError, match=f"no activation set with key '{re.escape(key)}'"):
            store.load(key)


def test_a_shard_linked_from_a_blobs_folder_is_still_hashed(tmp_path, statements):
    store = ActivationStore(tmp_path / "ws")
    dataset = toy_dataset(statements)
    record = store.save(torch.randn(3, len(statements), 4), dataset, provenance(len(statements)))
    shard = next(record.path.glob("shard-*"))
    blob = tmp_path / "blobs" / ("0" * 64)  # laid out as a Hugging Face cache, whose blob names are their hashes
    blob.parent.mkdir()
    data = bytearray(shard.read_bytes())
    data[-3] ^= 0xFF
    blob.write_bytes(bytes(data))
    shard.unlink()
    shard.symlink_to(blob)
    with pytest.raises(CorruptArtefactError, match="checksum mismatch"):
        store.load(record)
    with pytest.raises(StoreError, match="no layers asked for"):
        store.load(record, layers=[])


def test_shards_stay_within_their_budget_and_a_sidecar_that_loses_one_is_corrupt(tmp_path, statements):
    store = ActivationStore(tmp_path)
    dataset = toy_dataset(statements)
    n = len(statements)
    batches = [ActivationBatch(rows=np.arange(i, min(i + 2, n)), states=torch.randn(3, min(2, n - i), 4)) for i in range(0, n, 2)]
    batch_bytes = 3 * 2 * 4 * 4
    record = store.save_batches(batches, dataset, provenance(n), shard_bytes=2 * batch_bytes + 1)
    meta = json.loads((record.path / "meta.json").read_text())
    assert len(meta["files"]) == -(-len(batches) // 2)  # two batches each: the third would pass the budget
    del meta["files"][sorted(meta["files"])[0]]
    (record.path / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(CorruptArtefactError, match="row 0 is stored 0 times"):
        store.load(record)


def test_missing_shard_is_reported(tmp_path, statements):
    store = ActivationStore(tmp_path)
    dataset = toy_dataset(statements)
    record = store.save(torch.zeros(3, len(statements), 4), dataset, provenance(len(statements)) | {"dataset_hash": dataset.content_hash})
    next(record.path.glob("shard-*")).unlink()
    with pytest.raises(CorruptArtefactError, match="shard is missing"):
        store.load(record)


def test_crash_midway_leaves_nothing_visible(tmp_path, statements):
    store = ActivationStore(tmp_path)
    dataset = toy_dataset(statements)

    def batches():
        yield ActivationBatch(rows=np.arange(2), states=torch.zeros(3, 2, 4))
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError, match="killed"):
        store.save_batches(batches(), dataset, provenance(len(statements)), shard_bytes=1)
    assert store.records() == []
    assert [p.name for p in store.activations_dir.iterdir()] == []


def test_key_depends_on_identity_only(tmp_path):
    store = ActivationStore(tmp_path)
    base = provenance(4)
    assert store.key(base) == store.key(base | {"created": "later", "step": 99})
    assert store.key(base) != store.key(base | {"weights_sha256": "other"})
    assert store.key(base) != store.key(base | {"position": "mean"})
    # The tokenizer counts by its vocabulary, not by the folder (or class) it was loaded from.
    assert store.key(base) == store.key(base | {"tokenizer": "/another/cache/snapshots/abc (OtherTokenizerClass)"})
    assert store.key(base) != store.key(base | {"tokenizer_sha256": "another vocabulary"})


def test_a_set_stored_under_an_older_identity_rule_is_found_by_its_provenance(tmp_path, statements):
    dataset = toy_dataset(statements)
    wanted = provenance(len(statements)) | {"dataset_hash": dataset.content_hash, "tokenizer_sha256": "v"}
    record = ActivationStore(tmp_path).save(torch.randn(3, len(statements), 4), dataset, wanted)
    older = record.path.rename(record.path.with_name("key-of-an-older-rule"))
    store = ActivationStore(tmp_path)
    found = store.find(wanted)
    assert found is not None and found.path == older and store.verify(found)
    assert store.find(wanted | {"position": "mean"}) is None
    store.remove(found)
    assert store.find(wanted) is None


def test_incompatible_workspace_is_refused(tmp_path):
    (tmp_path / WORKSPACE_FILE).write_text(json.dumps({"format": 999}))
    with pytest.raises(StoreError, match="incompatible trusttrace version"):
        ActivationStore(tmp_path)


def test_unwritable_workspace(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(StoreError, match="cannot create a workspace"):
        ActivationStore(blocker / "ws")


def test_append_table_replaces_rows_with_same_key(tmp_path):
    import pandas as pd

    path = tmp_path / "t.parquet"
    append_table(path, pd.DataFrame({"k": [1, 2], "v": [0.1, 0.2]}), ["k"])
    table = append_table(path, pd.DataFrame({"k": [2, 3], "v": [0.5, 0.3]}), ["k"])
    assert table.sort_values("k")["v"].tolist() == [0.1, 0.5, 0.3]
    assert len(read_table(path)) == 3


def test_one_writer_at_a_time_and_leftovers_cleared_by_the_next(tmp_path):
    store = ActivationStore(tmp_path)
    staging = store.activations_dir / ".tmp-abc-123"
    staging.mkdir(parents=True)
    (tmp_path / ".probes.parquet.x1.tmp").write_bytes(b"half")
    other = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from trusttrace.store import ActivationStore\n"
         "with ActivationStore(sys.argv[1]).locked():\n    print('held', flush=True); time.sleep(30)", str(tmp_path)],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        assert other.stdout.readline().strip() == "held"
        with pytest.raises(StoreError, match="another trusttrace process is writing"):
            with store.locked():
                pass
    finally:
        other.kill()
        other.wait()
    with store.locked():
        with store.locked():  # re-entrant in one store object
            assert not staging.exists() and not (tmp_path / ".probes.parquet.x1.tmp").exists()


def test_damaged_table_page_is_detected(tmp_path):
    path = tmp_path / "t.parquet"
    append_table(path, pd.DataFrame({"layer": range(50), "accuracy": np.linspace(0.5, 0.9, 50)}), ["layer"])
    data = bytearray(path.read_bytes())
    data[data.find(np.float64(0.9).tobytes()) + 2] ^= 0x55  # one value changed, the file still parses
    path.write_bytes(bytes(data))
    with pytest.raises(CorruptArtefactError, match="t.parquet"):
        read_table(path)


def test_half_written_dataset_snapshot_is_rewritten(tmp_path, statements):
    store = ActivationStore(tmp_path)
    dataset = toy_dataset(statements)
    path = store.save_dataset(dataset)
    path.with_suffix(".json").unlink()  # killed between the two files
    store.save_dataset(dataset)
    assert path.with_suffix(".json").exists()


def test_a_dataset_whose_rows_parquet_cannot_hold_is_refused_before_anything_is_written(tmp_path, statements):
    dataset = toy_dataset(statements[:3])
    mixed = replace(dataset, groups=np.array([True, 1, 2], dtype=object))  # as built in memory, unchecked
    store = ActivationStore(tmp_path)
    with pytest.raises(DatasetError, match=f"{dataset.name}: its rows cannot be stored as a table"):
        store.save_dataset(mixed)
    assert not any(store.datasets_dir.glob("*"))


def test_a_set_whose_model_config_changed_since_is_recomputed(tmp_path, saved_model, statements):
    import shutil

    folder = tmp_path / "model"
    shutil.copytree(saved_model("llama"), folder)
    store, dataset = ActivationStore(tmp_path / "ws"), toy_dataset(statements)
    first = extract_to_store(*load_model(folder, dtype="float32", device="cpu"), dataset, store)
    assert first.provenance["files_sha256"]
    (folder / "generation_config.json").write_text(json.dumps({"max_new_tokens": 7}))  # changes no state
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert extract_to_store(*load_model(folder, dtype="float32", device="cpu"), dataset, store).key == first.key
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps(config | {"rope_theta": 1000.0}))  # same weights, same key
    model, tokenizer = load_model(folder, dtype="float32", device="cpu")
    with pytest.warns(UserWarning, match="config or tokenizer files changed since this set was extracted"):
        again = extract_to_store(model, tokenizer, dataset, store)
    assert again.key == first.key and again.provenance["files_sha256"] != first.provenance["files_sha256"]
    torch.testing.assert_close(store.load(again), extract_activations(model, tokenizer, statements))


def test_a_loaded_model_changed_in_memory_is_named_by_its_weights_once_its_source_is_dropped(tmp_path, saved_model, statements):
    model, tokenizer = load_model(saved_model("gpt2"), dtype="float32", device="cpu")
    store, dataset = ActivationStore(tmp_path), toy_dataset(statements)
    loaded = extract_to_store(model, tokenizer, dataset, store)
    with torch.no_grad():
        next(model.parameters()).data.add_(1.0)  # a merge in place: the files no longer describe it
    del model.trusttrace_source
    changed = extract_to_store(model, tokenizer, dataset, store)
    assert changed.key != loaded.key
    torch.testing.assert_close(store.load(changed), extract_activations(model, tokenizer, statements))
