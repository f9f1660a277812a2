"""Reading `statement,label[,group]` tables from CSV, JSONL and Parquet files, with row-level validation.

Every problem is reported as a DatasetError that names the file and the place: "data row N"
(1-based, header excluded) for CSV and Parquet, with the file line for CSV, and "line N"
(1-based file line) for JSONL.
"""

from __future__ import annotations

import csv
import json
import math
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from trusttrace.data.cards import CARDS
from trusttrace.data.dataset import DatasetCard, TrustDataset
from trusttrace.errors import DatasetError

SUFFIXES = (".csv", ".jsonl", ".parquet")
_LABEL_TEXT = {"0": 0, "1": 1, "0.0": 0, "1.0": 1, "false": 0, "true": 1}
INT64_MIN, INT64_MAX = int(np.iinfo(np.int64).min), int(np.iinfo(np.int64).max)


@dataclass(frozen=True)
class Table:
    """Rows read from a file, and how to point a user at each row when the file format has lines."""

    frame: pd.DataFrame
    places: list[str] | None = None

    def where(self, row: int) -> str:
        """'data row N (line M)' for CSV, 'line M' for JSONL, 'data row N' otherwise (N, M 1-based)."""
        return self.places[row] if self.places is not None else f"data row {row + 1}"


@dataclass(frozen=True)
class Columns:
    """Validated columns of a table: text statements, 0/1 labels, optional group ids."""

    statements: list[str]
    labels: np.ndarray
    groups: np.ndarray | None


def read_rows(path: Path) -> Table:
    """Read a .csv, .jsonl or .parquet file into a Table, or raise DatasetError saying why not."""
    suffix = path.suffix.lower()
    if path.is_dir():
        raise DatasetError(f"{path}: a folder, not a dataset file (.csv, .jsonl or .parquet)")
    if suffix not in SUFFIXES:
        raise DatasetError(f"{path}: unsupported file type '{path.suffix}'; use .csv, .jsonl or .parquet")
    if not path.is_file():
        raise DatasetError(f"{path}: file not found")
    try:
        if suffix == ".csv":
            return _read_csv(path)
        if suffix == ".parquet":
            return Table(pd.read_parquet(path))
        return _read_jsonl(path)
    except UnicodeDecodeError as error:
        if suffix != ".parquet":
            text_lines(path)  # raises, naming the line
        raise DatasetError(f"{path}: cannot read the file ({error})") from None
    except (OSError, ValueError, csv.Error) as error:  # OS, decoding, CSV and pyarrow (ArrowInvalid) failures
        lines = str(error).strip().splitlines()
        raise DatasetError(f"{path}: cannot read the file ({lines[0] if lines else type(error).__name__})") from error


def text_lines(path: Path) -> list[tuple[int, str]]:
    """A UTF-8 text file's lines with their 1-based numbers, split as text mode and the csv
    module split them (\n, \r\n or a lone \r); a file that cannot be read, or a line that is
    not UTF-8, is a DatasetError naming it (a decoder's own offset counts within its read
    buffer, not the file)."""
    try:
        raw = path.read_bytes()
    except OSError as error:
        raise DatasetError(f"{path}: cannot read the file ({error.strerror or error})") from None
    lines = []
    for number, line in enumerate(raw.splitlines(), start=1):
        try:
            lines.append((number, line.decode("utf-8")))
        except UnicodeDecodeError as error:
            raise DatasetError(
                f"{path}: line {number} is not UTF-8 text ({error.reason} at byte {error.start + 1} of the line); "
                "save the file as UTF-8"
            ) from None
    return lines


