"""MLflow tracking: one parent run per pipeline execution, one nested run per stage.

A pipeline execution is a DVC experiment (DVC_EXP_NAME) or, for plain `dvc repro`, the git commit plus
the content of params.yaml. Each stage is its own process, so the parent is found by its tag (or created)
in the shared store. Nothing happens at import time.
"""

from __future__ import annotations

import functools
import hashlib
import os
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from medical_matryoshka.errors import Interrupted, PipelineError, first_line

PIPELINE_TAG = "pipeline_key"
HOST_TAG, PID_TAG = "stage_host", "stage_pid"  # who runs a stage: a RUNNING run whose process is gone was killed
# A server that goes away mid-run costs seconds, not MLflow's default minutes of retries (the user's settings win).
HTTP_DEFAULTS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_TIMEOUT": "20"}


def tracking_uri() -> str:
    """$MLFLOW_TRACKING_URI, else a SQLite store at the DVC repository root (shared by queued runs)."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{_repo_root() / 'mlflow.db'}"


def _repo_root() -> Path:
    # DVC points DVC_ROOT at the parent repository even for queued runs in temp copies.
    return Path(os.environ.get("DVC_ROOT") or Path.cwd()).resolve()


def artifact_root(uri: str) -> str | None:
    """Artifacts of a SQLite store go beside its file (<repo>/mlartifacts for the default store), so a
    queued run's temporary copy never holds them; a server or file store picks its own."""
    if uri.startswith("sqlite:///"):
        return (Path(uri.removeprefix("sqlite:///")).resolve().parent / "mlartifacts").as_uri()
    return None


@functools.cache
def server_problem(uri: str, timeout: float = 5.0) -> str | None:
    """Why the tracking server at `uri` cannot be reached (None for a reachable server or a local store)."""
    if not uri.startswith(("http://", "https://")):
        return None
    health = f"{uri.rstrip('/')}/health"
    try:
        with urllib.request.urlopen(health, timeout=timeout):
            return None
    except urllib.error.HTTPError as err:
        if err.code in (401, 403):
            return None  # an MLflow server behind authentication: MLflow's own errors say more
        return f"HTTP {err.code} from {health}: not an MLflow tracking server"
    except (OSError, ValueError) as err:
        return str(getattr(err, "reason", err))


def check_tracking(unreachable: str) -> bool:
    """Whether to track: a remote store must answer within seconds. Unreachable: stop with one line
    (`tracking.unreachable: fail`) or say so and run untracked (`skip`)."""
    uri = tracking_uri()
    problem = server_problem(uri)
    if problem is None:
        return True
    message = f"MLflow tracking server {uri} is unreachable ({problem})"
    if unreachable == "skip":
        print(f"warning: {message}; this stage runs without tracking (tracking.unreachable=skip)", file=sys.stderr)
        return False
    raise PipelineError(
        f"{message}; start it, unset MLFLOW_TRACKING_URI to track in the local store, "
        "or run without tracking: -S tracking.unreachable=skip"
    )


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


def warn_tracking_failed(err: Exception) -> None:
    print(
        f"warning: MLflow tracking failed ({first_line(err)[:200]}); outputs are kept, this stage goes on untracked",
        file=sys.stderr,
    )


