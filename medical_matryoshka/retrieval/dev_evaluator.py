"""The trainer's dev evaluation: every Matryoshka dim from one encoding pass, under the names
sentence-transformers gives them (dev_dim_384_cosine_ndcg@10), the primary metric's mean over the dims
(dev_mean_cosine_ndcg@10), and their history in the logs."""

from __future__ import annotations

from typing import Any

from sentence_transformers.sentence_transformer.evaluation import SentenceEvaluator

from medical_matryoshka.core.dims import dim_key
from medical_matryoshka.core.errors import PipelineError
from medical_matryoshka.core.sections import EvalConfig
from medical_matryoshka.retrieval.scoring import RetrievalSet, score_all_dims

DEV_NAME = "dev"


MEAN = "mean"  # the primary metric averaged over the Matryoshka dims


def dev_metric(dim: int | str, eval_cfg: EvalConfig) -> str:
    """The trainer's log key of the primary metric at `dim` (or its mean over the dims, `dim` = "mean"):
    eval_dev_dim_384_cosine_ndcg@10, eval_dev_mean_cosine_ndcg@10."""
    name = MEAN if dim == MEAN else dim_key(dim)
    return f"eval_{DEV_NAME}_{name}_{eval_cfg.primary_metric}"


def selection_metric(select_by: str | int, dims: tuple[int, ...], eval_cfg: EvalConfig) -> str:
    """The dev metric that keeps the best checkpoint and stops training (train.select_by): the mean over the
    dims, the full or smallest dim, or a dim of model.dims."""
    if select_by == MEAN:
        return dev_metric(MEAN, eval_cfg)
    if select_by in ("full", "smallest"):
        return dev_metric(dims[0] if select_by == "full" else dims[-1], eval_cfg)
    if select_by not in dims:
        raise PipelineError(
            f"params.yaml: train.select_by {select_by} is not one of model.dims {list(dims)}; use mean, full, "
            "smallest or one of them"
        )
    return dev_metric(int(select_by), eval_cfg)


class MatryoshkaRetrievalEvaluator(SentenceEvaluator):
    """Dev evaluator for the trainer: the primary metric at every dim and its mean (which of them keeps the best
    checkpoint is the trainer's metric_for_best_model, from train.select_by).

    Fills the model card's "Training Logs" with the primary metric at every dimension, like the card's own table.
    """

    def __init__(self, rs: RetrievalSet, dims: tuple[int, ...], eval_cfg: EvalConfig, name: str = DEV_NAME):
        super().__init__()
        self.rs, self.dims, self.eval_cfg, self.name = rs, dims, eval_cfg, name
        self.primary_metric = f"{dim_key(dims[0])}_{eval_cfg.primary_metric}"

    def __call__(self, model, output_path=None, epoch: int = -1, steps: int = -1) -> dict[str, float]:
        scores = score_all_dims(model, self.rs, self.dims, self.eval_cfg, split=self.name)
        metrics = {f"{dim}_{metric}": value for dim, values in scores.items() for metric, value in values.items()}
        primary = self.eval_cfg.primary_metric
        metrics[f"{MEAN}_{primary}"] = sum(values[primary] for values in scores.values()) / len(scores)
        metrics = self.prefix_name_to_metrics(metrics, self.name)
        self.store_metrics_in_model_card_data(model, metrics, epoch, steps)
        logs = model.model_card_data.training_logs
        if logs:  # the card's table shows every dimension's primary metric, not only the full dimension's
            logs[-1].update({k: v for k, v in metrics.items() if k.endswith(f"_{self.eval_cfg.primary_metric}")})
        return metrics


def dev_history(log_history: list[dict[str, Any]], dims: tuple[int, ...], eval_cfg: EvalConfig) -> list[dict]:
    """The dev primary metric at every dim and its mean, at every evaluation, from the trainer's log history."""
    rows = []
    for entry in log_history:
        if dev_metric(dims[0], eval_cfg) in entry:
            row = {"epoch": round(entry["epoch"], 4), "step": entry["step"]}
            row.update({dim_key(d): entry[dev_metric(d, eval_cfg)] for d in dims})
            if dev_metric(MEAN, eval_cfg) in entry:
                row[MEAN] = entry[dev_metric(MEAN, eval_cfg)]
            rows.append(row)
    return rows
