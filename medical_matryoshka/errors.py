"""One error type for bad input, and the entry-point wrapper that turns it into one clear line."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path


class PipelineError(Exception):
    """Bad input or environment: the message says what is wrong and how to fix it."""


def require_input(path: str | Path, stage: str, what: str = "") -> Path:
    """`path` if it exists, else the one-line error naming the stage that produces it."""
    path = Path(path)
    if not path.exists():
        raise PipelineError(f"{what}{path} is missing; run the {stage} stage first (dvc repro {stage})")
    return path


def run_main(main: Callable[[], None]) -> None:
    """Run a stage's or command's main(); a PipelineError becomes one line on stderr and exit code 2."""
    try:
        main()
    except PipelineError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
