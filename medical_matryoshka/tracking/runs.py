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
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from medical_matryoshka.errors import Interrupted, PipelineError, first_line

PIPELINE_TAG = "pipeline_key"
# MLflow 3 opens an experiment on its GenAI overview unless it is marked as model training.
TRAINING_EXPERIMENT = {"mlflow.experimentKind": "custom_model_development"}
# ...which MLflow 3.17's UI does not honour in a fresh browser (checked in headless Chromium): the runs table
# opens in model-training mode only with workflowType=machine_learning in the URL, and with metric columns
# only through a shared view, an experiment tag the URL names (viewStateShareKey). runs_table_link builds it.
SHARED_VIEW = "training"
SHARED_VIEW_TAG = f"mlflow.sharedViewState.{SHARED_VIEW}"
VIEW_PARAMS = ("lr", "epochs", "batch_size")  # the sweep knobs shown beside the metrics
HOST_TAG, PID_TAG = "stage_host", "stage_pid"  # who runs a stage: a RUNNING run whose process is gone was killed
LAUNCHER_TAG = "launcher_pid"  # on a parent: the `dvc` (first non-shell ancestor) running its current stage
ERROR_TAG = "error"  # on a stage run that failed: the error line the terminal showed
# A final state the store does not take (a server restarting) is retried this long, then kept in PENDING_DIR
# for the next stage to write: a stage that succeeded is never swept as KILLED because its end was not heard.
END_RETRY_SECONDS = 60.0
PENDING_DIR = ".cache/tracking"  # under the DVC repository root, one <run_id>.json per unwritten final state
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


def file_store_problem(uri: str) -> str | None:
    """MLflow 3 refuses its file store (./mlruns, file:...) unless MLFLOW_ALLOW_FILE_STORE is set."""
    if not uri.startswith("file:") and ("://" in uri or uri.startswith("databricks")):
        return None
    if os.environ.get("MLFLOW_ALLOW_FILE_STORE", "").lower() in ("1", "true"):
        return None
    return (
        f"MLflow tracking store {uri} is MLflow's file store, which MLflow 3 refuses (maintenance mode); use "
        "a database, e.g. MLFLOW_TRACKING_URI=sqlite:///$PWD/mlflow.db (`mlflow migrate-filestore` moves "
        "existing runs), or set MLFLOW_ALLOW_FILE_STORE=true"
    )


def check_tracking(unreachable: str) -> bool:
    """Whether to track: a remote store must answer within seconds, and the store must be one MLflow takes.
    Otherwise: stop with one line (`tracking.unreachable: fail`) or say so and run untracked (`skip`)."""
    uri = tracking_uri()
    refused = file_store_problem(uri)
    if refused is not None:
        message, fix = refused, "or"
    else:
        problem = server_problem(uri)
        if problem is None:
            return True
        message = f"MLflow tracking server {uri} is unreachable ({problem})"
        fix = "start it, unset MLFLOW_TRACKING_URI to track in the local store, or"
    if unreachable == "skip":
        print(f"warning: {message}; this stage runs without tracking (tracking.unreachable=skip)", file=sys.stderr)
        return False
    raise PipelineError(f"{message}; {fix} run without tracking: -S tracking.unreachable=skip")


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


def _shortened(text: str, limit: int = 300) -> str:
    """`text` cut at the last sentence end within `limit` characters (never mid-sentence where one ends)."""
    if len(text) <= limit:
        return text
    cut = max(text.rfind(". ", 0, limit), text.rfind("; ", 0, limit))
    return text[: cut + 1] if cut > 0 else text[:limit].rsplit(" ", 1)[0] + " ..."


