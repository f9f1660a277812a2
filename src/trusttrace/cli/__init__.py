"""The `trusttrace` command: a thin layer over the library, one module per group of verbs.

Verb modules import the heavy libraries (torch, transformers) inside their commands, so
`trusttrace --help` and argument errors answer at once.
"""

from __future__ import annotations

import sys

from trusttrace.cli.app import app
from trusttrace.errors import TrustTraceError

from trusttrace.cli import analyze, catalog, demo, extract, report, run, steering  # noqa: F401,E402  (register verbs)


def main() -> None:
    """Entry point: usage errors and exit codes are Typer's; a package error is one line and exit 2."""
    try:
        app()
    except TrustTraceError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
