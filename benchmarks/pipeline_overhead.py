"""Pipeline overhead: `dvc repro` with nothing changed, and the peak memory and time of every stage.

    python -m benchmarks.pipeline_overhead                 # no-op repro x5; prepare, baseline, mine, evaluate
    python -m benchmarks.pipeline_overhead --train-epochs 1   # also the train stage (1 epoch: same peak memory)

The stages run from a temporary folder (their outputs go there; inputs are this checkout's data), one
fresh process each, with MLflow going to a throw-away store. The no-op repro runs in this checkout, which
must be up to date (`dvc repro` first).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import yaml

from benchmarks.common import banner, isolated_stage_run, median, run_measured

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
    if args.train_epochs is not None:
        params["epochs"] = args.train_epochs
    # inputs from this checkout: the raw data, the card, and the trained model when train does not run
    inputs = {"raw", "card"} | ({"model"} if args.train_epochs is None else set())
    stages = [s for s in STAGES if s != "train" or args.train_epochs is not None]
    print(f"{'stage':10} {'seconds':>8} {'peak GiB':>9}")
    with tempfile.TemporaryDirectory(prefix="bench-stages-") as tmp:
        ws, env = isolated_stage_run(Path(tmp), ROOT, params, inputs)
        for stage in stages:
            seconds, peak, _ = run_measured([sys.executable, "-m", f"stages.{stage}"], ws, env)
            print(f"{stage:10} {seconds:8.1f} {peak:9.2f}", flush=True)


if __name__ == "__main__":
    main()
