"""Stage `train`: fine-tune the base model with MatryoshkaLoss over (Cached)MNRL on the prepared pairs.

Evaluates on the dev split at every dimension after each epoch, keeps the best checkpoint by the full
dimension's dev NDCG@10, and saves the model with the model card sentence-transformers generates.
An interrupted run resumes from its last checkpoint when rerun with the same params and data.
"""

from __future__ import annotations

import dataclasses
import shutil
import time
from pathlib import Path

import pandas as pd

from stages import config
from stages.atomic import output_dir, write_json
from stages.config import EvalConfig
from stages.errors import require_input, run_stage
from stages.models import load_model
from stages.retrieval import load_retrieval_set
from stages.training import (
    MatryoshkaRetrievalEvaluator,
    MlflowLogCallback,
    build_loss,
    check_train_pairs,
    checkpoint_key,
    dev_history,
    latest_checkpoint,
    optimizer_steps,
    training_args,
)


def main() -> None:
    from datasets import Dataset
    from sentence_transformers import SentenceTransformerTrainer

    ctx = config.stage_context()
    params, model_cfg, paths = ctx.params, ctx.model, ctx.paths
    eval_cfg = config.section(EvalConfig, params, "eval")
    cfg = config.train_config(params)

    train_file = require_input(Path(paths.pairs) / "train.parquet", "mine")
    pairs, dropped = check_train_pairs(pd.read_parquet(train_file), cfg)
    dev = load_retrieval_set(Path(paths.prepared) / "dev.json", allow_empty=True)
    model = load_model(model_cfg)
    model.model_card_data.base_model = model_cfg.name

    stage_params = {"train": dataclasses.asdict(cfg), "model": params["model"]}
    checkpoints = Path(paths.checkpoints) / checkpoint_key(stage_params, train_file)
    resume = latest_checkpoint(checkpoints)
    steps = optimizer_steps(len(pairs), cfg)
    print(
        f"training on {len(pairs)} pairs ({dropped} duplicates dropped), {steps} optimizer steps"
        + (f", resuming from {resume}" if resume else "")
    )
    with ctx.track("train", stage_params) as run:
        trainer = SentenceTransformerTrainer(
            model=model,
            args=training_args(cfg, checkpoints, model_cfg.dims[0], dev is not None, eval_cfg.batch_size),
            train_dataset=Dataset.from_pandas(pairs, preserve_index=False),
            loss=build_loss(model, cfg, model_cfg.dims),
            evaluator=MatryoshkaRetrievalEvaluator(dev, model_cfg.dims, eval_cfg) if dev else None,
            callbacks=[MlflowLogCallback(run)],
        )
        start = time.perf_counter()
        result = trainer.train(resume_from_checkpoint=resume)
        seconds = time.perf_counter() - start
        history = dev_history(trainer.state.log_history, model_cfg.dims)
        summary = {
            "train_pairs": len(pairs),
            "duplicate_pairs_dropped": dropped,
            "optimizer_steps": trainer.state.global_step,
            "train_loss": result.training_loss,
            "train_seconds": round(seconds, 1),
            "pairs_per_second": round(len(pairs) * cfg.epochs / seconds, 2),
            "best_dev_ndcg@10": trainer.state.best_metric,
            "dev_ndcg@10_by_epoch": history,
        }
        with output_dir(paths.model) as out:
            model.save(str(out))
        write_json(paths.train_metrics, summary)
        run.log_metrics({k: v for k, v in summary.items() if k != "dev_ndcg@10_by_epoch"})
    shutil.rmtree(checkpoints, ignore_errors=True)


if __name__ == "__main__":
    run_stage(main)
