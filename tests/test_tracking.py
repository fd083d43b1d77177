"""MLflow tracking: a parent run per pipeline execution, nested stage runs, names MLflow accepts."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from medical_matryoshka.core.errors import Interrupted, PipelineError
from medical_matryoshka.core.tracking import identity, lifecycle, store, sweep
from medical_matryoshka.core.tracking import run as handle
from medical_matryoshka.team.server import free_port
from tests.conftest import REPO


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
    with lifecycle.stage_run("prepare", {"seed": 42}, "test-exp", all_params, final=False) as run:
        run.log_metrics({"rows": {"train_pairs": 10}})
    with lifecycle.stage_run("baseline", {"model": {"dims": [384, 32]}}, "test-exp", all_params) as run:
        run.log_metrics({"base": {"dim_384": {"cosine_ndcg@10": 0.88}}})
        run.log_metrics({"d0384.base": 0.88}, parent=True)
    found = runs(tracking_store)
    parents = [r for r in found.values() if "mlflow.parentRunId" not in r.data.tags]
    assert len(parents) == 1 and len(found) == 3
    parent = parents[0]
    children = {
        r.data.tags["stage"]: r for r in found.values() if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id
    }
    assert set(children) == {"prepare", "baseline"}
    assert children["prepare"].info.run_name == f"{parent.info.run_name} / prepare"
    assert parent.data.params["lr"] == "2e-05" and parent.data.params["model.dims"] == "[384, 32]"
    assert children["prepare"].data.params == {"seed": "42"}
    assert children["prepare"].data.metrics == {"rows.train_pairs": 10.0}
    # '@' is not allowed in MLflow names; the full table stays on the stage's run, the parent gets the summary
    assert children["baseline"].data.metrics == {"base.dim_384.cosine_ndcg_at_10": 0.88}
    assert parent.data.metrics == {"d0384.base": 0.88}
    assert {r.info.status for r in found.values()} == {"FINISHED"}
    from mlflow.tracking import MlflowClient

    experiment = MlflowClient(tracking_uri=tracking_store).get_experiment_by_name("test-exp")
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"  # the UI opens on training runs


def git(repo: Path, *args: str) -> None:
    subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=repo, check=True, capture_output=True
    )


def test_a_parent_is_named_after_what_distinguishes_it(tracking_store, in_repo, monkeypatch):
    git(in_repo, "init", "-q")
    (in_repo / "params.yaml").write_text("lr: 5.0e-05\ntrain:\n  epochs: 3\n")
    git(in_repo, "add", "params.yaml")
    git(in_repo, "commit", "-qm", "params")
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=in_repo, capture_output=True, text=True).stdout.strip()
    with lifecycle.stage_run("prepare", {}, "test-exp", {}):
        pass
    (in_repo / "params.yaml").write_text("lr: 3e-05\ntrain:\n  epochs: 3\n")  # what `dvc exp run -S lr=3e-05` writes
    monkeypatch.setenv("DVC_EXP_NAME", "civil-razz")
    monkeypatch.setenv("DVC_EXP_BASELINE_REV", head)
    with lifecycle.stage_run("train", {}, "test-exp", {}):
        pass
    parents = {r.info.run_name: r for r in runs(tracking_store).values() if "mlflow.parentRunId" not in r.data.tags}
    assert set(parents) == {f"repro @{head[:7]} (committed params)", "civil-razz lr=3e-05"}
    assert "with lr=3e-05" in parents["civil-razz lr=3e-05"].data.tags["mlflow.note.content"]
    assert parents["civil-razz lr=3e-05"].data.tags["overrides"] == "lr=3e-05"


def test_another_data_set_is_named_by_its_folder_not_every_key_of_its_profile():
    changed = {
        "model.max_seq_length": "256",
        "data.source": "beir",
        "data.path": "data/raw/scifact",
        "data.watch": "data/raw/scifact",
        "data.files.corpus.jsonl.sha256": "fdb9153e",
        "data.leaked_queries": "drop",
        "data.columns.anchor": "claim",
    }
    params = {"data": {"path": "data/raw/scifact"}}
    short = identity.short_overrides(changed, params)
    assert list(short.items()) == [  # the data first: MLflow's narrow name column keeps it
        ("data", "scifact"),
        ("model.max_seq_length", "256"),
        ("data.leaked_queries", "drop"),
    ]
    assert identity.short_overrides({"lr": "3e-05"}, params) == {"lr": "3e-05"}


def test_each_dvc_experiment_gets_its_own_parent(tracking_store, in_repo, monkeypatch):
    for name in ("exp-a", "exp-b"):
        monkeypatch.setenv("DVC_EXP_NAME", name)
        with lifecycle.stage_run("baseline", {}, "test-exp", {"lr": 1}):
            pass
    parents = [r for r in runs(tracking_store).values() if "mlflow.parentRunId" not in r.data.tags]
    assert sorted(r.info.run_name for r in parents) == ["exp-a", "exp-b"]  # not in git: no overrides to name


def test_changed_params_start_a_new_parent(tracking_store, in_repo):
    for lr in ("1e-5", "3e-5"):
        (in_repo / "params.yaml").write_text(f"lr: {lr}\n")
        with lifecycle.stage_run("baseline", {}, "test-exp", {"lr": lr}):
            pass
    parents = [r for r in runs(tracking_store).values() if "mlflow.parentRunId" not in r.data.tags]
    assert sorted(r.data.params["lr"] for r in parents) == ["1e-5", "3e-5"]


def statuses(uri: str) -> dict[str, str]:
    """{run name: status}; the parent run is 'parent'."""
    return {
        r.data.tags["stage"] if "mlflow.parentRunId" in r.data.tags else "parent": r.info.status
        for r in runs(uri).values()
    }


def test_a_failing_stage_marks_its_run_and_the_parent_failed(tracking_store, in_repo):
    with pytest.raises(RuntimeError), lifecycle.stage_run("baseline", {}, "test-exp", {}, final=False):
        raise RuntimeError("boom")
    assert statuses(tracking_store) == {"baseline": "FAILED", "parent": "FAILED"}


def test_parent_is_finished_only_after_the_final_stage(tracking_store, in_repo):
    with lifecycle.stage_run("prepare", {}, "test-exp", {}, final=False):
        pass
    assert statuses(tracking_store) == {"prepare": "FINISHED", "parent": "SCHEDULED"}
    with lifecycle.stage_run("train", {}, "test-exp", {}, final=False):
        assert statuses(tracking_store)["parent"] == "RUNNING"
    with lifecycle.stage_run("evaluate", {}, "test-exp", {}, final=True):
        pass
    assert statuses(tracking_store) == {n: "FINISHED" for n in ("prepare", "train", "evaluate", "parent")}


def test_the_pipeline_s_final_stage_is_export():
    from medical_matryoshka.core.pipeline import final_stages

    assert final_stages(REPO / "dvc.yaml") == {"export"}  # it reads evaluate's frontier: the parent ends with it


def test_an_interrupted_stage_is_killed(tracking_store, in_repo):
    with pytest.raises(Interrupted), lifecycle.stage_run("train", {}, "test-exp", {}, final=False):
        raise Interrupted(signal.SIGTERM)
    assert statuses(tracking_store) == {"train": "KILLED", "parent": "KILLED"}


def test_runs_left_running_by_a_dead_process_are_marked_killed(tracking_store, in_repo):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    with lifecycle.stage_run("train", {}, "test-exp", {}, final=False) as run:
        run.client.set_tag(run.run_id, sweep.PID_TAG, str(dead.pid))  # as if that process had run it
        run.end = lambda *args: None  # no end written: the run stays RUNNING, as after a SIGKILL
    assert statuses(tracking_store)["train"] == "RUNNING"
    with lifecycle.stage_run("evaluate", {}, "test-exp", {}, final=True):
        pass
    assert statuses(tracking_store) == {"train": "KILLED", "evaluate": "FINISHED", "parent": "FINISHED"}


def test_sigterm_ends_a_stage_with_one_line_and_a_killed_run(tracking_store, in_repo):
    script = (
        "import time\n"
        "from medical_matryoshka.core.errors import run_main\n"
        "from medical_matryoshka.core.tracking.lifecycle import stage_run\n"
        "def main():\n"
        "    with stage_run('train', {}, 'test-exp', {}, final=False):\n"
        "        print('started', flush=True)\n"
        "        time.sleep(60)\n"
        "run_main(main)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True
    )
    assert proc.stdout.readline().strip() == "started"
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM
    assert "Traceback" not in stderr
    assert [line for line in stderr.splitlines() if "error" in line.lower()] == [
        "error: stopped by SIGTERM; rerun `dvc repro` to continue (training resumes from its last checkpoint)"
    ]
    assert statuses(tracking_store) == {"train": "KILLED", "parent": "KILLED"}


def test_a_tracking_failure_mid_stage_keeps_the_work(tracking_store, in_repo, capsys):
    with lifecycle.stage_run("evaluate", {}, "test-exp", {}) as run:

        def broken(*args, **kwargs):
            raise ConnectionError("server went away\nsecond line")

        run.client.log_batch = broken
        run.log_metrics({"a": 1.0})
        run.log_metrics({"b": 2.0})  # logging is off now: no second warning
        (in_repo / "out.txt").write_text("done")
    assert (in_repo / "out.txt").read_text() == "done"
    warnings = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning:")]
    assert warnings == [
        "warning: MLflow tracking failed (server went away); outputs are kept, this stage goes on untracked"
    ]


def test_an_unreachable_tracking_server_stops_at_once_or_is_skipped(monkeypatch, capsys):
    uri = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    with pytest.raises(PipelineError, match=f"MLflow tracking server {uri} is unreachable .*tracking.unreachable=skip"):
        store.check_tracking("fail")
    assert store.check_tracking("skip") is False
    assert "runs without tracking" in capsys.readouterr().err
    with lifecycle.stage_run("train", {}, "test-exp", {}, enabled=False) as run:
        run.log_metrics({"a": 1.0})  # a no-op, no network
    assert run.client is None


def test_a_tracking_failure_mid_stage_still_ends_the_run_when_the_store_answers(tracking_store, in_repo):
    with lifecycle.stage_run("evaluate", {}, "test-exp", {}) as run:
        run._call("get_run", "no-such-run")  # fails: logging is off
        assert run.failed
    assert statuses(tracking_store) == {"evaluate": "FINISHED", "parent": "FINISHED"}


def test_a_url_that_answers_but_is_not_an_mlflow_server_is_unreachable(monkeypatch):
    import http.server
    import threading

    server = http.server.HTTPServer(("127.0.0.1", 0), http.server.SimpleHTTPRequestHandler)  # 404 for /health
    threading.Thread(target=server.serve_forever, daemon=True).start()
    uri = f"http://127.0.0.1:{server.server_port}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    try:
        with pytest.raises(PipelineError, match=f"HTTP 404 from {uri}/health: not an MLflow tracking server"):
            store.check_tracking("fail")
    finally:
        server.shutdown()


def test_artifacts_of_the_default_store_land_beside_it(monkeypatch, tmp_path):
    from mlflow.tracking import MlflowClient

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    queue_copy = tmp_path / "queue-copy"  # a queued run executes in a temporary copy; DVC_ROOT is the repo
    queue_copy.mkdir()
    (queue_copy / "params.yaml").write_text("lr: 1\n")
    monkeypatch.chdir(queue_copy)
    monkeypatch.setenv("DVC_ROOT", str(tmp_path))
    with lifecycle.stage_run("evaluate", {}, "test-exp", {}) as run:
        (queue_copy / "plot.png").write_bytes(b"png")
        run.log_artifact(queue_copy / "plot.png")
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert client.get_experiment_by_name("test-exp").artifact_location == (tmp_path / "mlartifacts").resolve().as_uri()
    assert list((tmp_path / "mlartifacts").rglob("plot.png"))


def test_default_store_is_at_the_dvc_root(monkeypatch, tmp_path):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("DVC_ROOT", str(tmp_path))
    assert store.tracking_uri() == f"sqlite:///{tmp_path.resolve() / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    assert store.tracking_uri() == "http://127.0.0.1:5000"


def test_a_finished_parent_is_never_reopened_a_rerun_gets_its_own(tracking_store, in_repo):
    with lifecycle.stage_run("evaluate", {}, "test-exp", {"lr": 1}, final=True):
        pass
    with lifecycle.stage_run("evaluate", {}, "test-exp", {"lr": 1}, final=True):  # `dvc repro -f evaluate`
        pass
    parents = sorted(
        (r for r in runs(tracking_store).values() if "mlflow.parentRunId" not in r.data.tags),
        key=lambda r: r.info.start_time,
    )
    assert [r.info.status for r in parents] == ["FINISHED", "FINISHED"]
    assert parents[1].info.run_name == f"{parents[0].info.run_name} (run 2)"


def test_an_unfinished_parent_goes_on(tracking_store, in_repo):
    with pytest.raises(RuntimeError), lifecycle.stage_run("train", {}, "test-exp", {}, final=False):
        raise RuntimeError("boom\nmore")
    assert statuses(tracking_store) == {"train": "FAILED", "parent": "FAILED"}
    failed = next(r for r in runs(tracking_store).values() if r.data.tags.get("stage") == "train")
    assert failed.data.tags["error"] == "boom"  # the line the terminal showed, on the run
    with lifecycle.stage_run("evaluate", {}, "test-exp", {}, final=True):  # the rerun completes the same execution
        pass
    parents = [r for r in runs(tracking_store).values() if "mlflow.parentRunId" not in r.data.tags]
    assert [r.info.status for r in parents] == ["FINISHED"]


def start_server(port: int, db: Path) -> subprocess.Popen:
    import time
    import urllib.request

    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{db}", "--host", "127.0.0.1",
         "--port", str(port), "--workers", "1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2)
            return server
        except OSError:
            time.sleep(0.5)
    server.kill()
    raise AssertionError("mlflow server did not start")


def stop(server: subprocess.Popen) -> None:
    server.terminate()
    server.wait(timeout=30)


def test_a_server_restart_as_a_stage_ends_leaves_it_finished(tmp_path, in_repo, monkeypatch):
    import threading

    port, db = free_port(), tmp_path / "server.db"
    uri = f"http://127.0.0.1:{port}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    server = start_server(port, db)
    restarted = []
    try:
        with lifecycle.stage_run("train", {}, "test-exp", {}, final=False) as run:
            stop(server)  # restarted while the stage ends: the end is retried until it is taken
            threading.Timer(2.0, lambda: restarted.append(start_server(port, db))).start()
            run.log_metrics({"loss": 1.0})  # lost (one warning), the work goes on
        assert statuses(uri) == {"train": "FINISHED", "parent": "SCHEDULED"}

        # down for longer than the retries: the state is kept and written by the next stage to start
        monkeypatch.setattr(handle, "END_RETRY_SECONDS", 1.0)
        with lifecycle.stage_run("evaluate", {}, "test-exp", {}, final=True):
            stop(restarted.pop())
        pending = list((in_repo / ".cache/tracking").glob("*.json"))
        assert len(pending) == 1
        restarted.append(start_server(port, db))
        assert statuses(uri)["evaluate"] == "RUNNING"
        monkeypatch.setenv("DVC_EXP_NAME", "next-experiment")
        with lifecycle.stage_run("prepare", {}, "test-exp", {}, final=False):
            pass
        evaluate = next(r for r in runs(uri).values() if r.data.tags.get("stage") == "evaluate")
        assert evaluate.info.status == "FINISHED"  # not KILLED by the sweep
        assert runs(uri)[evaluate.data.tags["mlflow.parentRunId"]].info.status == "FINISHED"
        assert not list((in_repo / ".cache/tracking").glob("*.json"))
    finally:
        for server in restarted:
            stop(server)


def test_a_parent_whose_dvc_is_gone_is_swept(tracking_store, in_repo):
    from mlflow.tracking import MlflowClient

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    with lifecycle.stage_run("prepare", {}, "test-exp", {}, final=False) as run:
        parent_id = run.parent_id
    client = MlflowClient(tracking_uri=tracking_store)
    client.update_run(parent_id, status="RUNNING")  # its stage died between reopening it and its own run
    client.set_tag(parent_id, sweep.LAUNCHER_TAG, str(dead.pid))
    (in_repo / "params.yaml").write_text("lr: 1.0e-05\n")  # another execution starts
    with lifecycle.stage_run("prepare", {}, "test-exp", {}, final=False):
        pass
    assert client.get_run(parent_id).info.status == "KILLED"


def test_the_runs_table_opens_in_model_training_mode_with_the_summary_as_columns(tracking_store, in_repo):
    import json

    from mlflow.tracking import MlflowClient

    with lifecycle.stage_run("evaluate", {}, "test-exp", {"model": {"dims": [384, 32]}}) as run:
        link = run.runs_table_link()
    assert link.endswith(
        f"#/experiments/{run.experiment_id}/runs?workflowType=machine_learning&viewStateShareKey=training"
    )
    experiment = MlflowClient(tracking_uri=tracking_store).get_experiment_by_name("test-exp")
    view = json.loads(experiment.tags["mlflow.sharedViewState.training"])  # what viewStateShareKey loads
    first = ["metrics.`d0384.ndcg10`", "metrics.`d0032.ndcg10`", "metrics.`d0384.ndcg10_change`"]
    assert view["selectedColumns"][:3] == first
    assert "params.`lr`" in view["selectedColumns"]
    with lifecycle.stage_run("evaluate", {}, "test-exp", {"model": {"dims": [768, 64]}}):  # another model: added
        pass
    experiment = MlflowClient(tracking_uri=tracking_store).get_experiment_by_name("test-exp")
    columns = json.loads(experiment.tags["mlflow.sharedViewState.training"])["selectedColumns"]
    assert "metrics.`d0384.ndcg10`" in columns and "metrics.`d0768.ndcg10`" in columns
