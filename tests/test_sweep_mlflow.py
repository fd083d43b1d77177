"""A queued lr sweep lands in one MLflow server, one parent run per experiment, as the UI reads it."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import free_port
from tests.test_pipeline_e2e import experiments, run, tiny_repo

pytestmark = pytest.mark.slow

LRS = ("1e-05", "3e-05")


def rest(base: str, path: str, body: dict | None = None) -> dict:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(f"{base}{path}", data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    """`mlflow server` on 127.0.0.1 with its own SQLite store; stopped after the module."""
    folder = tmp_path_factory.mktemp("mlflow_server")
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
         "--backend-store-uri", f"sqlite:///{folder / 'mlflow.db'}", "--artifacts-destination", str(folder / "art"),
         "--workers", "1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"{base}/health", timeout=2)
            break
        except OSError:
            time.sleep(1)
    else:
        server.kill()
        raise RuntimeError("mlflow server did not come up within 120 s")
    yield base
    server.terminate()
    server.wait(timeout=30)


@pytest.fixture(scope="module")
def tiny_clone(tmp_path_factory, pubmedqa_dir, tiny_model_dir) -> Path:
    return tiny_repo(tmp_path_factory.mktemp("sweep") / "repo", pubmedqa_dir, tiny_model_dir)


def test_queued_lr_sweep_reaches_the_mlflow_server(tiny_clone, mlflow_server):
    env = {"MLFLOW_TRACKING_URI": mlflow_server}
    for lr in LRS:
        run(["dvc", "exp", "run", "--queue", "-S", f"lr={lr}"], tiny_clone, **env)
    run(["dvc", "queue", "start", "-j", "1"], tiny_clone, **env)
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        status = run(["dvc", "queue", "status"], tiny_clone).stdout
        if "Queued" not in status and "Running" not in status:
            break
        time.sleep(5)
    failed = [line.split()[1] for line in status.splitlines() if line.endswith("Failed")]
    logs = "".join(run(["dvc", "queue", "logs", name], tiny_clone, check=False).stdout[-3000:] for name in failed)
    assert status.count("Success") == 2, status + logs

    assert sorted(params["lr"] for params in experiments(tiny_clone).values()) == [float(lr) for lr in LRS]

    experiment = rest(mlflow_server, "/api/2.0/mlflow/experiments/get-by-name?experiment_name=medical-matryoshka")
    exp_id = experiment["experiment"]["experiment_id"]
    found = rest(mlflow_server, "/api/2.0/mlflow/runs/search", {"experiment_ids": [exp_id], "max_results": 100})
    parents = [r for r in found["runs"] if not any(t["key"] == "mlflow.parentRunId" for t in r["data"].get("tags", []))]
    by_lr = {}
    for parent in parents:
        params = {p["key"]: p["value"] for p in parent["data"]["params"]}
        metrics = {m["key"]: m["value"] for m in parent["data"]["metrics"]}
        by_lr[float(params["lr"])] = metrics
    assert sorted(by_lr) == [1e-5, 3e-5]
    assert {r["info"]["status"] for r in found["runs"]} == {"FINISHED"}  # parents too: evaluate, the last, finished
    for metrics in by_lr.values():
        for dim in (64, 32, 16):
            assert 0 <= metrics[f"finetuned.dim_{dim}.cosine_ndcg_at_10"] <= 1
    children = [r for r in found["runs"] if r not in parents]
    assert sorted(r["info"]["run_name"] for r in children).count("train") == 2