def warn_tracking_failed(err: Exception) -> None:
    print(
        f"warning: MLflow tracking failed ({_shortened(first_line(err))}); outputs are kept, this stage goes on "
        "untracked",
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
        self.ended = False

    def parent_link(self) -> str | None:
        """Where a person sees the pipeline's parent run: the server's page, or how to open the local store."""
        if self.client is None or self.failed:
            return None
        return _page_link(f"#/experiments/{self.experiment_id}/runs/{self.parent_id}")

    def runs_table_link(self) -> str | None:
        """The experiment's runs table, in model-training mode with the summary metrics as columns."""
        if self.client is None or self.failed:
            return None
        return _page_link(runs_table_page(self.experiment_id))

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

    def end(self, status: str, parent_status: str, error: str | None = None) -> None:
        """The stage run's final state, and the parent's: SCHEDULED while later stages are still to run.
        Tried even after a logging failure (the store may be back) for END_RETRY_SECONDS; a state the store
        still does not take is kept in PENDING_DIR and written by the next stage that opens a run."""
        if self.client is None or self.ended:
            return
        self.ended = True
        if error:
            self._call("set_tag", self.run_id, ERROR_TAG, error[:5000], after_failure=True)
        deadline = time.monotonic() + END_RETRY_SECONDS
        while True:
            if self._call("set_terminated", self.run_id, status=status, after_failure=True) and self._end_parent(
                parent_status
            ):
                return
            if time.monotonic() >= deadline:
                break
            time.sleep(min(3.0, max(0.0, deadline - time.monotonic())))
        _remember_pending(self.run_id, status, self.parent_id, parent_status)
        print(
            f"warning: the tracking store did not take this run's final state ({status}); the next stage to start "
            "writes it",
            file=sys.stderr,
        )

    def _end_parent(self, status: str) -> bool:
        if status == "SCHEDULED":
            return self._call("update_run", self.parent_id, status=status, after_failure=True)
        return self._call("set_terminated", self.parent_id, status=status, after_failure=True)


def runs_table_page(experiment_id: str) -> str:
    return f"#/experiments/{experiment_id}/runs?workflowType=machine_learning&viewStateShareKey={SHARED_VIEW}"


def _page_link(page: str) -> str:
    uri = tracking_uri()
    if uri.startswith(("http://", "https://")):
        return f"{uri.rstrip('/')}/{page}"
    return f"`mlflow ui --backend-store-uri {uri}`, then http://127.0.0.1:5000/{page}"


def shared_view(dims: list[int], earlier: str | None = None) -> str:
    """The runs table's shared view (MLflow's own format): parents nested, newest first, and as columns each
    dimension's test NDCG@10, the full dimension's gain, the training minutes and the sweep knobs. Columns of
    an `earlier` view (other models' dims) are kept."""
    columns = [f"metrics.`d{d:04d}.ndcg10`" for d in dims]  # retrieval.tables.dim_label's names
    if dims:
        columns.append(f"metrics.`d{dims[0]:04d}.gain`")
    columns += ["metrics.`train.minutes`", *(f"params.`{p}`" for p in VIEW_PARAMS)]
    try:
        kept = json.loads(earlier)["selectedColumns"] if earlier else []
    except (ValueError, KeyError, TypeError):
        kept = []
    selected = list(dict.fromkeys([*kept, *columns]))
    return json.dumps(
        {"selectedColumns": selected, "runsExpanded": {}, "orderByKey": "attributes.start_time", "orderByAsc": False}
    )


def _pending_dir() -> Path:
    return _repo_root() / PENDING_DIR


def _remember_pending(run_id: str, status: str, parent_id: str, parent_status: str) -> None:
    from medical_matryoshka.atomic import write_json

    record = {
        "uri": tracking_uri(),
        "run": run_id,
        "status": status,
        "parent": parent_id,
        "parent_status": parent_status,
    }
    try:
        write_json(_pending_dir() / f"{run_id}.json", record)
    except OSError as err:  # a full disk, say: the sweep will call the run KILLED, which the warning explains
        print(f"warning: could not keep the run's final state in {_pending_dir()} ({err})", file=sys.stderr)


def apply_pending(client) -> None:
    """Write the final states earlier stages could not (their store was away), then forget them. A state newer
    than the record (the parent moved on) is left as it is."""
    folder = _pending_dir()
    for record_file in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        try:
            record = json.loads(record_file.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            record_file.unlink(missing_ok=True)
            continue
        if record.get("uri") != tracking_uri():
            continue  # another store's run
        if client.get_run(record["run"]).info.status == "RUNNING":
            client.set_terminated(record["run"], status=record["status"])
        parent = client.get_run(record["parent"]).info.status
        if parent == "RUNNING":
            if record["parent_status"] == "SCHEDULED":
                client.update_run(record["parent"], status="SCHEDULED")
            else:
                client.set_terminated(record["parent"], status=record["parent_status"])
        record_file.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def end_orphaned_runs(client, exp_id: str) -> None:
    """Mark KILLED the stage runs (and their parents) left RUNNING by processes of this host that are gone
    (`kill -9`, a lost machine), and parents left RUNNING by a `dvc` that is gone (a stage killed between
    reopening its parent and creating its own run)."""
    host = socket.gethostname()
    running = client.search_runs(
        [exp_id], filter_string=f"attributes.status = 'RUNNING' and tags.{HOST_TAG} = '{host}'", max_results=1000
    )
    for run in running:  # stage runs carry the stage's pid; parents the pid of the `dvc` running their stage
        tags = run.data.tags
        pid, launcher = tags.get(PID_TAG, ""), tags.get(LAUNCHER_TAG, "")
        if pid.isdigit() and not _alive(int(pid)):
            client.set_terminated(run.info.run_id, status="KILLED")
            client.set_terminated(tags["mlflow.parentRunId"], status="KILLED")
        elif PIPELINE_TAG in tags and launcher.isdigit() and not _alive(int(launcher)):
            client.set_terminated(run.info.run_id, status="KILLED")
    # SCHEDULED (its last stage finished, more to run) with its `dvc` gone: that dvc ran all it was going to.
    # Mostly DVC found the later stages up to date and skipped them (a rerun whose outputs came out the same),
    # else it was asked for part of the pipeline (`dvc repro mine`). Either way no stage of it will run.
    scheduled = client.search_runs(
        [exp_id], filter_string=f"attributes.status = 'SCHEDULED' and tags.{HOST_TAG} = '{host}'", max_results=1000
    )
    for run in scheduled:
        launcher = run.data.tags.get(LAUNCHER_TAG, "")
        if PIPELINE_TAG in run.data.tags and launcher.isdigit() and not _alive(int(launcher)):
            client.set_tag(
                run.info.run_id, "ended_by", f"sweep: dvc (pid {launcher}) exited after this run's last stage"
            )
            client.set_terminated(run.info.run_id, status="FINISHED")


def launcher_pid() -> int:
    """The process that runs this stage: `dvc` (or whatever started it), past the shells DVC starts it through."""
    from medical_matryoshka.lifetime import launching_ancestors

    return launching_ancestors(os.getppid())[-1]


def _create_experiment(client, experiment: str, uri: str) -> str:
    """A new experiment's id; on a shared server another machine's first stage may create it at the same moment,
    and then that one is used."""
    from mlflow.exceptions import MlflowException

    try:
        return client.create_experiment(experiment, artifact_location=artifact_root(uri), tags=TRAINING_EXPERIMENT)
    except MlflowException as err:
        exp = client.get_experiment_by_name(experiment)
        if err.error_code != "RESOURCE_ALREADY_EXISTS" or exp is None:
            raise
        return exp.experiment_id


def _open_runs(stage: str, params: Mapping[str, Any], experiment: str, all_params: Mapping[str, Any]) -> StageRun:
    """Find or create this execution's parent run, sweep orphaned runs, create the stage's run."""
    import mlflow
    from mlflow.entities import Param
    from mlflow.tracking import MlflowClient

    uri = tracking_uri()
    mlflow.set_tracking_uri(uri)
    client = MlflowClient()
    exp = client.get_experiment_by_name(experiment)
    exp_id = exp.experiment_id if exp else _create_experiment(client, experiment, uri)
    dims = (all_params.get("model") or {}).get("dims") if isinstance(all_params.get("model"), Mapping) else None
    earlier = (exp.tags if exp else {}).get(SHARED_VIEW_TAG)
    view = shared_view(list(dims or []), earlier)
    if view != earlier:
        client.set_experiment_tag(exp_id, SHARED_VIEW_TAG, view)
    apply_pending(client)
    end_orphaned_runs(client, exp_id)
    key, run_name, tags = pipeline_identity()
    owner = {HOST_TAG: socket.gethostname(), PID_TAG: str(os.getpid())}
    launcher = {HOST_TAG: owner[HOST_TAG], LAUNCHER_TAG: str(launcher_pid())}
    # Only parent runs carry the pipeline tag. An unfinished parent (SCHEDULED between stages, FAILED or KILLED
    # before a rerun) is this execution going on; a FINISHED one is never reopened: a rerun gets its own parent.
    found = client.search_runs([exp_id], filter_string=f"tags.{PIPELINE_TAG} = '{key}'", max_results=100)
    going_on = [r for r in found if r.info.status != "FINISHED"]
    if going_on:
        parent_id, run_name = going_on[0].info.run_id, going_on[0].info.run_name
        client.update_run(parent_id, status="RUNNING")
        for tag, value in launcher.items():
            client.set_tag(parent_id, tag, value)
    else:
        if found:
            run_name = f"{run_name[:228]} (run {len(found) + 1})"
        parent = client.create_run(exp_id, run_name=run_name, tags={PIPELINE_TAG: key, **tags, **launcher})
        parent_id = parent.info.run_id
        flat = flatten(all_params)
        client.log_batch(parent_id, params=[Param(k, str(v)[:6000]) for k, v in flat.items()])
    child = client.create_run(
        exp_id,
        run_name=f"{run_name} / {stage}",  # overlaid curves of a sweep's runs are told apart by name
        tags={"mlflow.parentRunId": parent_id, "stage": stage, **tags, **owner},
    )
    run_id = child.info.run_id
    client.log_batch(run_id, params=[Param(k, str(v)[:6000]) for k, v in flatten(params).items()])
    return StageRun(client, run_id, parent_id, exp_id, run_name)


def open_stage_run(
    stage: str, params: Mapping[str, Any], experiment: str, all_params: Mapping[str, Any], enabled: bool | None = None
) -> StageRun:
    """This stage's run, RUNNING under the pipeline's parent, opened when the stage starts (so a stage that stops
    before its work, or is killed, leaves a run that says so); a handle that logs nothing when tracking is off
    or the store fails now. `enabled`: the stage's earlier `check_tracking` (None: check now)."""
    for name, value in HTTP_DEFAULTS.items():
        os.environ.setdefault(name, value)
    if enabled if enabled is not None else check_tracking("fail"):
        try:
            return _open_runs(stage, params, experiment, all_params)
        except Exception as err:  # noqa: BLE001 - a store that fails now must not stop the stage
            warn_tracking_failed(err)
    return StageRun(None)


@contextmanager
def stage_run(
    stage: str,
    params: Mapping[str, Any],
    experiment: str,
    all_params: Mapping[str, Any],
    final: bool = True,
    enabled: bool | None = None,
    run: StageRun | None = None,
    verify: Callable[[], None] | None = None,
) -> Iterator[StageRun]:
    """Start `stage`'s run nested under this pipeline execution's parent run.

    `params` are the keys the stage reads (logged on its run); `all_params` (the whole params.yaml)
    goes on the parent, so the UI's run comparison lines up the knobs of a sweep. The stage run ends
    FINISHED, FAILED (an error) or KILLED (a signal); the parent follows a failure or a kill, and is
    FINISHED only after a `final` stage (the pipeline's last), SCHEDULED after the others. `enabled`:
    the stage's earlier `check_tracking` (None: check now, stopping if a remote store is unreachable).
    `run`: the stage's run if already opened (open_stage_run). `verify`: called before the run is FINISHED;
    what it raises fails the stage like an error in its body.
    """
    if run is None:
        run = open_stage_run(stage, params, experiment, all_params, enabled)
    try:
        yield run
        if verify is not None:
            verify()
    except (Interrupted, KeyboardInterrupt) as err:
        run.end("KILLED", "KILLED", error=f"stopped by {err}")
        raise
    except BaseException as err:
        run.end("FAILED", "FAILED", error=first_line(err))
        raise
    run.end("FINISHED", "FINISHED" if final else "SCHEDULED")
