"""The trainer's logs: every value to the stage's MLflow run, the curves a comparison needs to the parent run,
and a short terminal line per dimension at each dev evaluation."""

from __future__ import annotations

from typing import Any

from transformers import TrainerCallback
from transformers.trainer_callback import ProgressCallback

from medical_matryoshka.core.dims import dim_label
from medical_matryoshka.core.sections import EvalConfig
from medical_matryoshka.core.tracking.run import StageRun
from medical_matryoshka.retrieval.dev_evaluator import MEAN, dev_metric


def _numeric(logs: dict[str, Any]) -> dict[str, float]:
    return {k: v for k, v in logs.items() if isinstance(v, int | float) and not isinstance(v, bool)}


class MlflowLogCallback(TrainerCallback):
    """Each trainer log to the stage's run at the trainer's global step; the training loss and the dev
    primary metric at every dimension also to the parent run (`train.loss`, `d0384.dev_ndcg10`), so that
    comparing the parents of a sweep shows curves."""

    def __init__(self, run: StageRun, dims: tuple[int, ...], eval_cfg: EvalConfig):
        self.run, self.dims, self.eval_cfg = run, dims, eval_cfg

    def on_log(self, args, state, control, logs: dict[str, Any] | None = None, **kwargs):
        numeric = _numeric(logs or {})
        if not numeric:
            return
        self.run.log_metrics(numeric, step=state.global_step)
        label = self.eval_cfg.primary_measure.replace("@", "")
        curves: dict[str, float] = {}
        if dev_metric(self.dims[0], self.eval_cfg) in numeric:
            curves = {f"{dim_label(d)}.dev_{label}": numeric[dev_metric(d, self.eval_cfg)] for d in self.dims}
        if "loss" in numeric:
            curves["train.loss"] = numeric["loss"]
        if curves:
            self.run.log_metrics(curves, step=state.global_step, parent=True)


class CompactProgress(ProgressCallback):
    """transformers' progress bar with the loss in its postfix and, after each dev evaluation, one line: the
    primary metric's mean and its value at every dimension, instead of the dictionary of every metric (all of
    them stay in MLflow and the card)."""

    def __init__(self, dims: tuple[int, ...], eval_cfg: EvalConfig):
        super().__init__()
        self.dims, self.eval_cfg = dims, eval_cfg

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or self.training_bar is None or not logs:
            return
        if "loss" in logs:
            self.training_bar.set_postfix(loss=f"{logs['loss']:.4g}", refresh=False)
            if self.training_bar.disable:  # not a terminal (errors.quiet_progress_bars): a plain line instead
                self.training_bar.write(
                    f"step {state.global_step}/{state.max_steps}  epoch {state.epoch:.2f}  loss {logs['loss']:.4g}"
                )
        if dev_metric(self.dims[0], self.eval_cfg) not in logs:
            return
        by_dim = "  ".join(f"{dim} {logs[dev_metric(dim, self.eval_cfg)]:.4f}" for dim in self.dims)
        mean = logs.get(dev_metric(MEAN, self.eval_cfg))
        self.training_bar.write(
            f"step {state.global_step} (epoch {state.epoch:.2f})  dev {self.eval_cfg.primary_measure}"
            + (f"  mean {mean:.4f} |" if mean is not None else "")
            + f"  {by_dim}"
        )
