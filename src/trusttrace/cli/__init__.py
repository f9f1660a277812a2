"""The `trusttrace` command: a thin layer over the library, one module per group of verbs.

Verb modules import the heavy libraries (torch, transformers) inside their commands, so
`trusttrace --help` and argument errors answer at once.
"""

from __future__ import annotations

import sys
import warnings

import typer

from trusttrace.cli.app import app
from trusttrace.errors import TrustTraceError

from trusttrace.cli import analyze, catalog, demo, evaluate, extract, report, run, steering  # noqa: F401,E402  (register verbs)

EXAMPLES = """Examples (each command's --help shows more):

trusttrace demo --quick

trusttrace extract -m EleutherAI/pythia-70m -r step1000 -d stereoset -o ws/

trusttrace probe ws/

trusttrace report ws/

trusttrace run configs/pythia-160m.yaml"""


def _show_version(value: bool) -> None:
    """Print trusttrace's version and stop, before any command runs (the eager --version flag)."""
    if value:
        from trusttrace.provenance import trusttrace_version

        typer.echo(f"trusttrace {trusttrace_version()}")
        raise typer.Exit()


@app.callback(epilog=EXAMPLES)
def _root(
    version: bool = typer.Option(False, "--version", is_eager=True, callback=_show_version, help="Print trusttrace's version and exit."),
) -> None:
    """Options of `trusttrace` itself; the help text is the app's."""


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """A warning on the command line: one `warning: ...` line, without the source file and code."""
    print(f"warning: {message}", file=file or sys.stderr)


def main() -> None:
    """Entry point: usage errors and exit codes are Typer's; a package error is one line and exit 2."""
    warnings.showwarning = _show_warning
    try:
        app()
    except TrustTraceError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
