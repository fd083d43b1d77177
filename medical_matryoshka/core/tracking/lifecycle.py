"""A stage's run opened under its pipeline's parent (found by tag or created) and ended with the stage."""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from medical_matryoshka.core.errors import Interrupted, first_line
from medical_matryoshka.core.tracking.identity import PIPELINE_TAG, flatten, pipeline_identity
from medical_matryoshka.core.tracking.run import SHARED_VIEW_TAG, StageRun, shared_view, warn_tracking_failed
from medical_matryoshka.core.tracking.store import HTTP_DEFAULTS, artifact_root, check_tracking, tracking_uri
from medical_matryoshka.core.tracking.sweep import (
    HOST_TAG,
    LAUNCHER_TAG,
    PID_TAG,
    apply_pending,
    end_orphaned_runs,
    launcher_pid,
)

# MLflow 3 opens an experiment on its GenAI overview unless it is marked as model training.
TRAINING_EXPERIMENT = {"mlflow.experimentKind": "custom_model_development"}


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
    # a new SQLite store announces its table set-up at INFO ("Creating initial MLflow database tables..."):
    # the store's business, not the stage's line
    logging.getLogger("mlflow.store.db.utils").setLevel(logging.WARNING)
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
