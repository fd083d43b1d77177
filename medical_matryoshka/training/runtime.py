"""Where and how training runs: DDP processes under torchrun, and the precision the hardware supports."""

from __future__ import annotations

import os
import subprocess
import sys

import torch

from medical_matryoshka.core.errors import PipelineError
from medical_matryoshka.core.lifetime import parent_death_signal


def world_size() -> int:
    """Processes in this training run (torchrun sets WORLD_SIZE; 1 when run plainly)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_main_process() -> bool:
    """Only global rank 0 writes outputs and logs to MLflow."""
    return int(os.environ.get("RANK", "0")) == 0


def under_torchrun() -> bool:
    return "WORLD_SIZE" in os.environ


def launch_distributed(nproc: int, module: str) -> int:
    """Rerun `module` under torchrun with `nproc` processes on this machine; DDP does the rest.

    Across machines, start `torchrun --nnodes ... -m <module>` on each yourself (docs/performance.md,
    Distributed training): a stage that already runs under torchrun (WORLD_SIZE set) does not relaunch.
    """
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"]
    print(f"train.nproc={nproc}: {' '.join(cmd[1:])} -m {module}", flush=True)
    return subprocess.run([*cmd, "-m", module], check=False, preexec_fn=parent_death_signal).returncode


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AVX-512 BF16 or AMX), where autocast pays off."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def resolve_precision(precision: str, cuda: bool, cuda_bf16: bool, cpu_bf16: bool = False) -> str:
    """The precision training really uses.

    auto: bf16 mixed precision on a CUDA GPU that has bf16, and on a CPU with native bf16 (AVX-512 BF16 /
    AMX; docs/performance.md measures the gain); fp32 otherwise. fp16 needs CUDA (it needs a loss scaler).
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