def _read_csv(path: Path) -> Table:
    """A CSV with a header row, every field kept as text; a row with the wrong field count is an error."""
    with path.open(encoding="utf-8-sig", newline="") as handle:
        reader = csv.reader(handle)
        header = next((row for row in reader if not _blank(row)), None)
        if header is None:
            raise DatasetError(f"{path}: empty file, no header row")
        if len(set(header)) != len(header):
            raise DatasetError(f"{path}: repeated column names in the header {header}")
        rows, places = [], []
        end = reader.line_num
        for row in reader:
            start, end = end + 1, reader.line_num  # a quoted field may span several lines
            if _blank(row):
                continue
            lines = f"line {start}" if start == end else f"lines {start}-{end}"
            place = f"data row {len(rows) + 1} ({lines})"
            if len(row) != len(header):
                raise DatasetError(f"{path}: {place} has {len(row)} fields, the header has {len(header)}")
            rows.append(row)
            places.append(place)
    return Table(pd.DataFrame(rows, columns=header), places)


def _blank(row: list[str]) -> bool:
    """An empty or whitespace-only line (skipped wherever it is); a line of empty fields is a row."""
    return not row or (len(row) == 1 and not row[0].strip())


def _read_jsonl(path: Path) -> Table:
    """One JSON object per line; blank lines are skipped, anything else that is not an object is an error."""
    records, places = [], []
    with path.open(encoding="utf-8-sig") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise DatasetError(f"{path}: line {number} is not valid JSON ({error.msg})") from error
            if not isinstance(record, dict):
                raise DatasetError(f"{path}: line {number} is not a JSON object")
            records.append(record)
            places.append(f"line {number}")
    return Table(pd.DataFrame.from_records(records), places)


def validate(table: Table, path: Path | str) -> Columns:
    """Check the columns and every row; return statements, int64 labels and groups (None without a group column)."""
    frame = table.frame
    for column in ("statement", "label"):
        if column not in frame.columns:
            found = ", ".join(map(str, frame.columns)) or "none"
            raise DatasetError(f"{path}: missing column '{column}' (found: {found})")
    if len(frame) == 0:
        raise DatasetError(f"{path}: no data rows")
    statements = [_statement(value, path, table.where(row)) for row, value in enumerate(frame["statement"])]
    labels = np.array([_label(value, path, table.where(row)) for row, value in enumerate(frame["label"])], dtype=np.int64)
    groups = None
    _warn_of_unread_groups(frame, path)
    if "group" in frame.columns:
        values = [_group(value, path, table.where(row)) for row, value in enumerate(frame["group"])]
        groups = pd.Series(_one_kind(values, path, table)).to_numpy()
    classes = np.unique(labels)
    if classes.size < 2:
        raise DatasetError(f"{path}: every row has label {int(classes[0])}; a probe needs both classes (0 and 1)")
    return Columns(statements, labels, groups)


def _statement(value: object, path: Path | str, where: str) -> str:
    if _missing(value):
        raise DatasetError(f"{path}: {where}: missing statement")
    if not isinstance(value, str):
        raise DatasetError(f"{path}: {where}: statement {value!r} is not text")
    if not value.strip():
        raise DatasetError(f"{path}: {where}: empty statement")
    return value


def _label(value: object, path: Path | str, where: str) -> int:
    """Accept 0/1 as ints, floats 0.0/1.0, booleans or the strings '0', '1', '0.0', '1.0', 'true', 'false'."""
    if _missing(value) or (isinstance(value, str) and not value.strip()):
        raise DatasetError(f"{path}: {where}: missing label")
    parsed = None
    if isinstance(value, (bool, np.bool_)):
        parsed = int(value)
    elif isinstance(value, (int, np.integer)):
        parsed = int(value) if value in (0, 1) else None
    elif isinstance(value, (float, np.floating)):
        parsed = int(value) if value in (0.0, 1.0) else None
    elif isinstance(value, str):
        parsed = _LABEL_TEXT.get(value.strip().lower())
    if parsed is None:
        raise DatasetError(f"{path}: {where}: label {value!r} is not 0 or 1")
    return parsed


