"""MLflow tracking: one parent run per pipeline execution, one nested run per stage.

A pipeline execution is a DVC experiment (DVC_EXP_NAME) or, for plain `dvc repro`, the git commit plus
the content of params.yaml. Each stage is its own process, so the parent is found by its tag (or created)
in the shared store. Nothing happens at import time.
"""

from __future__ import annotations

import functools
import hashlib
import json
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
# MLflow 3 opens an experiment on its GenAI overview unless it is marked as model training.
TRAINING_EXPERIMENT = {"mlflow.experimentKind": "custom_model_development"}
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


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], capture_output=True, text=True, check=True)
        return out.stdout
    except (OSError, subprocess.CalledProcessError):
        return None


def _git_head() -> str:
    return (_git("rev-parse", "HEAD") or "no-commit").strip()


def _show_value(value: Any) -> str:
    return json.dumps(value, separators=(",", ":")) if isinstance(value, list | dict) else str(value)


def param_overrides(params: Mapping[str, Any], committed: Mapping[str, Any] | None) -> dict[str, str]:
    """The flattened keys whose values differ from the committed params.yaml (a sweep's `-S` knobs)."""
    if committed is None:
        return {}
    now, before = flatten(params), flatten(committed)
    return {k: _show_value(v) for k, v in now.items() if k not in before or before[k] != v}


# Keys a data profile sets together: one changed names the data set in the run name (data=scifact) instead
DATA_IDENTITY = ("data.source", "data.path", "data.watch")


def short_overrides(changed: Mapping[str, str], params: Mapping[str, Any]) -> dict[str, str]:
    """The run name's view of `changed`: another data set is `data=<its folder or file name>`, not every key
    its profile brings (source, path, watch, published files); the other changed keys stay as they are."""
    if not any(k in changed for k in DATA_IDENTITY):
        return dict(changed)
    short = {k: v for k, v in changed.items() if k not in DATA_IDENTITY and not k.startswith("data.files.")}
    return {**short, "data": Path(str(params["data"]["path"])).name}


def _committed_params(rev: str, params_file: str | Path) -> dict[str, Any] | None:
    import yaml

    text = _git("show", f"{rev}:./{Path(params_file).as_posix()}")  # ./: relative to the working folder
    try:
        return yaml.safe_load(text) if text else None
    except yaml.YAMLError:
        return None


def pipeline_identity(params_file: str | Path = "params.yaml") -> tuple[str, str, dict[str, str]]:
    """(key, run name, tags) of the current pipeline execution.

    The name says what distinguishes the run: the DVC experiment's name (or `repro @<commit>`) and the
    params that differ from the commit's params.yaml; the description (MLflow's note) says it in full.
    """
    import yaml

    exp = os.environ.get("DVC_EXP_NAME")
    text = Path(params_file).read_text(encoding="utf-8")
    if exp:
        rev = os.environ.get("DVC_EXP_BASELINE_REV", "") or _git_head()
        key, label, what = f"exp:{exp}:{rev}", exp, f"DVC experiment `{exp}` on commit `{rev[:7]}`"
        tags = {"dvc_exp_name": exp, "git_commit": rev}
    else:
        rev = _git_head()
        digest = hashlib.sha256(text.encode()).hexdigest()[:12]
        at = f"@{rev[:7]}" if rev != "no-commit" else "(no commit)"
        key, label, what = f"repro:{rev}:{digest}", f"repro {at}", f"`dvc repro` {at}"
        tags = {"git_commit": rev}
    committed = _committed_params(rev, params_file)
    params = yaml.safe_load(text) or {}
    changed = param_overrides(params, committed)
    knobs = " ".join(f"{k}={v}" for k, v in changed.items())
    if committed is None:  # no commit to compare with
        name, note = label, f"{what}: params.yaml not in a commit"
    elif changed:
        short = " ".join(f"{k}={v}" for k, v in short_overrides(changed, params).items())
        name, note = f"{label} {short}", f"{what}: the commit's params.yaml with {knobs}"
    else:
        name, note = f"{label} (committed params)", f"{what}: the commit's params.yaml as is"
    return key, name[:240], {**tags, "mlflow.note.content": note, "overrides": knobs or "none"}


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

    def __init__(
        self, client, run_id: str = "", parent_id: str = "", experiment_id: str = "", parent_name: str = ""
    ) -> None:
        self.client, self.run_id, self.parent_id, self.experiment_id = client, run_id, parent_id, experiment_id
        self.parent_name = parent_name  # what distinguishes this pipeline execution (see pipeline_identity)
        self.failed = False

    def parent_link(self) -> str | None:
        """Where a person sees the pipeline's parent run: the server's page, or how to open the local store."""
        if self.client is None or self.failed:
            return None
        page = f"#/experiments/{self.experiment_id}/runs/{self.parent_id}"
        uri = tracking_uri()
        if uri.startswith(("http://", "https://")):
            return f"{uri.rstrip('/')}/{page}"
        return f"`mlflow ui --backend-store-uri {uri}`, then http://127.0.0.1:5000/{page}"

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

    def log_metrics(self, metrics: Mapping[str, Any], step: int = 0, parent: bool = False) -> None:
        """Log nested numeric metrics under flattened names, on the stage's run or (`parent`) on the parent's."""
        from mlflow.entities import Metric
        from mlflow.utils.time import get_current_time_millis

        now = get_current_time_millis()
        flat = flatten(metrics)
        batch = [Metric(metric_name(k), float(v), now, step) for k, v in flat.items() if isinstance(v, int | float)]
        self._call("log_batch", self.parent_id if parent else self.run_id, metrics=batch)

    def set_tag(self, key: str, value: str, parent: bool = False) -> None:
        """Tag the stage's run or (`parent`) the parent's."""
        self._call("set_tag", self.parent_id if parent else self.run_id, key, value)

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
    exp_id = (
        exp.experiment_id
        if exp
        else client.create_experiment(experiment, artifact_location=artifact_root(uri), tags=TRAINING_EXPERIMENT)
    )
    end_orphaned_runs(client, exp_id)
    key, run_name, tags = pipeline_identity()
    # Only parent runs carry the pipeline tag.
    found = client.search_runs([exp_id], filter_string=f"tags.{PIPELINE_TAG} = '{key}'", max_results=1)
    if found:
        parent_id, run_name = found[0].info.run_id, found[0].info.run_name
        client.update_run(parent_id, status="RUNNING")
    else:
        parent = client.create_run(exp_id, run_name=run_name, tags={PIPELINE_TAG: key, **tags})
        parent_id = parent.info.run_id
        flat = flatten(all_params)
        client.log_batch(parent_id, params=[Param(k, str(v)[:6000]) for k, v in flat.items()])
    owner = {HOST_TAG: socket.gethostname(), PID_TAG: str(os.getpid())}
    child = client.create_run(
        exp_id,
        run_name=f"{run_name} / {stage}",  # overlaid curves of a sweep's runs are told apart by name
        tags={"mlflow.parentRunId": parent_id, "stage": stage, **tags, **owner},
    )
    run_id = child.info.run_id
    client.log_batch(run_id, params=[Param(k, str(v)[:6000]) for k, v in flatten(params).items()])
    return StageRun(client, run_id, parent_id, exp_id, run_name)


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
