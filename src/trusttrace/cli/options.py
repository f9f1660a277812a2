"""Checks of command-line values that several verbs share, run before any work starts.

Each raises a package error naming the option and its value, so `main` prints one line and
exits with code 2 before a model is loaded or a workspace, vector file or table is written.
torch is imported only when a device is checked, so `--help` stays fast.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Optional

import typer

from trusttrace.cli.app import data_dir_path
from trusttrace.errors import DatasetError, LayerError, StoreError, TrustTraceError

if TYPE_CHECKING:
    from trusttrace.store import ActivationStore

DeviceOption = typer.Option(None, help="cpu, cuda, cuda:1, mps ... (default: cuda when available, else cpu).")


def check_device(device: str | None) -> str | None:
    """`--device` unchanged when torch can use it here (None: the default device), else an error."""
    from trusttrace.devices import check_device as check

    return check(device, "--device")


def check_output(path: Optional[Path], option: str, *, folder: bool) -> Optional[Path]:
    """`path` unchanged when the output can go there (a folder when `folder`, else a file), else an error.

    Checked before the work, so a long run does not end in a traceback about its output path.
    """
    if path is None:
        return None
    if folder and path.exists() and not path.is_dir():
        raise TrustTraceError(f"{option} {path}: exists and is not a folder")
    if not folder and path.is_dir():
        raise TrustTraceError(f"{option} {path}: is a folder; name the file to write")
    blocking = next((parent for parent in path.parents if parent.exists() and not parent.is_dir()), None)
    if blocking is not None:
        raise TrustTraceError(f"{option} {path}: {blocking} is a file, not a folder")
    existing = next(folder for folder in (path if folder else path.parent, *path.parents) if folder.exists())
    try:  # what the writes will need: to make folders and files there (read-only, /proc...)
        os.rmdir(tempfile.mkdtemp(prefix=".trusttrace-check-", dir=existing))
    except OSError as error:
        raise TrustTraceError(f"{option} {path}: cannot write in {existing} ({error.strerror or error})") from None
    return path


def check_data_dir(value: Optional[Path]) -> Optional[Path]:
    """The --data-dir option normalised; a folder that does not exist is an error, not an empty catalogue."""
    path = data_dir_path(value)
    if path is not None and not path.is_dir():
        problem = "a file, not a folder" if path.exists() else "no such folder"
        raise DatasetError(f"--data-dir {path} (or $TRUSTTRACE_DATA): {problem}")
    return path


def open_workspace(workspace: Path) -> ActivationStore:
    """The store of an existing workspace with activation sets; anything else is an error here
    (a mistyped path must neither become a new empty workspace nor report "0 new rows")."""
    from trusttrace.config_checks import pruned_sets
    from trusttrace.store import WORKSPACE_FILE, ActivationStore

    if workspace.exists() and not workspace.is_dir():
        raise StoreError(f"{workspace}: a file, not a workspace folder")
    if not workspace.is_dir():
        raise StoreError(f"{workspace}: no such workspace folder")
    if not (workspace / WORKSPACE_FILE).is_file():
        raise StoreError(f"{workspace}: not a trusttrace workspace (no {WORKSPACE_FILE}); give the folder `extract` or `run` wrote")
    store = ActivationStore(workspace)
    if not store.records() and not store.broken():
        if pruned_sets(workspace):
            raise StoreError(f"{workspace}: no activation sets: keep_activations: false deleted them once probed; "
                             "run the sweep again with keep_activations: true (or `trusttrace extract`) to extract them")
        raise StoreError(f"{workspace}: no activation sets yet; run `trusttrace extract` or `trusttrace run` first")
    return store


def parse_layers(text: str, option: str = "--layers", *, stored: bool = False) -> str | list[int]:
    """"all" or a comma-separated list of at least one layer index.

    Where the model is at hand (extraction) negatives count from its last block. Where the layers
    are those of a stored set or table (`stored`), a layer is named by its block number, as the
    config's stored layers are: a negative one is refused rather than read against another count.
    """
    if text.strip() == "all":
        return "all"
    try:
        layers = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise LayerError(f"{option} {text!r}: expected 'all' or comma-separated integers") from None
    if not layers:
        raise LayerError(f"{option} {text!r}: name at least one layer, or 'all'")
    if stored and any(layer < 0 for layer in layers):
        raise LayerError(f"{option} {text!r}: name stored layers by block number, from 0 "
                         "(negative numbers count from the last block only when extracting)")
    return layers


def share(value: float) -> float:
    """A typer callback: the value when it is a share strictly between 0 and 1."""
    if not 0 < value < 1:
        raise typer.BadParameter(f"{value} is not strictly between 0 and 1")
    return value


def positive(value: float) -> float:
    """A typer callback: the value when it is a finite number above 0."""
    if not 0 < value < float("inf"):
        raise typer.BadParameter(f"{value} is not a finite number above 0")
    return value
