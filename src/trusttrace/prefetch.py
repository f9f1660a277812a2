"""Fetching checkpoints ahead of use, so downloads overlap with compute.

While the sweep works on one checkpoint, the next one's weight, config and tokenizer files
are downloaded in a background thread with `huggingface_hub.snapshot_download`. Local
checkpoints need no fetching. Failed fetches are retried with backoff, then reported. Once a
checkpoint's files are there, the same thread computes their weights checksum for its load
(`checksum_ahead`).
"""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path

from trusttrace.checkpoints import Checkpoint
from trusttrace.data.hub import hub_reachable
from trusttrace.errors import CheckpointError, OfflineError
from trusttrace.models import checksum_ahead

# Only what loading needs: configs, tokenizer files, a repository's model code (small; run only
# with trust_remote_code) and one format of weights (safetensors where the revision has them,
# else PyTorch .bin files, as in older Pythia revisions).
SUPPORT_PATTERNS = ["*.json", "*.model", "*.txt", "*.tiktoken", "tokenizer*", "*.py"]

Fetcher = Callable[[Checkpoint], Path]


def is_local(checkpoint: Checkpoint) -> bool:
    return checkpoint.revision is None and Path(checkpoint.model_id).is_dir()


def hub_fetch(checkpoint: Checkpoint) -> Path:
    """Download a Hub checkpoint's loading files into the Hugging Face cache; returns the snapshot
    folder. Where the Hub cannot be reached, the cached snapshot of the revision, or an
    OfflineError; a network error during a download propagates, for `with_retries` to try again."""
    from huggingface_hub import list_repo_files, snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError, RevisionNotFoundError

    if not hub_reachable():
        try:
            return Path(snapshot_download(checkpoint.model_id, revision=checkpoint.revision, local_files_only=True))
        except LocalEntryNotFoundError:
            raise OfflineError(
                f"{checkpoint.model_id}@{checkpoint.revision}: the Hub cannot be reached and the checkpoint is not cached"
            ) from None
    try:
        files = list_repo_files(checkpoint.model_id, revision=checkpoint.revision)
        patterns = SUPPORT_PATTERNS + weight_patterns(files)
        folder = snapshot_download(checkpoint.model_id, revision=checkpoint.revision, allow_patterns=patterns)
        if broken_links(Path(folder)):  # a file shared with a revision deleted meanwhile: fetched again
            folder = snapshot_download(checkpoint.model_id, revision=checkpoint.revision, allow_patterns=patterns)
    except RevisionNotFoundError:
        raise CheckpointError(f"{checkpoint.model_id}: unknown revision {checkpoint.revision!r}") from None
    return Path(folder)


def broken_links(folder: Path) -> list[Path]:
    """Files of a cache snapshot whose blob is gone. Revisions share blobs (the same config and
    tokenizer files): one the sweep deletes while the next is downloading can take a blob the new
    snapshot has just linked to, and downloading again restores it."""
    return [path for path in folder.rglob("*") if path.is_symlink() and not path.exists()]


def weight_patterns(files: list[str]) -> list[str]:
    """Download safetensors weights when the revision has them, else the .bin files."""
    return ["*.safetensors"] if any(f.endswith(".safetensors") for f in files) else ["*.bin"]


def fetch(checkpoint: Checkpoint, fetcher: Fetcher = hub_fetch) -> Path:
    """The local folder of a checkpoint: itself when local, else the fetcher's result."""
    return Path(checkpoint.model_id) if is_local(checkpoint) else fetcher(checkpoint)


def with_retries(action: Callable[[], Path], retries: int, backoff: float = 2.0) -> Path:
    """Run `action`, retrying on any error up to `retries` times with exponential backoff."""
    for attempt in range(retries + 1):
        try:
            return action()
        except (CheckpointError, OfflineError, KeyboardInterrupt):  # trying again cannot help
            raise
        except Exception:
            if attempt == retries:
                raise
            time.sleep(backoff * 2**attempt)
    raise AssertionError("unreachable")


