"""MLflow tracking: one parent run per pipeline execution, one nested run per stage.

A pipeline execution is a DVC experiment (DVC_EXP_NAME) or, for plain `dvc repro`, the git commit plus
the content of params.yaml. Each stage is its own process, so the parent is found by its tag (or created)
in the shared store. Nothing happens at import time.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

PIPELINE_TAG = "pipeline_key"


def tracking_uri() -> str:
    """$MLFLOW_TRACKING_URI, else a SQLite store at the DVC repository root (shared by queued runs)."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{_repo_root() / 'mlflow.db'}"


def _repo_root() -> Path:
    # DVC points DVC_ROOT at the parent repository even for queued runs in temp copies.
    return Path(os.environ.get("DVC_ROOT") or Path.cwd()).resolve()


def artifact_root() -> str | None:
    """Artifacts beside the default SQLite store (not in a queued run's temp copy); servers pick their own."""
    return None if os.environ.get("MLFLOW_TRACKING_URI") else (_repo_root() / "mlartifacts").as_uri()


def _git_head() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True)
        return out.stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "no-commit"


def pipeline_identity(params_file: str | Path = "params.yaml") -> tuple[str, str, dict[str, str]]:
    """(key, run name, tags) of the current pipeline execution."""
    exp = os.environ.get("DVC_EXP_NAME")
    if exp:
        baseline = os.environ.get("DVC_EXP_BASELINE_REV", "")
        return f"exp:{exp}:{baseline}", exp, {"dvc_exp_name": exp, "git_commit": baseline}
    head = _git_head()
    digest = hashlib.sha256(Path(params_file).read_bytes()).hexdigest()[:12]
    return f"repro:{head}:{digest}", f"repro-{head[:7]}-{digest[:7]}", {"git_commit": head}


def flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """{'a': {'b': 1}} -> {'a.b': 1}; lists stay whole."""
    flat: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def metric_name(name: str) -> str:
    """MLflow rejects '@': cosine_ndcg@10 -> cosine_ndcg_at_10."""
    return name.replace("@", "_at_")


class StageRun:
    """Handle for logging into a stage's run and its pipeline parent run."""

    def __init__(self, client, run_id: str, parent_id: str) -> None:
        self.client, self.run_id, self.parent_id = client, run_id, parent_id

    def log_metrics(self, metrics: Mapping[str, Any], parent: bool = False, step: int = 0) -> None:
        """Log nested numeric metrics under flattened names; also on the parent if `parent`."""
        from mlflow.entities import Metric
        from mlflow.utils.time import get_current_time_millis

        now = get_current_time_millis()
        flat = flatten(metrics)
        batch = [Metric(metric_name(k), float(v), now, step) for k, v in flat.items() if isinstance(v, int | float)]
        for run_id in (self.run_id, self.parent_id) if parent else (self.run_id,):
            self.client.log_batch(run_id, metrics=batch)

    def log_artifact(self, path: str | Path) -> None:
        """Attach a file (a plot, a report) to the stage's run."""
        self.client.log_artifact(self.run_id, str(path))


@contextmanager
def stage_run(
    stage: str, params: Mapping[str, Any], experiment: str, all_params: Mapping[str, Any]
) -> Iterator[StageRun]:
    """Start `stage`'s run nested under this pipeline execution's parent run.

    `params` are the keys the stage reads (logged on its run); `all_params` (the whole params.yaml)
    goes on the parent, so the UI's run comparison lines up the knobs of a sweep.
    """
    import mlflow
    from mlflow.entities import Param
    from mlflow.tracking import MlflowClient

    mlflow.set_tracking_uri(tracking_uri())
    client = MlflowClient()
    exp = client.get_experiment_by_name(experiment)
    exp_id = exp.experiment_id if exp else client.create_experiment(experiment, artifact_location=artifact_root())
    key, run_name, tags = pipeline_identity()
    # Only parent runs carry the pipeline tag.
    found = client.search_runs([exp_id], filter_string=f"tags.{PIPELINE_TAG} = '{key}'", max_results=1)
    if found:
        parent_id = found[0].info.run_id
    else:
        parent = client.create_run(exp_id, run_name=run_name, tags={PIPELINE_TAG: key, **tags})
        parent_id = parent.info.run_id
        flat = flatten(all_params)
        client.log_batch(parent_id, params=[Param(k, str(v)[:6000]) for k, v in flat.items()])
    child = client.create_run(
        exp_id,
        run_name=stage,
        tags={"mlflow.parentRunId": parent_id, "stage": stage, **tags},
    )
    run_id = child.info.run_id
    client.log_batch(run_id, params=[Param(k, str(v)[:6000]) for k, v in flatten(params).items()])
    try:
        yield StageRun(client, run_id, parent_id)
    except BaseException:
        client.set_terminated(run_id, status="FAILED")
        raise
    client.set_terminated(run_id, status="FINISHED")
    client.set_terminated(parent_id, status="FINISHED")
