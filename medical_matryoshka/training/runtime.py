"""Where and how training runs: DDP processes under torchrun, and the precision the hardware supports."""

from __future__ import annotations

import ctypes
import os
import select
import signal
import subprocess
import sys
import threading
from pathlib import Path

import torch

from medical_matryoshka.errors import PipelineError


def world_size() -> int:
    """Processes in this training run (torchrun sets WORLD_SIZE; 1 when run plainly)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_main_process() -> bool:
    """Only global rank 0 writes outputs and logs to MLflow."""
    return int(os.environ.get("RANK", "0")) == 0


def under_torchrun() -> bool:
    return "WORLD_SIZE" in os.environ


SHELLS = frozenset({"sh", "dash", "bash", "zsh", "fish", "ksh", "mksh"})


def die_with_parent() -> None:
    """Stop this process (SIGTERM) when the process that started it dies, so a killed `dvc` leaves no trainer.

    Linux's parent-death signal covers the direct parent. DVC runs a stage as `$SHELL -c "<cmd>"`, and a
    shell that forks rather than execs (dash, Debian's /bin/sh, where SHELL is unset as in CI and containers)
    outlives a killed `dvc`: so the parent and, through any shells, the first ancestor that is not a shell
    are also watched (pidfd, no polling) from a daemon thread. Elsewhere a no-op. If one is already gone
    by the time this runs, stop now.
    """
    if not sys.platform.startswith("linux"):
        return
    parent = os.getppid()
    _parent_death_signal()
    if os.getppid() != parent:
        os.kill(os.getpid(), signal.SIGTERM)
        return
    _watch(_launching_ancestors(parent))


def _parent_death_signal() -> None:
    """Ask Linux for SIGTERM when the parent dies (safe in a preexec_fn: no threads)."""
    pr_set_pdeathsig = 1
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


def _launching_ancestors(pid: int) -> list[int]:
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


def launch_distributed(nproc: int, module: str) -> int:
    """Rerun `module` under torchrun with `nproc` processes on this machine; DDP does the rest.

    Across machines, start `torchrun --nnodes ... -m <module>` on each yourself (README "Distributed
    training"): a stage that already runs under torchrun (WORLD_SIZE set) does not relaunch.
    """
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"]
    print(f"train.nproc={nproc}: {' '.join(cmd[1:])} -m {module}", flush=True)
    return subprocess.run([*cmd, "-m", module], check=False, preexec_fn=_parent_death_signal).returncode


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AVX-512 BF16 or AMX), where autocast pays off."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def resolve_precision(precision: str, cuda: bool, cuda_bf16: bool, cpu_bf16: bool = False) -> str:
    """The precision training really uses.

    auto: bf16 mixed precision on a CUDA GPU that has bf16, and on a CPU with native bf16 (AVX-512 BF16 /
    AMX; README "Performance" measures the gain); fp32 otherwise. fp16 needs CUDA (it needs a loss scaler).
    """
    if precision == "auto":
        return "bf16" if (cuda and cuda_bf16) or (not cuda and cpu_bf16) else "fp32"
    if precision == "fp16" and not cuda:
        raise PipelineError("train.precision=fp16 needs a CUDA GPU; use bf16 or fp32 on CPU (-S train.precision=bf16)")
    if precision == "bf16" and cuda and not cuda_bf16:
        raise PipelineError("this GPU has no bf16; use -S train.precision=fp16 (or fp32)")
    return precision


def machine_precision(precision: str) -> str:
    """resolve_precision for this machine."""
    cuda = torch.cuda.is_available()
    return resolve_precision(
        precision, cuda, cuda and torch.cuda.is_bf16_supported(), not cuda and cpu_has_native_bf16()
    )