class Prefetcher:
    """Fetch checkpoints in background threads while the caller works on another (the sweep asks
    for one ahead). The threads are daemons: a sweep that stops (Ctrl-C, an error) exits at once
    instead of waiting for a download of gigabytes nobody will use; the Hugging Face cache resumes
    its partial files on the next fetch."""

    def __init__(self, fetcher: Fetcher = hub_fetch, retries: int = 2):
        self._fetcher = fetcher
        self._retries = retries
        self._futures: dict[str, Future] = {}

    def schedule(self, checkpoint: Checkpoint) -> None:
        """Start fetching `checkpoint` unless it is already under way."""
        if checkpoint.name in self._futures:
            return
        future: Future = Future()

        def work() -> None:
            if future.set_running_or_notify_cancel():
                try:
                    folder = with_retries(lambda: fetch(checkpoint, self._fetcher), self._retries)
                except BaseException as error:  # handed to the caller of get()
                    future.set_exception(error)
                    return
                try:  # claimed before get() returns, so the load waits for it
                    checksum = checksum_ahead(folder)
                except Exception:  # (a folder that cannot be resolved) the load hashes it
                    checksum = None
                future.set_result(folder)
                if checksum is not None:
                    checksum()

        self._futures[checkpoint.name] = future
        threading.Thread(target=work, name=f"trusttrace-prefetch-{checkpoint.name}", daemon=True).start()

    def get(self, checkpoint: Checkpoint) -> Path:
        """The checkpoint's local folder, waiting for (or starting) its fetch; errors propagate."""
        self.schedule(checkpoint)
        return self._futures.pop(checkpoint.name).result()

    def close(self) -> None:
        """Stop waiting for fetches under way: their results are not needed."""
        for future in self._futures.values():
            future.cancel()
        self._futures.clear()


def in_hub_cache(checkpoint: Checkpoint) -> bool:
    """Whether a checkpoint is on disk already: a local one, or a Hub revision whose config.json
    the Hugging Face cache holds. A sweep never deletes such a checkpoint's files, which the
    user (or another tool) put there."""
    if is_local(checkpoint):
        return True
    from huggingface_hub import try_to_load_from_cache

    try:
        found = try_to_load_from_cache(checkpoint.model_id, "config.json", revision=checkpoint.revision)
    except Exception:  # a malformed id or cache: count it as not there, as a fetch would
        return False
    return isinstance(found, str)


def snapshot_refs(model_id: str) -> dict[str, set[str]]:
    """The commits of `model_id` whose snapshots the Hugging Face cache holds, each with the refs
    (branches, tags) that name it; none for a local folder or an unreadable cache. A commit can
    have several: Pythia's step143000 is main, and a user who fetched main holds it already."""
    if Path(model_id).is_dir():
        return {}
    from huggingface_hub import constants
    from huggingface_hub.file_download import repo_folder_name

    try:
        repo = Path(constants.HF_HUB_CACHE) / repo_folder_name(repo_id=model_id, repo_type="model")
        found: dict[str, set[str]] = {folder.name: set() for folder in (repo / "snapshots").iterdir() if folder.is_dir()}
        refs = repo / "refs"
        # A ref's atomic write leaves NAME.<hex>.tmp behind when killed: not a ref.
        for ref in (path for path in refs.rglob("*") if path.is_file() and path.suffix != ".tmp") if refs.is_dir() else ():
            found.setdefault(ref.read_text().strip(), set()).add(ref.relative_to(refs).as_posix())
        return found
    except (OSError, ValueError):
        return {}


def delete_fetched(checkpoint: Checkpoint, folder: Path) -> None:
    """Remove a fetched Hub checkpoint's files from the cache (never a local checkpoint)."""
    if is_local(checkpoint):
        return
    try:
        from huggingface_hub import scan_cache_dir

        commit = folder.name
        scan_cache_dir().delete_revisions(commit).execute()
    except Exception:
        shutil.rmtree(folder, ignore_errors=True)
