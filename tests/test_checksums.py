"""Weight files' sha256 remembered between runs: read back only for the same file identity."""

from __future__ import annotations

import hashlib
import os
import sqlite3
import time
from pathlib import Path

import pytest

from trusttrace import checksums
from trusttrace.checksums import remembered_sha256
from trusttrace.models import folder_checksum, load_model


@pytest.fixture()
def cache(tmp_path, monkeypatch):
    """A fresh cache folder that remembers files of any size written more than 20 ms ago."""
    folder = tmp_path / "cache"
    monkeypatch.setenv(checksums.CACHE_ENV, str(folder))
    monkeypatch.setattr(checksums, "MIN_BYTES", 0)
    monkeypatch.setattr(checksums, "RACY_NS", 20_000_000)
    monkeypatch.setattr(checksums, "_WARNED", set())
    return folder / checksums.CACHE_FILE


@pytest.fixture()
def reads(monkeypatch):
    """The files whose bytes are hashed, in order."""
    calls, original = [], checksums.sha256_of

    def counted(handle):
        calls.append(Path(handle.name))
        return original(handle)

    monkeypatch.setattr(checksums, "sha256_of", counted)
    return calls


def settled(path, data: bytes):
    """Write `data` to `path` and wait until it counts as not just changed."""
    path.write_bytes(data)
    time.sleep(0.05)
    return path


def test_remembered_for_the_same_file_and_not_read_again(cache, reads, tmp_path):
    path = settled(tmp_path / "model.safetensors", b"weights" * 1000)
    expected = hashlib.sha256(b"weights" * 1000).hexdigest()
    assert remembered_sha256(path) == expected
    assert remembered_sha256(path) == expected
    assert reads == [path]
    with sqlite3.connect(cache) as connection:
        assert connection.execute("SELECT path, sha256 FROM checksums").fetchall() == [(str(path), expected)]


def test_a_file_rewritten_in_place_with_its_old_size_and_mtime_is_hashed_again(cache, reads, tmp_path):
    path = settled(tmp_path / "model.safetensors", b"a" * 4096)
    remembered_sha256(path)
    old = os.stat(path)
    with open(path, "r+b") as handle:
        handle.write(b"b")
    os.utime(path, ns=(old.st_atime_ns, old.st_mtime_ns))  # as a tool that keeps times would
    assert os.stat(path).st_mtime_ns == old.st_mtime_ns
    assert remembered_sha256(path) == hashlib.sha256(b"b" + b"a" * 4095).hexdigest()
    assert len(reads) == 2


def test_a_file_replaced_by_another_is_hashed_again(cache, reads, tmp_path):
    path = settled(tmp_path / "model.safetensors", b"a" * 4096)
    remembered_sha256(path)
    settled(tmp_path / "new", b"c" * 4096).replace(path)
    assert remembered_sha256(path) == hashlib.sha256(b"c" * 4096).hexdigest()
    assert len(reads) == 2


def hashed_twice(path) -> str:
    """Ask for `path`'s sha256 twice, checking both answers agree with its bytes."""
    expected = hashlib.sha256(path.read_bytes()).hexdigest()
    assert remembered_sha256(path) == remembered_sha256(path) == expected
    return expected


def test_a_file_changed_just_before_its_hash_is_not_remembered(cache, reads, tmp_path, monkeypatch):
    monkeypatch.setattr(checksums, "RACY_NS", 60_000_000_000)
    hashed_twice(settled(tmp_path / "model.safetensors", b"fresh"))
    assert len(reads) == 2 and not cache.exists()


def test_small_files_and_a_switched_off_cache_are_always_read(cache, reads, tmp_path, monkeypatch):
    monkeypatch.setattr(checksums, "MIN_BYTES", 1000)
    hashed_twice(settled(tmp_path / "config.json", b"{}"))
    assert len(reads) == 2 and not cache.exists()
    monkeypatch.setenv(checksums.CACHE_ENV, "off")
    hashed_twice(settled(tmp_path / "model.safetensors", b"w" * 2000))
    assert len(reads) == 4 and not cache.exists()


