"""Runs whose process is gone: final states the store did not take, written later; RUNNING runs of dead
processes ended KILLED; SCHEDULED parents of a `dvc` that is gone ended."""

from __future__ import annotations

import json
import os
import socket
import sys
from pathlib import Path

from medical_matryoshka.core.tracking.identity import PIPELINE_TAG
from medical_matryoshka.core.tracking.store import repo_root, tracking_uri

HOST_TAG, PID_TAG = "stage_host", "stage_pid"  # who runs a stage: a RUNNING run whose process is gone was killed
LAUNCHER_TAG = "launcher_pid"  # on a parent: the `dvc` (first non-shell ancestor) running its current stage
PENDING_DIR = ".cache/tracking"  # under the DVC repository root, one <run_id>.json per unwritten final state


def _pending_dir() -> Path:
    return repo_root() / PENDING_DIR


def remember_pending(run_id: str, status: str, parent_id: str, parent_status: str) -> None:
    from medical_matryoshka.core.atomic import write_json

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
    from medical_matryoshka.core.lifetime import launching_ancestors

    return launching_ancestors(os.getppid())[-1]
