"""Pipeline overhead: `dvc repro` with nothing changed, and the peak memory and time of every stage.

    python -m benchmarks.pipeline_overhead                 # no-op repro x5; prepare, baseline, mine, evaluate
    python -m benchmarks.pipeline_overhead --train-epochs 1   # also the train stage (1 epoch: same peak memory)

The stages run from a temporary folder (their outputs go there; inputs are this checkout's data), one
fresh process each, with MLflow going to a throw-away store. The no-op repro runs in this checkout, which
must be up to date (`dvc repro` first).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

import yaml

from benchmarks.common import banner, median, run_measured

ROOT = Path.cwd()  # the checkout the benchmark runs in (its params.yaml, data and stages/)

STAGES = ("prepare", "baseline", "mine", "train", "evaluate")


def noop_repro(repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        seconds, _, out = run_measured(["dvc", "repro"], ROOT)
        if "Running stage" in out:
            raise SystemExit("error: `dvc repro` ran a stage: this checkout was not up to date; rerun the benchmark")
        times.append(seconds)
    return times


def stage_workspace(root: Path, params: dict, train_epochs: float | None) -> Path:
    ws = root / "ws"
    shutil.copytree(ROOT / "stages", ws / "stages")
    p = json.loads(json.dumps(params))
    inputs = {"raw", "card"} | ({"model"} if train_epochs is None else set())
    for key, value in p["paths"].items():
        p["paths"][key] = str((ROOT / value).resolve()) if key in inputs else str(ws / value)
    p["data"]["path"] = str((ROOT / p["data"]["path"]).resolve())
    if train_epochs is not None:
        p["epochs"] = train_epochs
    (ws / "params.yaml").write_text(yaml.safe_dump(p, sort_keys=False))
    return ws


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5, help="no-op `dvc repro` runs (median reported)")
    parser.add_argument("--train-epochs", type=float, default=None, help="also run train, for this many epochs")
    args = parser.parse_args()
    banner()

    times = noop_repro(args.repeats)
    print(
        f"dvc repro, nothing changed: median {median(times):.2f} s  runs {[round(t, 2) for t in times]} (target < 5 s)",
        flush=True,
    )

    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    stages = [s for s in STAGES if s != "train" or args.train_epochs is not None]
    print(f"{'stage':10} {'seconds':>8} {'peak GiB':>9}")
    with tempfile.TemporaryDirectory(prefix="bench-stages-") as tmp:
        ws = stage_workspace(Path(tmp), params, args.train_epochs)
        env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp}/mlflow.db", "PYTHONPATH": str(ws)}
        env.pop("DVC_ROOT", None)
        for stage in stages:
            seconds, peak, _ = run_measured([sys.executable, "-m", f"stages.{stage}"], ws, env)
            print(f"{stage:10} {seconds:8.1f} {peak:9.2f}", flush=True)


if __name__ == "__main__":
    main()
