"""Stage `train`: fine-tune the base model with MatryoshkaLoss over (Cached)MNRL on the prepared pairs.

With train.pca_rotation the base model first gets an orthogonal PCA layer fitted on the training split
(training.add_pca_rotation); with train.passage_pairs a second data set of same-abstract passage pairs.

Evaluates on the dev split at every dimension after each epoch, keeps the best checkpoint by the full
dimension's dev NDCG@10, and saves the model with the model card sentence-transformers generates.
An interrupted run resumes from its last checkpoint when rerun with the same params and data.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import subprocess
import sys
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
    add_pca_rotation,
    build_loss,
    check_train_pairs,
    checkpoint_key,
    dev_history,
    is_main_process,
    latest_checkpoint,
    optimizer_steps,
    passage_pairs,
    training_args,
    training_texts,
    world_size,
)


def launch_distributed(nproc: int) -> int:
    """Rerun this stage under torchrun with `nproc` processes on this machine; DDP does the rest.

    Across machines, start `torchrun --nnodes ... -m stages.train` on each yourself (README "Distributed
    training"): a stage that already runs under torchrun (WORLD_SIZE set) does not relaunch.
    """
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"]
    print(f"train.nproc={nproc}: {' '.join(cmd[1:])} -m stages.train", flush=True)
    return subprocess.run([*cmd, "-m", "stages.train"], check=False).returncode


def main() -> None:
    from datasets import Dataset
    from sentence_transformers import SentenceTransformerTrainer

    ctx = config.stage_context()
    params, model_cfg, paths = ctx.params, ctx.model, ctx.paths
    eval_cfg = config.section(EvalConfig, params, "eval")
    cfg = config.train_config(params)
    if cfg.nproc > 1 and "WORLD_SIZE" not in os.environ:
        sys.exit(launch_distributed(cfg.nproc))
    main_process = is_main_process()

    train_file = require_input(Path(paths.pairs) / "train.parquet", "mine")
    pairs, dropped = check_train_pairs(pd.read_parquet(train_file), cfg)
    prepared = None  # the prepare stage's (doc_id, anchor, positive) pairs, read only when an option needs them
    if cfg.passage_pairs or cfg.pca_rotation:
        prepared = pd.read_parquet(require_input(Path(paths.prepared) / "train.parquet", "prepare"))
    datasets = {"claims": pairs}
    if cfg.passage_pairs:
        datasets["passages"] = passage_pairs(prepared, cfg.seed)
    dev = load_retrieval_set(Path(paths.prepared) / "dev.json", allow_empty=True)
    model = load_model(model_cfg)
    model.model_card_data.base_model = model_cfg.name
    rotation = {}
    if cfg.pca_rotation:  # from the training split only; deterministic, so a resumed run rebuilds the same layer
        texts = training_texts(prepared)
        fit_start = time.perf_counter()
        rotation = add_pca_rotation(model, texts, model_cfg.dims, eval_cfg.batch_size)
        rotation["pca_seconds"] = round(time.perf_counter() - fit_start, 1)
        if main_process:
            print(f"PCA rotation from {len(texts)} training texts, variance kept: {rotation}")

    stage_params = {"train": dataclasses.asdict(cfg), "model": params["model"]}
    checkpoints = Path(paths.checkpoints) / checkpoint_key(stage_params, train_file)
    resume = latest_checkpoint(checkpoints)
    steps = optimizer_steps([len(d) for d in datasets.values()], cfg, world_size())
    if main_process:
        print(
            f"training on {len(pairs)} pairs ({dropped} duplicates dropped)"
            + (f" and {len(datasets['passages'])} passage pairs" if cfg.passage_pairs else "")
            + f", {steps} optimizer steps"
            + (f" over {world_size()} processes" if world_size() > 1 else "")
            + (f", resuming from {resume}" if resume else "")
        )
    tracked = ctx.track("train", stage_params) if main_process else contextlib.nullcontext()
    with tracked as run:
        trainer = SentenceTransformerTrainer(
            model=model,
            args=training_args(cfg, checkpoints, model_cfg.dims[0], dev is not None, eval_cfg.batch_size),
            train_dataset=(
                {name: Dataset.from_pandas(d, preserve_index=False) for name, d in datasets.items()}
                if len(datasets) > 1
                else Dataset.from_pandas(pairs, preserve_index=False)
            ),
            loss=build_loss(model, cfg, model_cfg.dims),
            evaluator=MatryoshkaRetrievalEvaluator(dev, model_cfg.dims, eval_cfg) if dev else None,
            callbacks=[MlflowLogCallback(run)] if run else [],
        )
        start = time.perf_counter()
        result = trainer.train(resume_from_checkpoint=resume)
        seconds = time.perf_counter() - start
        trainer.accelerator.wait_for_everyone()
        if not main_process:
            return
        history = dev_history(trainer.state.log_history, model_cfg.dims)
        eval_seconds = sum(e.get("eval_runtime", 0.0) for e in trainer.state.log_history)
        summary = {
            "train_pairs": len(pairs),
            "passage_pairs": len(datasets.get("passages", [])),
            **rotation,
            "duplicate_pairs_dropped": dropped,
            "processes": world_size(),
            "precision": "bf16" if trainer.args.bf16 else "fp16" if trainer.args.fp16 else "fp32",
            "optimizer_steps": trainer.state.global_step,
            "train_loss": result.training_loss,
            "train_seconds": round(seconds, 1),
            "dev_eval_seconds": round(eval_seconds, 1),
            # training only (the per-epoch dev evaluation excluded), all processes together
            "pairs_per_second": round(sum(map(len, datasets.values())) * cfg.epochs / (seconds - eval_seconds), 2),
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
