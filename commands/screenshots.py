"""Regenerate the README's pictures: the MLflow UI comparing a sweep's runs, and `dvc plots show`'s page.

    python -m commands.screenshots            # the 3 latest DVC experiments' parent runs
    python -m commands.screenshots --runs 5   # or more

Needs Chromium (Debian: `apt-get install chromium`). Starts `mlflow ui` on 127.0.0.1 with this repository's
tracking store (or $MLFLOW_TRACKING_URI's server), opens the runs comparison of the latest finished DVC
experiments' parent runs, and writes docs/images/mlflow_compare.png and docs/images/dvc_plots.png.
"""

from __future__ import annotations

import argparse
import json
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path

from medical_matryoshka.config.params import load_params, section
from medical_matryoshka.config.sections import TrackingConfig
from medical_matryoshka.errors import PipelineError, run_main
from medical_matryoshka.tracking.runs import tracking_uri

OUT = Path("docs/images")


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if found := shutil.which(name):
            return found
    raise PipelineError("Chromium not found; install it (Debian: apt-get install chromium) and rerun")


def screenshot(url: str, image: Path, size: str) -> None:
    """A headless Chromium screenshot of `url`, given time to run the page's scripts."""
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run(
            [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--hide-scrollbars",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={profile}", f"--window-size={size}", "--virtual-time-budget=30000",
             f"--screenshot={image.resolve()}", url],
            check=True, capture_output=True, timeout=180,
        )  # fmt: skip
    print(f"wrote {image}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def sweep_parents(uri: str, experiment: str, count: int) -> tuple[str, list[str]]:
    """The experiment's id and its `count` latest finished parent runs of DVC experiments."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        raise PipelineError(f"no MLflow experiment '{experiment}' in {uri}; run a sweep first (see the README)")
    runs = client.search_runs(
        [exp.experiment_id],
        filter_string="attributes.status = 'FINISHED' and tags.dvc_exp_name != ''",
        order_by=["attributes.start_time DESC"],
        max_results=count,
    )
    if len(runs) < 2:
        raise PipelineError(f"{len(runs)} finished DVC experiment runs in '{experiment}'; a comparison needs 2 or more")
    return exp.experiment_id, [r.info.run_id for r in runs]


def serve_mlflow(*args: str) -> tuple[subprocess.Popen, str]:
    """`mlflow <args> --host 127.0.0.1 --port <free>` (ui or server), once its /health answers: (process, URL)."""
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", *args, "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"{base}/health", timeout=2)
            return server, base
        except OSError:
            time.sleep(1)
    server.kill()
    raise PipelineError(f"mlflow {args[0]} did not answer within 120 s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3, help="how many of the latest experiments to compare")
    args = parser.parse_args()
    chromium()
    OUT.mkdir(parents=True, exist_ok=True)
    uri = tracking_uri()
    experiment = section(TrackingConfig, load_params(), "tracking").experiment
    exp_id, run_ids = sweep_parents(uri, experiment, args.runs)
    remote = uri.startswith(("http://", "https://"))
    server, base = (None, uri.rstrip("/")) if remote else serve_mlflow("ui", "--backend-store-uri", uri)
    try:
        query = urllib.parse.urlencode({"runs": json.dumps(run_ids), "experiments": json.dumps([exp_id])})
        screenshot(f"{base}/#/compare-runs?{query}", OUT / "mlflow_compare.png", "1600,1400")
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=30)
    with tempfile.TemporaryDirectory() as folder:
        subprocess.run(["dvc", "plots", "show", "-o", folder], check=True, capture_output=True)
        screenshot(Path(folder, "index.html").resolve().as_uri(), OUT / "dvc_plots.png", "1100,520")


if __name__ == "__main__":
    run_main(main)
