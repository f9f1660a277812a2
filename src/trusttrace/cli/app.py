"""The Typer application every verb module registers on, and the shared CLI helpers.

Verb modules only parse arguments and call the library; the conversion of package errors
into a one-line message and exit code 2 happens once, in `main`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

app = typer.Typer(
    name="trusttrace",
    help="Trace how trustworthiness is encoded across a language model's pre-training checkpoints.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

DataDirOption = typer.Option(
    None,
    "--data-dir",
    envvar="TRUSTTRACE_DATA",
    help="Folder holding the study's CSVs (e.g. shared/datasets/tracingllm). Default: $TRUSTTRACE_DATA.",
)


def data_dir_path(value: Optional[Path]) -> Optional[Path]:
    """Normalise the --data-dir option (None means: use the environment or the Hub)."""
    return Path(value).expanduser() if value is not None else None
