"""commands.register against a real `mlflow server` on 127.0.0.1: the registered model loads by name and gives
the folder's embeddings at the chosen dimension; bad input is one line and registers nothing."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from medical_matryoshka.core.models import MODEL_TAG, weights_digest
from tests.conftest import REPO

NAME = "tiny-claims"


@pytest.fixture(scope="module")
def workdir(tmp_path_factory, tiny_model_dir) -> Path:
    """A checkout's params.yaml (the tiny model's dims) and the tiny model as the fine-tuned one."""
    work = tmp_path_factory.mktemp("work")
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["model"]["dims"] = [64, 32, 16]
    (work / "params.yaml").write_text(yaml.safe_dump(params))
    shutil.copytree(tiny_model_dir, work / params["paths"]["model"])
    return work


def register(workdir: Path, server: str, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "MLFLOW_TRACKING_URI": server, "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, "-m", "commands.register", *args], cwd=workdir, env=env, capture_output=True, text=True
    )


def pipeline_run(server: str, experiment: str, digest: str | None) -> str:
    """A finished parent run as `dvc repro` leaves it (evaluate tags it with the weights' digest)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(server)
    exp = client.get_experiment_by_name(experiment)
    exp_id = exp.experiment_id if exp else client.create_experiment(experiment)
    run = client.create_run(exp_id, run_name="repro @abc1234 (committed params)")
    if digest:
        client.set_tag(run.info.run_id, MODEL_TAG, digest)
    client.set_terminated(run.info.run_id, "FINISHED")
    return run.info.run_id


def one_error(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    (line,) = [x for x in result.stderr.splitlines() if x.strip()]
    return line


def registered(server: str) -> list[str]:
    from mlflow.tracking import MlflowClient

    return [m.name for m in MlflowClient(server).search_registered_models()]


def test_bad_input_is_one_line_and_registers_nothing(workdir, mlflow_server, tmp_path):
    server = mlflow_server
    experiment = yaml.safe_load((workdir / "params.yaml").read_text())["tracking"]["experiment"]
    pipeline_run(server, experiment, digest="0" * 64)  # another model's run
    line = one_error(register(workdir, server, "--dim", "48"))
    assert line == "error: --dim 48 is not one of the model's Matryoshka dims [64, 32, 16]; pick one " + (
        "(metrics/frontier.json: what each costs)"
    )
    line = one_error(register(workdir, server, "--dim", "32", "--model", str(tmp_path / "none")))
    assert line.startswith(f"error: fine-tuned model {tmp_path / 'none'} is missing; run the train stage first")
    line = one_error(register(workdir, server, "--dim", "32"))
    assert line.startswith("error: no finished run in experiment") and "run `dvc repro` with this tracking" in line
    assert registered(server) == []


def test_the_registered_model_loads_by_name_with_the_folders_embeddings(workdir, mlflow_server):
    server = mlflow_server
    import mlflow
    import mlflow.sentence_transformers
    from mlflow.tracking import MlflowClient
    from sentence_transformers import SentenceTransformer

    folder = workdir / "models/finetuned"
    experiment = yaml.safe_load((workdir / "params.yaml").read_text())["tracking"]["experiment"]
    run_id = pipeline_run(server, experiment, weights_digest(folder))
    result = register(workdir, server, "--dim", "32", "--name", NAME)
    assert result.returncode == 0, result.stderr
    assert f"registered models:/{NAME}/1: models/finetuned at 32 dims" in result.stdout

    mlflow.set_tracking_uri(server)
    loaded = mlflow.sentence_transformers.load_model(f"models:/{NAME}/1")
    texts = ["Aspirin reduces the risk of a second stroke.", "Statins lower LDL cholesterol."]
    ours = SentenceTransformer(str(folder), device="cpu", truncate_dim=32).encode(texts)
    theirs = loaded.encode(texts)
    assert theirs.shape == (2, 32)
    np.testing.assert_allclose(theirs, ours, atol=1e-6)

    client = MlflowClient(server)
    version = client.get_model_version(NAME, "1")
    assert version.run_id == run_id  # logged to the run that evaluated these weights
    assert client.get_run(run_id).info.status == "FINISHED"
    signature = mlflow.models.get_model_info(f"models:/{NAME}/1").signature
    assert signature.inputs.input_types()[0].name == "string"
    assert signature.outputs.inputs[0].shape == (-1, 32)


@pytest.fixture(scope="module")
def exported_dir(workdir) -> Path:
    """The tiny model exported as the export stage writes it (OpenVINO, float) into the checkout's paths.exported."""
    from sentence_transformers import SentenceTransformer

    from medical_matryoshka.serving.export import export_model

    params = yaml.safe_load((workdir / "params.yaml").read_text())
    model_dir = workdir / params["paths"]["model"]
    folder = workdir / params["paths"]["exported"]
    folder.mkdir(parents=True)
    source = {"model": str(model_dir), "sha256": weights_digest(model_dir)}
    model = SentenceTransformer(str(model_dir), device="cpu")
    export_model(model, folder, "openvino", "float", "auto", (64, 32, 16), source)
    return folder


def test_bad_exported_input_is_one_line(workdir, exported_dir, mlflow_server, tmp_path):
    line = one_error(register(workdir, mlflow_server, "--dim", "32", "--exported", str(tmp_path)))
    assert line == f"error: {tmp_path} is not an exported model (no export.json); write one with `dvc repro export`"
    line = one_error(register(workdir, mlflow_server, "--dim", "32", "--exported", str(tmp_path / "none")))
    assert line.startswith(f"error: exported model {tmp_path / 'none'} is missing; run the export stage first")


def test_the_exported_model_is_registered_and_served_on_localhost(workdir, exported_dir, mlflow_server, monkeypatch):
    """register --exported, then `mlflow models serve` of the registered version answers an embedding request
    on 127.0.0.1 with the exported folder's vectors at the registered dim."""
    import json
    import urllib.request

    from mlflow.tracking import MlflowClient

    from medical_matryoshka.serving.encoder import ExportedEncoder
    from medical_matryoshka.team.server import serve_mlflow

    server = mlflow_server
    name = "tiny-claims-cpu"
    experiment = yaml.safe_load((workdir / "params.yaml").read_text())["tracking"]["experiment"]
    run_id = pipeline_run(server, experiment, weights_digest(workdir / "models/finetuned"))
    result = register(workdir, server, "--dim", "32", "--name", name, "--exported")
    assert result.returncode == 0, result.stderr
    assert f"registered models:/{name}/1: models/exported (openvino float) at 32 dims" in result.stdout
    version = MlflowClient(server).get_model_version(name, "1")
    assert version.run_id == run_id
    assert version.tags == {"runtime": "openvino", "weights": "float", "dim": "32"}

    monkeypatch.setenv("MLFLOW_TRACKING_URI", server)
    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")  # its uvicorn
    serving, base = serve_mlflow("models", "serve", "-m", f"models:/{name}/1", "--env-manager", "local")
    try:
        texts = ["Aspirin reduces the risk of a second stroke.", "Statins lower LDL cholesterol."]
        request = urllib.request.Request(
            f"{base}/invocations",
            data=json.dumps({"inputs": texts, "params": {"task": "query"}}).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=60) as response:
            served = np.array(json.loads(response.read())["predictions"], dtype=np.float32)
    finally:
        serving.terminate()
        serving.wait(timeout=30)
    ours = ExportedEncoder(exported_dir, truncate_dim=32).encode_query(texts)
    assert served.shape == (2, 32)
    np.testing.assert_allclose(served, ours, atol=1e-6)
