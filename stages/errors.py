"""One error type for bad input, and the entry point wrapper that turns it into one clear line."""

from __future__ import annotations

import sys
from collections.abc import Callable


class PipelineError(Exception):
    """Bad input or environment: the message says what is wrong and how to fix it."""


def run_stage(main: Callable[[], None]) -> None:
    """Run a stage's main(); a PipelineError becomes one line on stderr and exit code 2."""
    try:
        main()
    except PipelineError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
