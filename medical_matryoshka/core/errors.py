"""One error type for bad input, and the entry-point wrapper that turns it into one clear line."""

from __future__ import annotations

import contextlib
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


def quiet_progress_bars() -> None:
    """No redrawn progress bars when stderr is not a terminal (a log file, CI, `dvc queue` logs): each redraw
    would land in the log glued to the next line. Lines the stages print are unaffected; TQDM_DISABLE=0 keeps
    the bars."""
    import os

    if not sys.stderr.isatty():
        os.environ.setdefault("TQDM_DISABLE", "1")
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # transformers' bars (loading weights) too
        os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")


def _stopped_while_starting(signum: int, _frame) -> None:
    import os

    print(f"error: stopped by {signal.Signals(signum).name} while starting, before any work; rerun `dvc repro`",
          file=sys.stderr)  # fmt: skip
    os._exit(128 + signum)


# A stage (`python -m stages.<name>`) spends its first seconds importing torch and the rest, before run_main
# installs its handlers; a Ctrl-C then (`dvc queue kill` of a task that has just started) would end in a
# KeyboardInterrupt traceback. Every stage imports this module before those libraries, so from here on it is
# one line: nothing is written or tracked yet, so there is nothing to clean up.
# The progress-bar switches are read when the libraries are imported, so they are set here too.
if sys.orig_argv[1:2] == ["-m"] and sys.orig_argv[2:3] and sys.orig_argv[2].startswith("stages."):
    signal.signal(signal.SIGINT, _stopped_while_starting)
    signal.signal(signal.SIGTERM, _stopped_while_starting)
    quiet_progress_bars()


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


_ON_FAILURE: list[Callable[[str, str], None]] = []


def on_failure(hook: Callable[[str, str], None]) -> None:
    """Call hook(status, error line) when main() stops with an error or a signal (a stage's MLflow run that
    was opened at its start ends FAILED or KILLED with the line, wherever the stage stopped)."""
    _ON_FAILURE.append(hook)


def _failed(status: str, line: str) -> None:
    for hook in _ON_FAILURE:
        with contextlib.suppress(Exception):  # recording a failure must not hide it
            hook(status, line)


def run_main(main: Callable[[], None]) -> None:
    """Run a stage's or command's main(): a PipelineError becomes one line on stderr and exit code 2;
    SIGTERM and SIGINT unwind the stack (runs marked KILLED, partial outputs removed), exit 128 + signal;
    a full disk is a PipelineError too (see disk_full)."""
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, _interrupt)
    quiet_progress_bars()
    try:
        try:
            main()
        except PipelineError:
            raise
        except Exception as err:
            full = disk_full(err)
            if full is None:
                raise
            raise full from err
    except PipelineError as err:
        print(f"error: {err}", file=sys.stderr)
        _failed("FAILED", str(err))
        sys.exit(2)
    except Interrupted as err:
        hint = "rerun `dvc repro` to continue (training resumes from its last checkpoint)"
        print(f"error: stopped by {err}; {hint}", file=sys.stderr)
        _failed("KILLED", f"stopped by {err}")
        sys.exit(128 + err.signum)
    except Exception as err:
        _failed("FAILED", first_line(err))
        raise


def is_disk_full(err: BaseException) -> bool:
    """ENOSPC, or a library's error that wraps it in its message (safetensors' SafetensorError)."""
    import errno

    return getattr(err, "errno", None) == errno.ENOSPC or "No space left on device" in str(err)


def free_bytes(path: str | Path) -> int:
    """Free space on the device that holds `path` (or would: its nearest existing ancestor)."""
    import shutil

    probe = Path(path)
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    return shutil.disk_usage(probe).free


def no_space(folder: str | Path, need: int | None = None) -> PipelineError:
    """The one-line error for a write that does not fit: the folder, its free space and, where known, what the
    write needs."""
    needs = f"; it needs about {_mib(need)} there" if need else ""
    return PipelineError(
        f"no space left on the device holding {folder} ({_mib(free_bytes(folder))} free{needs}); free some space "
        "(or point paths.* of conf/config.yaml at a larger disk) and rerun: nothing half-written was kept"
    )


def disk_full(err: BaseException, folder: str | Path | None = None, need: int | None = None) -> PipelineError | None:
    """no_space's line for a write that ran out of space (None if `err` is something else)."""
    if not is_disk_full(err):
        return None
    return no_space(folder or getattr(err, "filename", None) or ".", need)


def _mib(size: int) -> str:
    return f"{size / 2**20:,.0f} MiB"