def _group(value: object, path: Path | str, where: str) -> object:
    """One group id: text, a boolean, a whole number that fits 64 bits, or a finite number."""
    if _missing(value) or (isinstance(value, str) and not value.strip()):
        raise DatasetError(f"{path}: {where}: missing group")
    value = value.item() if isinstance(value, np.generic) else value
    if not isinstance(value, (str, int, float)):  # bool is an int
        raise DatasetError(f"{path}: {where}: group {value!r} is not one text or number")
    if isinstance(value, int) and not INT64_MIN <= value <= INT64_MAX:
        raise DatasetError(f"{path}: {where}: group {value} does not fit a 64-bit integer; write it as text")
    if isinstance(value, float) and not math.isfinite(value):
        raise DatasetError(f"{path}: {where}: group {value!r} is not a finite number")
    return value


def _one_kind(groups: list[object], path: Path | str, table: Table) -> list[object]:
    """`groups` when they are all text, all booleans or all numbers; else a DatasetError naming the
    first that differs from the first row's: 1 and "1" (or true and 1) would be one group in a
    split and two in the content hash."""
    kinds = [_kind(group) for group in groups]
    other = next((row for row, kind in enumerate(kinds) if kind != kinds[0]), None)
    if other is None:
        return groups
    raise DatasetError(
        f"{path}: {table.where(other)}: group {groups[other]!r} is {kinds[other]}, but {table.where(0)}'s "
        f"group {groups[0]!r} is {kinds[0]}; make every group text or every group a number"
    )


def _kind(group: object) -> str:
    return "text" if isinstance(group, str) else "a boolean" if isinstance(group, bool) else "a number"


def _warn_of_unread_groups(frame: pd.DataFrame, path: Path | str) -> None:
    """Warn when the table has no `group` column but one spelled otherwise (`Group`, `groups`) or a
    Parquet index named so: it is not read, and a grouped split then falls back to a random one."""
    if "group" in frame.columns:
        return
    names = [str(column) for column in frame.columns] + ([str(frame.index.name)] if frame.index.name is not None else [])
    near = [name for name in names if name.strip().lower() in ("group", "groups", "group_id")]
    if near:
        warnings.warn(
            f"{path}: {near[0]!r} is not read as the group column (only 'group' is); rename it, or the rows "
            "have no groups and a grouped split falls back to a random one",
            stacklevel=4,
        )


def _missing(value: object) -> bool:
    """None, NaN, or pandas' missing markers (pd.NA in nullable columns, NaT)."""
    if value is None or value is pd.NA or value is pd.NaT:
        return True
    return isinstance(value, (float, np.floating)) and math.isnan(value)


def load_file(path: Path) -> TrustDataset:
    """A user's `statement,label[,group]` file as a TrustDataset named after the file stem.

    Without a group column, repeated statements are reported once: a random split can put
    their copies on both sides, so a probe would be tested on rows it trained on.
    """
    columns = validate(read_rows(path), path)
    repeats = len(columns.statements) - len(set(columns.statements))
    if columns.groups is None and repeats:
        warnings.warn(
            f"{path}: {repeats} row(s) repeat an earlier statement and the file has no group column; "
            "add one (e.g. the statement itself) so copies stay on one side of a split",
            stacklevel=3,
        )
    if path.stem in CARDS:
        warnings.warn(
            f"{path}: a user file named like the built-in dataset {path.stem!r}: its tables and report share that "
            "name, and where both are in one workspace the report shows them as two versions of one dataset; "
            "rename the file to keep them apart",
            stacklevel=3,
        )
    card = DatasetCard(
        name=path.stem,
        dimension="user",
        label_1="label 1 as given in the file",
        label_0="label 0 as given in the file",
        source=str(path),
        licence="unknown (user file)",
        grouping="the file's group column" if columns.groups is not None else None,
    )
    return TrustDataset(path.stem, columns.statements, columns.labels, columns.groups, card, str(path))