def test_a_damaged_database_is_passed_over_with_one_warning(cache, reads, tmp_path):
    cache.parent.mkdir(parents=True)
    cache.write_bytes(b"this is not a database" * 100)
    path = settled(tmp_path / "model.safetensors", b"weights")
    with pytest.warns(UserWarning, match="cannot remember weight checksums") as caught:
        first = remembered_sha256(path)
        second = remembered_sha256(path)
    assert first == second == hashlib.sha256(b"weights").hexdigest()
    assert len(reads) == 2 and len(caught) == 1 and str(cache) in str(caught[0].message)


def test_a_file_written_while_hashed_is_not_remembered(cache, reads, tmp_path, monkeypatch):
    monkeypatch.setattr(checksums, "RACY_NS", -60_000_000_000)  # only the identity check guards here
    path = settled(tmp_path / "model.safetensors", b"a" * 4096)
    original = checksums.sha256_of

    def written_meanwhile(handle):
        with open(path, "r+b") as writer:
            writer.write(b"b")
        return original(handle)

    monkeypatch.setattr(checksums, "sha256_of", written_meanwhile)
    remembered_sha256(path)
    assert not cache.exists()
    monkeypatch.setattr(checksums, "sha256_of", original)
    assert remembered_sha256(path) == hashlib.sha256(b"b" + b"a" * 4095).hexdigest()


def homeless(cls):
    raise RuntimeError("Could not determine home directory.")


@pytest.mark.parametrize("problem", ["folder under a file", "no home"])
def test_an_unusable_cache_warns_once_and_the_file_is_hashed(cache, reads, tmp_path, monkeypatch, problem):
    path = settled(tmp_path / "model.safetensors", b"weights")
    if problem == "folder under a file":
        (tmp_path / "plain").write_text("a file, not a folder")
        monkeypatch.setenv(checksums.CACHE_ENV, str(tmp_path / "plain" / "cache"))
    else:
        monkeypatch.delenv(checksums.CACHE_ENV)
        monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
        monkeypatch.setattr(Path, "home", classmethod(homeless))
    with pytest.warns(UserWarning, match="cannot remember weight checksums") as caught:
        hashed_twice(path)
    assert len(reads) == 2 and len(caught) == 1


def test_a_locked_database_is_waited_for_briefly_then_passed_over(cache, reads, tmp_path):
    path = settled(tmp_path / "model.safetensors", b"weights")
    cache.parent.mkdir()
    holder = sqlite3.connect(cache, isolation_level=None)
    try:
        holder.execute(checksums._SCHEMA)
        holder.execute("BEGIN EXCLUSIVE")
        started = time.monotonic()
        with pytest.warns(UserWarning, match="database is locked"):
            assert remembered_sha256(path) == hashlib.sha256(b"weights").hexdigest()
        waited = time.monotonic() - started
    finally:
        holder.close()
    # The lookup and the write each wait LOCK_TIMEOUT_S (1 s), not sqlite's 5 s default.
    assert checksums.LOCK_TIMEOUT_S <= waited < 4 * checksums.LOCK_TIMEOUT_S
    assert reads == [path]


def test_cache_folder_defaults_to_the_user_cache(monkeypatch, tmp_path):
    monkeypatch.delenv(checksums.CACHE_ENV)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert checksums.cache_file() == tmp_path / "trusttrace" / checksums.CACHE_FILE


def test_a_second_load_takes_the_remembered_checksum(cache, reads, saved_model, monkeypatch):
    folder = saved_model("llama")
    time.sleep(0.05)
    first, _ = load_model(folder, dtype="float32", device="cpu")
    weights = [path for path in reads if path.suffix == ".safetensors"]
    assert len(weights) == 1
    second, _ = load_model(folder, dtype="float32", device="cpu")
    assert [path for path in reads if path.suffix == ".safetensors"] == weights
    assert second.trusttrace_source.weights_sha256 == first.trusttrace_source.weights_sha256
    monkeypatch.setenv(checksums.CACHE_ENV, "off")
    assert folder_checksum(folder) == first.trusttrace_source.weights_sha256
    assert len([path for path in reads if path.suffix == ".safetensors"]) == 2
