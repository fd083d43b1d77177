"""The trainer's logs (loss, learning rate, dev metrics per epoch) sent to the stage's MLflow run."""

from __future__ import annotations

from typing import Any

from transformers import TrainerCallback

from medical_matryoshka.tracking.runs import StageRun


class MlflowLogCallback(TrainerCallback):
    """Log every numeric value of each trainer log to the stage's run, at the trainer's global step."""

    def __init__(self, run: StageRun):
        self.run = run

    def on_log(self, args, state, control, logs: dict[str, Any] | None = None, **kwargs):
        if logs:
            numeric = {k: v for k, v in logs.items() if isinstance(v, int | float) and not isinstance(v, bool)}
            self.run.log_metrics(numeric, step=state.global_step)
