"""A queued lr sweep lands in one MLflow server, one parent run per experiment, as the UI reads it."""

from __future__ import annotations

import json
import re
import time
import urllib.request
from pathlib import Path

import pytest

from tests.repos import experiments, run, tiny_repo

pytestmark = pytest.mark.slow

LRS = ("1e-05", "3e-05")


def rest(base: str, path: str, body: dict | None = None) -> dict:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(f"{base}{path}", data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


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
    # the README's `dvc exp show` line at this config's full dim, with the sweep's lr, in 120 columns: the data,
    # the fine-tuned NDCG@10, its change over its own base and at how many dims that change is beyond noise
    keep = "^(Experiment|data.path|lr|d0064|change.d0064|vs_base)$"
    show = ["dvc", "exp", "show", "--no-pager", "--drop", ".*", "--keep", keep, "--sort-by", "d0064"]
    table = run([*show, "--sort-order", "desc"], tiny_clone, COLUMNS="120").stdout
    assert all(len(line) <= 120 for line in table.splitlines()), table
    header = next(line.split() for line in table.splitlines() if "Experiment" in line)
    assert header[:4] == ["Experiment", "d0064", "change.d0064", "vs_base"], table  # metrics, then params
    assert sorted(header[4:]) == ["data.path", "lr"], table  # in params.yaml's order
    pattern = r"\s([0-9a-f]{7}) \[([a-z]+-[a-z]+)\]\s+(\S+)\s+(\S+)\s+(\d/3 above(?:, \d/3 below)?)\s+(\S+)\s+(\S+)\s"
    rows = {m[2]: m.groups()[2:] for m in re.finditer(pattern, table)}
    assert sorted(rows) == sorted(experiments(tiny_clone)), table
    scores = [cells[0] for cells in rows.values()]
    assert all(re.fullmatch(r"[01](\.\d{1,4})?", v) for v in scores), table  # 4 decimals at most
    assert [float(v) for v in scores] == sorted((float(v) for v in scores), reverse=True), table  # best first
    assert all(re.fullmatch(r"-?[01](\.\d{1,4})?", cells[1]) for cells in rows.values()), table
    data = 3 + header[4:].index("data.path")  # the data path's cell after d0064, change.d0064 and vs_base
    assert {cells[data] for cells in rows.values()} == {"data/raw/pubmedqa"}, table

    experiment = rest(mlflow_server, "/api/2.0/mlflow/experiments/get-by-name?experiment_name=medical-matryoshka")
    exp_id = experiment["experiment"]["experiment_id"]
    found = rest(mlflow_server, "/api/2.0/mlflow/runs/search", {"experiment_ids": [exp_id], "max_results": 100})
    parents = [r for r in found["runs"] if not any(t["key"] == "mlflow.parentRunId" for t in r["data"].get("tags", []))]
    by_lr = {}
    for parent in parents:
        params = {p["key"]: p["value"] for p in parent["data"]["params"]}
        by_lr[float(params["lr"])] = parent
    assert sorted(by_lr) == [1e-5, 3e-5]
    assert {r["info"]["status"] for r in found["runs"]} == {"FINISHED"}  # parents too: evaluate, the last, finished
    names = sorted(experiments(tiny_clone))
    for lr, parent in by_lr.items():
        name = parent["info"]["run_name"]  # the DVC experiment's name and what it changed
        assert name.split(" ")[0] in names and name.endswith(f" lr={lr:g}"), name
        tags = {t["key"]: t["value"] for t in parent["data"]["tags"]}
        assert f"lr={lr:g}" in tags["mlflow.note.content"]
        metrics = {m["key"]: m["value"] for m in parent["data"]["metrics"]}
        for dim in ("0064", "0032", "0016"):  # the summary at every dimension, the base included (baseline cached)
            assert 0 <= metrics[f"d{dim}.ndcg10"] <= 1 and 0 <= metrics[f"d{dim}.ndcg10_base"] <= 1
            change = metrics[f"d{dim}.ndcg10"] - metrics[f"d{dim}.ndcg10_base"]  # each rounded to 4 decimals
            assert metrics[f"d{dim}.ndcg10_change"] == pytest.approx(change, abs=1.5e-4)
        history = rest(
            mlflow_server,
            f"/api/2.0/mlflow/metrics/get-history?run_id={parent['info']['run_id']}&metric_key=d0064.dev_ndcg10",
        )
        assert len(history["metrics"]) >= 1  # the dev curve, on the parent
        children = [r for r in found["runs"] if {"key": "mlflow.parentRunId", "value": parent["info"]["run_id"]} in
                    r["data"].get("tags", [])]  # fmt: skip
        assert {f"{name} / evaluate", f"{name} / train"} <= {r["info"]["run_name"] for r in children}
        evaluate = next(r for r in children if r["info"]["run_name"].endswith("/ evaluate"))
        artifacts = rest(mlflow_server, f"/api/2.0/mlflow/artifacts/list?run_id={evaluate['info']['run_id']}")
        assert sorted(f["path"] for f in artifacts["files"]) == ["frontier.png", "ndcg_by_dim.png"]
        uri = evaluate["info"]["artifact_uri"]  # readable after the queue's temporary copies are gone
        image = f"{mlflow_server}/get-artifact?path=ndcg_by_dim.png&run_uuid={evaluate['info']['run_id']}"
        with urllib.request.urlopen(image, timeout=30) as response:
            assert response.read(8) == b"\x89PNG\r\n\x1a\n", uri
