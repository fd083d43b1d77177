"""One error type for bad input, and the entry-point wrapper that turns it into one clear line."""

from __future__ import annotations

import signal
import sys
from collections.abc import Callable
from pathlib import Path


class PipelineError(Exception):
    """Bad input or environment: the message says what is wrong and how to fix it."""


class Interrupted(BaseException):
    """SIGTERM (or SIGINT) stopped the process: cleanup runs, the stage's MLflow run ends KILLED."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _interrupt(signum: int, _frame) -> None:
    # The first signal wins: a second one (another Ctrl-C, a repeated kill, the parent-death signal after a
    # signal to the whole group) must not cut the cleanup short and leave the run RUNNING. `kill -9` still stops it.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    raise Interrupted(signum)


def first_line(err: BaseException) -> str:
    """The first non-empty line of an exception's message (its type name if it has none)."""
    lines = [line for line in str(err).splitlines() if line.strip()]
    return lines[0].strip() if lines else type(err).__name__


def require_input(path: str | Path, stage: str, what: str = "") -> Path:
    """`path` if it exists, else the one-line error naming the stage that produces it."""
    path = Path(path)
    if not path.exists():
        raise PipelineError(f"{what}{path} is missing; run the {stage} stage first (dvc repro {stage})")
    return path


def run_main(main: Callable[[], None]) -> None:
    """Run a stage's or command's main(): a PipelineError becomes one line on stderr and exit code 2;
    SIGTERM and SIGINT unwind the stack (runs marked KILLED, partial outputs removed), exit 128 + signal."""
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, _interrupt)
    try:
        main()
    except PipelineError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    except Interrupted as err:
        hint = "rerun `dvc repro` to continue (training resumes from its last checkpoint)"
        print(f"error: stopped by {err}; {hint}", file=sys.stderr)
        sys.exit(128 + err.signum)
