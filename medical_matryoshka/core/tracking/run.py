"""A stage's MLflow run as the stage sees it: logging that never sinks the stage, the final state, links."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from medical_matryoshka.core.dims import dim_label
from medical_matryoshka.core.errors import first_line
from medical_matryoshka.core.tracking.identity import flatten, metric_name
from medical_matryoshka.core.tracking.store import tracking_uri
from medical_matryoshka.core.tracking.sweep import remember_pending

# ...which MLflow 3.17's UI does not honour in a fresh browser (checked in headless Chromium): the runs table
# opens in model-training mode only with workflowType=machine_learning in the URL, and with metric columns
# only through a shared view, an experiment tag the URL names (viewStateShareKey). runs_table_link builds it.
SHARED_VIEW = "training"
SHARED_VIEW_TAG = f"mlflow.sharedViewState.{SHARED_VIEW}"
VIEW_PARAMS = ("lr", "epochs", "batch_size")  # the sweep knobs shown beside the metrics
ERROR_TAG = "error"  # on a stage run that failed: the error line the terminal showed
# A final state the store does not take (a server restarting) is retried this long, then kept in PENDING_DIR
# for the next stage to write: a stage that succeeded is never swept as KILLED because its end was not heard.
END_RETRY_SECONDS = 60.0


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

    def log_params(self, params: Mapping[str, Any]) -> None:
        """Log nested values as the stage run's params under flattened names (what a stage chose from the data)."""
        from mlflow.entities import Param

        flat = flatten(params)
        self._call("log_batch", self.run_id, params=[Param(k, str(v)[:6000]) for k, v in flat.items()])

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
        remember_pending(self.run_id, status, self.parent_id, parent_status)
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
    dimension's test NDCG@10, the full dimension's change over its base, the training minutes and the sweep
    knobs. Columns of an `earlier` view (other models' dims) are kept."""
    columns = [f"metrics.`{dim_label(d)}.ndcg10`" for d in dims]
    if dims:
        columns.append(f"metrics.`{dim_label(dims[0])}.ndcg10_change`")
    columns += ["metrics.`train.minutes`", *(f"params.`{p}`" for p in VIEW_PARAMS)]
    try:
        kept = json.loads(earlier)["selectedColumns"] if earlier else []
    except (ValueError, KeyError, TypeError):
        kept = []
    selected = list(dict.fromkeys([*kept, *columns]))
    return json.dumps(
        {"selectedColumns": selected, "runsExpanded": {}, "orderByKey": "attributes.start_time", "orderByAsc": False}
    )
