"""`trusttrace` on the command line: the console script, and `python -m trusttrace`.

The CLI's modules load typer, pandas and more before any command runs; Ctrl-C meanwhile ends
quietly with exit code 130, as it does once a command runs, instead of a traceback.
"""

from __future__ import annotations

import sys

INTERRUPTED = 130  # 128 + SIGINT, the shell's code for a command stopped by Ctrl-C


def main() -> None:
    """Load the CLI and run it."""
    try:
        from trusttrace.cli import main as run
    except KeyboardInterrupt:
        sys.exit(INTERRUPTED)
    run()


if __name__ == "__main__":
    main()