class StageRun:
    """Handle for logging into a stage's run and its pipeline parent run.

    Logging never sinks a stage: the first failure prints one warning and turns logging off, so outputs
    that are already written stay. A handle without a client (tracking skipped) logs nothing.
    """

    def __init__(self, client, run_id: str = "", parent_id: str = "") -> None:
        self.client, self.run_id, self.parent_id = client, run_id, parent_id
        self.failed = False

    def _call(self, method: str, *args, after_failure: bool = False, **kwargs) -> bool:
        """client.method(...); False if skipped or failed. After one failure only `after_failure` calls run."""
        if self.client is None or (self.failed and not after_failure):
            return False
        try:
            getattr(self.client, method)(*args, **kwargs)
            return True
        except Exception as err:  # noqa: BLE001 - any tracking failure: keep the work, stop logging
            if not self.failed:
                warn_tracking_failed(err)
            self.failed = True
            return False

    def log_metrics(self, metrics: Mapping[str, Any], parent: bool = False, step: int = 0) -> None:
        """Log nested numeric metrics under flattened names; also on the parent if `parent`."""
        from mlflow.entities import Metric
        from mlflow.utils.time import get_current_time_millis

        now = get_current_time_millis()
        flat = flatten(metrics)
        batch = [Metric(metric_name(k), float(v), now, step) for k, v in flat.items() if isinstance(v, int | float)]
        for run_id in (self.run_id, self.parent_id) if parent else (self.run_id,):
            self._call("log_batch", run_id, metrics=batch)

    def log_artifact(self, path: str | Path) -> None:
        """Attach a file (a plot, a report) to the stage's run."""
        self._call("log_artifact", self.run_id, str(path))

    def end(self, status: str, parent_status: str) -> None:
        """The stage run's final state, and the parent's: SCHEDULED while later stages are still to run.
        Tried even after a logging failure (the store may be back), given up at the first failure."""
        if not self._call("set_terminated", self.run_id, status=status, after_failure=True):
            return
        if parent_status == "SCHEDULED":
            self._call("update_run", self.parent_id, status=parent_status, after_failure=True)
        else:
            self._call("set_terminated", self.parent_id, status=parent_status, after_failure=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def end_orphaned_runs(client, exp_id: str) -> None:
    """Mark KILLED the stage runs (and their parents) left RUNNING by processes of this host that are gone."""
    host = socket.gethostname()
    running = client.search_runs(
        [exp_id], filter_string=f"attributes.status = 'RUNNING' and tags.{HOST_TAG} = '{host}'", max_results=1000
    )
    for run in running:
        pid = run.data.tags.get(PID_TAG, "")
        if pid.isdigit() and not _alive(int(pid)):
            client.set_terminated(run.info.run_id, status="KILLED")
            client.set_terminated(run.data.tags["mlflow.parentRunId"], status="KILLED")


def _open_runs(stage: str, params: Mapping[str, Any], experiment: str, all_params: Mapping[str, Any]) -> StageRun:
    """Find or create this execution's parent run, sweep orphaned runs, create the stage's run."""
    import mlflow
    from mlflow.entities import Param
    from mlflow.tracking import MlflowClient

    uri = tracking_uri()
    mlflow.set_tracking_uri(uri)
    client = MlflowClient()
    exp = client.get_experiment_by_name(experiment)
    exp_id = exp.experiment_id if exp else client.create_experiment(experiment, artifact_location=artifact_root(uri))
    end_orphaned_runs(client, exp_id)
    key, run_name, tags = pipeline_identity()
    # Only parent runs carry the pipeline tag.
    found = client.search_runs([exp_id], filter_string=f"tags.{PIPELINE_TAG} = '{key}'", max_results=1)
    if found:
        parent_id = found[0].info.run_id
        client.update_run(parent_id, status="RUNNING")
    else:
        parent = client.create_run(exp_id, run_name=run_name, tags={PIPELINE_TAG: key, **tags})
        parent_id = parent.info.run_id
        flat = flatten(all_params)
        client.log_batch(parent_id, params=[Param(k, str(v)[:6000]) for k, v in flat.items()])
    owner = {HOST_TAG: socket.gethostname(), PID_TAG: str(os.getpid())}
    child = client.create_run(
        exp_id, run_name=stage, tags={"mlflow.parentRunId": parent_id, "stage": stage, **tags, **owner}
    )
    run_id = child.info.run_id
    client.log_batch(run_id, params=[Param(k, str(v)[:6000]) for k, v in flatten(params).items()])
    return StageRun(client, run_id, parent_id)


@contextmanager
def stage_run(
    stage: str,
    params: Mapping[str, Any],
    experiment: str,
    all_params: Mapping[str, Any],
    final: bool = True,
    enabled: bool | None = None,
) -> Iterator[StageRun]:
    """Start `stage`'s run nested under this pipeline execution's parent run.

    `params` are the keys the stage reads (logged on its run); `all_params` (the whole params.yaml)
    goes on the parent, so the UI's run comparison lines up the knobs of a sweep. The stage run ends
    FINISHED, FAILED (an error) or KILLED (a signal); the parent follows a failure or a kill, and is
    FINISHED only after a `final` stage (the pipeline's last), SCHEDULED after the others. `enabled`:
    the stage's earlier `check_tracking` (None: check now, stopping if a remote store is unreachable).
    """
    for name, value in HTTP_DEFAULTS.items():
        os.environ.setdefault(name, value)
    run = StageRun(None)
    if enabled if enabled is not None else check_tracking("fail"):
        try:
            run = _open_runs(stage, params, experiment, all_params)
        except Exception as err:  # noqa: BLE001 - a store that fails now must not stop the stage
            warn_tracking_failed(err)
    try:
        yield run
    except (Interrupted, KeyboardInterrupt):
        run.end("KILLED", "KILLED")
        raise
    except BaseException:
        run.end("FAILED", "FAILED")
        raise
    run.end("FINISHED", "FINISHED" if final else "SCHEDULED")
