"""Where the MLflow store is and whether it answers: checked before a stage does any work."""

from __future__ import annotations

import functools
import os
import sys
import urllib.error
import urllib.request
from pathlib import Path

from medical_matryoshka.core.errors import PipelineError

# A server that goes away mid-run costs seconds, not MLflow's default minutes of retries (the user's settings win).
HTTP_DEFAULTS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_TIMEOUT": "20"}


def tracking_uri() -> str:
    """$MLFLOW_TRACKING_URI, else a SQLite store at the DVC repository root (shared by queued runs)."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{repo_root() / 'mlflow.db'}"


def repo_root() -> Path:
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
