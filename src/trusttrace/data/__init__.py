"""Labelled trust datasets: the study's five, truer constructions from their sources, and user files.

    load_dataset("stereoset", data_dir="shared/datasets")     # a built-in name
    load_dataset("my_statements.csv")                          # statement,label[,group]
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from trusttrace.data.shortcuts import first_word_baseline
from trusttrace.data.builtin import builtin_cards, load_builtin
from trusttrace.data.cards import CARDS
from trusttrace.data.dataset import DatasetCard, TrustDataset
from trusttrace.data.files import SUFFIXES, load_file
from trusttrace.errors import DatasetError

SOURCES = ("auto", "local", "hub")

__all__ = ["DatasetCard", "TrustDataset", "builtin_cards", "first_word_baseline", "load_dataset"]


def load_dataset(
    name_or_path: str | Path,
    *,
    data_dir: str | Path | None = None,
    source: Literal["auto", "local", "hub"] = "auto",
    clean: bool = False,
) -> TrustDataset:
    """A built-in dataset by name, or a user's .csv/.jsonl/.parquet file with columns statement,label[,group].

    Built-ins are read from `data_dir` (or $TRUSTTRACE_DATA): the folder with the study CSVs or
    its parent. `source="auto"` falls back to the Hugging Face sources when the files are absent;
    "local" never goes online; "hub" always does. `clean=True` applies the documented cleanups
    (toxigen's '_x000D_' become newlines) and records them on the card.
    """
    if source not in SOURCES:
        raise DatasetError(f"source {source!r} is not one of {', '.join(SOURCES)}")
    if isinstance(name_or_path, str) and name_or_path in CARDS:
        return load_builtin(name_or_path, data_dir=data_dir, source=source, clean=clean)
    path = Path(name_or_path).expanduser()
    if isinstance(name_or_path, Path) or path.suffix.lower() in SUFFIXES or path.exists():
        if source == "hub":
            raise DatasetError(f"{path}: source='hub' applies to built-in names only, not to files")
        return load_file(path)
    known = ", ".join(CARDS)
    raise DatasetError(f"unknown dataset {str(name_or_path)!r}; known: {known}; or give a .csv/.jsonl/.parquet path")
