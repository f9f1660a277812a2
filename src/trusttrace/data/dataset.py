"""TrustDataset and DatasetCard: labelled statements plus an honest account of what the labels mean.

A dataset is a list of statements, binary labels, optional group ids (rows that must stay on
the same side of a train/test split) and a card. Its content hash identifies the exact rows, so
every artefact built from it can say which data it came from.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd

from trusttrace.errors import DatasetError, ProbeError
from trusttrace.splits import check_groups, check_labels, row_indices

Dimension = Literal["truthfulness", "toxicity", "privacy", "fairness", "robustness", "user"]


@dataclass(frozen=True)
class DatasetCard:
    """What a dataset is: where it comes from, what label 1 and label 0 really mean, its quirks."""

    name: str
    dimension: Dimension
    label_1: str
    label_0: str
    source: str
    licence: str
    quirks: tuple[str, ...] = ()
    grouping: str | None = None
    citation: str = ""
    url: str = ""
    cleanups: tuple[str, ...] = ()

    def describe(self) -> str:
        """The card as indented plain text, one field per line (for the CLI and reports)."""
        lines = [
            f"{self.name}  [{self.dimension}]",
            f"  label 1:  {self.label_1}",
            f"  label 0:  {self.label_0}",
            f"  source:   {self.source}",
            f"  licence:  {self.licence}",
            f"  grouping: {self.grouping or 'none (rows are independent)'}",
        ]
        lines += [f"  quirk:    {quirk}" for quirk in self.quirks]
        lines += [f"  cleanup:  {cleanup}" for cleanup in self.cleanups]
        if self.citation:
            lines.append(f"  cite:     {self.citation}")
        if self.url:
            lines.append(f"  url:      {self.url}")
        return "\n".join(lines)


def first_non_string(statements: Sequence[object]) -> int | None:
    """The position of the first statement that is not a string (None, a number...), or None."""
    return next((i for i, statement in enumerate(statements) if not isinstance(statement, str)), None)


@dataclass
class TrustDataset:
    """Labelled statements for one trust dimension; labels are int64 0/1, groups one id per row or None."""

    name: str
    statements: list[str]
    labels: np.ndarray
    groups: np.ndarray | None
    card: DatasetCard
    source: str

    def __post_init__(self) -> None:
        self.statements = list(self.statements)
        n = len(self.statements)
        odd = first_non_string(self.statements)
        if odd is not None:
            raise DatasetError(f"{self.name}: statement {odd} is {self.statements[odd]!r}, not a string")
        try:  # checked before any cast, which would read 0.7 as 0
            self.labels = check_labels(self.labels)
            if self.groups is not None:
                self.groups = check_groups(self.groups, n)
        except ProbeError as error:
            raise DatasetError(f"{self.name}: {error}") from None
        if self.labels.shape != (n,):
            raise DatasetError(f"{self.name}: {n} statements but labels of shape {self.labels.shape}")

    def __len__(self) -> int:
        return len(self.statements)

    def __repr__(self) -> str:
        n_groups = "none" if self.groups is None else len(pd.unique(self.groups))
        return (
            f"TrustDataset(name={self.name!r}, rows={len(self)}, label_1={int(self.labels.sum())}, "
            f"groups={n_groups}, source={self.source!r})"
        )

    @property
    def content_hash(self) -> str:
        """sha256 of a canonical JSON encoding of statements, labels and groups (stable across runs)."""
        payload = {
            "statements": self.statements,
            "labels": [int(label) for label in self.labels],
            "groups": None if self.groups is None else [_canonical(group) for group in self.groups],
        }
        text = json.dumps(payload, ensure_ascii=False, separators=(",", ":"))
        return hashlib.sha256(text.encode("utf-8")).hexdigest()

    def subset(self, rows: Sequence[int]) -> TrustDataset:
        """The dataset restricted to `rows` (0-based positions in the given order, or a boolean mask), same card."""
        index = row_indices(rows, len(self), f"{self.name}: rows", DatasetError)
        return TrustDataset(
            name=self.name,
            statements=[self.statements[i] for i in index],
            labels=self.labels[index],
            groups=None if self.groups is None else self.groups[index],
            card=self.card,
            source=self.source,
        )

    def to_frame(self) -> pd.DataFrame:
        """A DataFrame with columns statement, label, group (group is None when the dataset has none)."""
        groups = [None] * len(self) if self.groups is None else list(self.groups)
        return pd.DataFrame({"statement": self.statements, "label": self.labels, "group": groups})


def text_key(statement: str) -> str:
    """The statement with its whitespace normalised: copies that differ only in spacing share a key."""
    return " ".join(statement.split())


def _canonical(group: Hashable) -> int | float | str | bool:
    """A JSON-stable form of one group id: numpy scalars become Python ones, other objects their str."""
    if isinstance(group, np.generic):
        group = group.item()
    if isinstance(group, (bool, int, float, str)):
        return group
    return str(group)
