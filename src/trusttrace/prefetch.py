"""Fetching checkpoints ahead of use, so downloads overlap with compute.

While the sweep works on one checkpoint, the next one's weight, config and tokenizer files
are downloaded in a background thread with `huggingface_hub.snapshot_download`. Local
checkpoints need no fetching. Failed fetches are retried with backoff, then reported.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from trusttrace.checkpoints import Checkpoint
from trusttrace.data.hub import NETWORK_ERRORS, hub_reachable
from trusttrace.errors import CheckpointError, OfflineError

# Only what loading needs: configs, tokenizer files and one format of weights (safetensors
# where the revision has them, else PyTorch .bin files, as in older Pythia revisions).
SUPPORT_PATTERNS = ["*.json", "*.model", "*.txt", "*.tiktoken", "tokenizer*"]

Fetcher = Callable[[Checkpoint], Path]


def is_local(checkpoint: Checkpoint) -> bool:
    return checkpoint.revision is None and Path(checkpoint.model_id).is_dir()


def hub_fetch(checkpoint: Checkpoint) -> Path:
    """Download a Hub checkpoint's loading files into the Hugging Face cache; returns the snapshot folder."""
    from huggingface_hub import list_repo_files, snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError, RevisionNotFoundError

    hub_reachable()
    try:
        files = list_repo_files(checkpoint.model_id, revision=checkpoint.revision)
        patterns = SUPPORT_PATTERNS + weight_patterns(files)
        folder = snapshot_download(checkpoint.model_id, revision=checkpoint.revision, allow_patterns=patterns)
    except RevisionNotFoundError:
        raise CheckpointError(f"{checkpoint.model_id}: unknown revision {checkpoint.revision!r}") from None
    except (LocalEntryNotFoundError, *NETWORK_ERRORS):
        raise OfflineError(
            f"{checkpoint.model_id}@{checkpoint.revision}: the Hub cannot be reached and the checkpoint is not cached"
        ) from None
    return Path(folder)


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
        except (CheckpointError, KeyboardInterrupt):
            raise
        except Exception:
            if attempt == retries:
                raise
            time.sleep(backoff * 2**attempt)
    raise AssertionError("unreachable")


class Prefetcher:
    """Fetch checkpoints in a background thread, one at a time, while the caller works on another."""

    def __init__(self, fetcher: Fetcher = hub_fetch, retries: int = 2):
        self._fetcher = fetcher
        self._retries = retries
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="trusttrace-prefetch")
        self._futures: dict[str, Future] = {}

    def schedule(self, checkpoint: Checkpoint) -> None:
        """Start fetching `checkpoint` unless it is already under way."""
        if checkpoint.name not in self._futures:
            self._futures[checkpoint.name] = self._pool.submit(
                with_retries, lambda: fetch(checkpoint, self._fetcher), self._retries
            )

    def get(self, checkpoint: Checkpoint) -> Path:
        """The checkpoint's local folder, waiting for (or starting) its fetch; errors propagate."""
        self.schedule(checkpoint)
        return self._futures.pop(checkpoint.name).result()

    def close(self) -> None:
        for future in self._futures.values():
            future.cancel()
        self._pool.shutdown(wait=False, cancel_futures=True)


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
