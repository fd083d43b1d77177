"""The trainer's per-epoch dev evaluation: every Matryoshka dim from one encoding pass, under the
names sentence-transformers gives them (dev_dim_384_cosine_ndcg@10), and their history in the logs."""

from __future__ import annotations

from typing import Any

from sentence_transformers.sentence_transformer.evaluation import SentenceEvaluator

from medical_matryoshka.core.dims import dim_key
from medical_matryoshka.core.sections import EvalConfig
from medical_matryoshka.retrieval.scoring import RetrievalSet, score_all_dims

DEV_NAME = "dev"


def dev_metric(dim: int, eval_cfg: EvalConfig) -> str:
    """The trainer's log key of the primary metric at `dim`: eval_dev_dim_384_cosine_ndcg@10."""
    return f"eval_{DEV_NAME}_{dim_key(dim)}_{eval_cfg.primary_metric}"


class MatryoshkaRetrievalEvaluator(SentenceEvaluator):
    """Dev evaluator for the trainer; its primary metric is the full dimension's (best checkpoint).

    Fills the model card's "Training Logs" with the primary metric at every dimension, like the card's own table.
    """

    def __init__(self, rs: RetrievalSet, dims: tuple[int, ...], eval_cfg: EvalConfig, name: str = DEV_NAME):
        super().__init__()
        self.rs, self.dims, self.eval_cfg, self.name = rs, dims, eval_cfg, name
        self.primary_metric = f"{dim_key(dims[0])}_{eval_cfg.primary_metric}"

    def __call__(self, model, output_path=None, epoch: int = -1, steps: int = -1) -> dict[str, float]:
        scores = score_all_dims(model, self.rs, self.dims, self.eval_cfg, split=self.name)
        metrics = {f"{dim}_{metric}": value for dim, values in scores.items() for metric, value in values.items()}
        metrics = self.prefix_name_to_metrics(metrics, self.name)
        self.store_metrics_in_model_card_data(model, metrics, epoch, steps)
        logs = model.model_card_data.training_logs
        if logs:  # the card's table shows every dimension's primary metric, not only the full dimension's
            logs[-1].update({k: v for k, v in metrics.items() if k.endswith(f"_{self.eval_cfg.primary_metric}")})
        return metrics


def dev_history(log_history: list[dict[str, Any]], dims: tuple[int, ...], eval_cfg: EvalConfig) -> list[dict]:
    """Per-epoch dev primary metric at every dim from the trainer's log history (the card's Training Logs)."""
    rows = []
    for entry in log_history:
        if dev_metric(dims[0], eval_cfg) in entry:
            row = {"epoch": entry["epoch"], "step": entry["step"]}
            row.update({dim_key(d): entry[dev_metric(d, eval_cfg)] for d in dims})
            rows.append(row)
    return rows
