"""Helpers shared by the benchmark scripts: the command line that produced a figure, medians, peak memory."""

from __future__ import annotations

import json
import os
import platform
import shlex
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import yaml


def banner(argv: list[str] | None = None) -> None:
    """Print the command that produced the figures below and the machine it ran on."""
    argv = sys.argv if argv is None else argv
    print(f"$ python -m benchmarks.{Path(argv[0]).stem} {shlex.join(argv[1:])}".rstrip())
    cpu = platform.processor() or "unknown CPU"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        names = [line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines() if "model name" in line]
        cpu = names[0] if names else cpu
    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    print(f"machine: {os.cpu_count()} CPU cores ({cpu}), {gpu}, torch {torch.__version__}")


def median(values: list[float]) -> float:
    return statistics.median(values)


def timed(fn, repeats: int) -> tuple[list[float], object]:
    """Run `fn` `repeats` times; (seconds of each run, the last result)."""
    seconds, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        seconds.append(time.perf_counter() - start)
    return seconds, result


_PEAK = (
    "import resource, subprocess, sys; rc = subprocess.run(sys.argv[1:]).returncode; "
    "sys.stderr.write(f'\\npeak_kib={resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}\\n'); sys.exit(rc)"
)


def run_measured(cmd: list[str], cwd: Path, env: dict[str, str] | None = None) -> tuple[float, float, str]:
    """Run a command in a fresh wrapper process; (wall seconds, peak resident memory in GiB, stdout).

    The peak is ru_maxrss of the wrapper's children: the largest resident set of any process the
    command started (for `dvc repro`, the biggest stage), not their sum.
    """
    start = time.perf_counter()
    result = subprocess.run([sys.executable, "-c", _PEAK, *cmd], cwd=cwd, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if result.returncode != 0:
        tail = (result.stdout[-2000:] + result.stderr[-2000:]).strip()
        raise SystemExit(f"{shlex.join(cmd)} failed ({result.returncode}):\n{tail}")
    peak_kib = int(result.stderr.rsplit("peak_kib=", 1)[1].split()[0])
    return seconds, peak_kib / 2**20, result.stdout


def eval_setup(test_file: str | Path | None = None):
    """(model config at the length prepare chose, eval config, paths, test retrieval set) of the checkout's
    params.yaml."""
    from medical_matryoshka.core.models import with_prepared_length
    from medical_matryoshka.core.params import load_params
    from medical_matryoshka.core.sections import EvalConfig, ModelConfig, PathsConfig, read_section
    from medical_matryoshka.retrieval.scoring import load_retrieval_set

    params = load_params()
    paths = read_section(PathsConfig, params, "paths")
    rs = load_retrieval_set(test_file or paths.prepared_test)
    model = with_prepared_length(read_section(ModelConfig, params, "model"), paths)
    return model, read_section(EvalConfig, params, "eval"), paths, rs


def isolated_stage_run(tmp: Path, root: Path, params: dict, inputs: set[str]) -> tuple[Path, dict[str, str]]:
    """A folder `tmp`/ws holding root's code and dvc.yaml, and a params.yaml writing every path there except
    `inputs` (and data.path), which stay root's; and an environment sending MLflow to a throw-away store in `tmp`.

    So a benchmark runs the real stage code on the checkout's data without touching its outputs.
    """
    ws = tmp / "ws"
    for code in ("stages", "medical_matryoshka"):
        shutil.copytree(root / code, ws / code, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy2(root / "dvc.yaml", ws / "dvc.yaml")  # each stage reads the params dvc.yaml declares for it
    p = json.loads(json.dumps(params))
    for key, value in p["paths"].items():
        p["paths"][key] = str((root / value).resolve()) if key in inputs else str(ws / value)
    p["data"]["path"] = str((root / p["data"]["path"]).resolve())
    (ws / "params.yaml").write_text(yaml.safe_dump(p, sort_keys=False))
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp}/mlflow.db", "PYTHONPATH": str(ws)}
    env.pop("DVC_ROOT", None)
    return ws, env
