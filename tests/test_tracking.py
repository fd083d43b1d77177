"""MLflow tracking: a parent run per pipeline execution, nested stage runs, names MLflow accepts."""

from __future__ import annotations

from pathlib import Path

import pytest

from medical_matryoshka.tracking import runs as tracking


@pytest.fixture
def in_repo(tmp_path, monkeypatch) -> Path:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text("lr: 2.0e-05\n")
    return tmp_path


def runs(uri: str):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("test-exp")
    return {r.info.run_id: r for r in client.search_runs([exp.experiment_id])}


def test_stages_of_one_execution_nest_under_one_parent(tracking_store, in_repo):
    all_params = {"lr": 2e-5, "model": {"dims": [384, 32]}}
    with tracking.stage_run("prepare", {"seed": 42}, "test-exp", all_params) as run:
        run.log_metrics({"rows": {"train_pairs": 10}})
    with tracking.stage_run("baseline", {"model": {"dims": [384, 32]}}, "test-exp", all_params) as run:
        run.log_metrics({"base": {"dim_384": {"cosine_ndcg@10": 0.88}}}, parent=True)
    found = runs(tracking_store)
    parents = [r for r in found.values() if "mlflow.parentRunId" not in r.data.tags]
    assert len(parents) == 1 and len(found) == 3
    parent = parents[0]
    children = {
        r.info.run_name: r for r in found.values() if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id
    }
    assert set(children) == {"prepare", "baseline"}
    assert parent.data.params["lr"] == "2e-05" and parent.data.params["model.dims"] == "[384, 32]"
    assert children["prepare"].data.params == {"seed": "42"}
    assert children["prepare"].data.metrics == {"rows.train_pairs": 10.0}
    # '@' is not allowed in MLflow names; the parent carries the final per-dimension metrics
    assert parent.data.metrics == {"base.dim_384.cosine_ndcg_at_10": 0.88}
    assert children["baseline"].data.metrics == {"base.dim_384.cosine_ndcg_at_10": 0.88}
    assert {r.info.status for r in found.values()} == {"FINISHED"}


def test_each_dvc_experiment_gets_its_own_parent(tracking_store, in_repo, monkeypatch):
    for name in ("exp-a", "exp-b"):
        monkeypatch.setenv("DVC_EXP_NAME", name)
        with tracking.stage_run("baseline", {}, "test-exp", {"lr": 1}):
            pass
    parents = [r for r in runs(tracking_store).values() if "mlflow.parentRunId" not in r.data.tags]
    assert sorted(r.info.run_name for r in parents) == ["exp-a", "exp-b"]


def test_changed_params_start_a_new_parent(tracking_store, in_repo):
    for lr in ("1e-5", "3e-5"):
        (in_repo / "params.yaml").write_text(f"lr: {lr}\n")
        with tracking.stage_run("baseline", {}, "test-exp", {"lr": lr}):
            pass
    parents = [r for r in runs(tracking_store).values() if "mlflow.parentRunId" not in r.data.tags]
    assert sorted(r.data.params["lr"] for r in parents) == ["1e-5", "3e-5"]


def test_a_failing_stage_marks_its_run_failed(tracking_store, in_repo):
    with pytest.raises(RuntimeError), tracking.stage_run("baseline", {}, "test-exp", {}):
        raise RuntimeError("boom")
    statuses = {r.info.run_name: r.info.status for r in runs(tracking_store).values()}
    assert statuses["baseline"] == "FAILED"


def test_default_store_is_at_the_dvc_root(monkeypatch, tmp_path):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("DVC_ROOT", str(tmp_path))
    assert tracking.tracking_uri() == f"sqlite:///{tmp_path.resolve() / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    assert tracking.tracking_uri() == "http://127.0.0.1:5000"
