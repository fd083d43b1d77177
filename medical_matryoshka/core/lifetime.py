"""A stage's lifetime tied to the `dvc` that started it: a killed `dvc repro` leaves no stage behind, still
computing and writing outputs that no dvc.lock will record."""

from __future__ import annotations

import ctypes
import os
import select
import signal
import sys
import threading
from pathlib import Path

SHELLS = frozenset({"sh", "dash", "bash", "zsh", "fish", "ksh", "mksh"})


def die_with_parent() -> None:
    """Stop this process (SIGTERM) when the process that started it dies, so a killed `dvc` leaves no stage running.

    Linux's parent-death signal covers the direct parent. DVC runs a stage as `$SHELL -c "<cmd>"`, and a
    shell that forks rather than execs (dash, Debian's /bin/sh, where SHELL is unset as in CI and containers)
    outlives a killed `dvc`: so the parent and, through any shells, the first ancestor that is not a shell
    are also watched (pidfd, no polling) from a daemon thread. Elsewhere a no-op. If one is already gone
    by the time this runs, stop now.
    """
    if not sys.platform.startswith("linux"):
        return
    parent = os.getppid()
    parent_death_signal()
    if os.getppid() != parent:
        os.kill(os.getpid(), signal.SIGTERM)
        return
    _watch(launching_ancestors(parent))


def parent_death_signal() -> None:
    """Ask Linux for SIGTERM when the parent dies (safe in a preexec_fn: no threads)."""
    pr_set_pdeathsig = 1
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


def stoppable_child() -> None:
    """preexec_fn for a child its parent stops with SIGINT or SIGTERM: both at their default (an ignored
    signal survives exec, and a parent started with SIGINT ignored, as `cmd &` in a script is, would pass that
    on), and SIGTERM when the parent dies."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    parent_death_signal()


def launching_ancestors(pid: int) -> list[int]:
    """`pid`, and its ancestors up to and including the first one that is not a shell."""
    chain = [pid]
    while pid > 1:
        try:
            if Path(f"/proc/{pid}/comm").read_text().strip() not in SHELLS:
                break
            # /proc/<pid>/stat: "pid (comm) state ppid ...", comm may hold spaces and parentheses
            pid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            break
        if pid > 1:
            chain.append(pid)
    return chain


def _watch(pids: list[int]) -> None:
    """SIGTERM this process as soon as any of `pids` exits."""
    fds = []
    for pid in pids:
        try:
            fds.append(os.pidfd_open(pid))
        except ProcessLookupError:  # already gone
            os.kill(os.getpid(), signal.SIGTERM)
            return
        except OSError:  # kernel without pidfd (< 5.3): the parent-death signal alone
            return

    def wait() -> None:
        poller = select.poll()
        for fd in fds:
            poller.register(fd, select.POLLIN)
        poller.poll()
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=wait, name="die-with-launcher", daemon=True).start()


class ActiveClock:
    """Seconds since start that this process was running: a stop (SIGSTOP, Ctrl-Z) is left out, so a run held
    for an hour does not report an hour of training. A daemon thread ticks every `tick` seconds; a tick that
    comes more than `gap` seconds late was a stop (threads do not run while the process is stopped)."""

    def __init__(self, tick: float = 0.25, gap: float = 2.0) -> None:
        import time

        self._now = time.monotonic
        self.tick, self.gap = tick, gap
        self.start = self._now()
        self.paused = 0.0
        self._stop = threading.Event()
        threading.Thread(target=self._ticks, name="active-clock", daemon=True).start()

    def _ticks(self) -> None:
        before = self._now()
        while not self._stop.wait(self.tick):
            now = self._now()
            late = now - before - self.tick
            if late > self.gap:
                self.paused += late
            before = now

    def seconds(self) -> float:
        """Running seconds so far (stops shorter than `gap` are counted as running)."""
        return self._now() - self.start - self.paused

    def stop(self) -> float:
        self._stop.set()
        return self.seconds()
