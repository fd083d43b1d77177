"""Stage `train`: fine-tune the base model with MatryoshkaLoss over (Cached)MNRL on the mined pairs.

Chooses from the data and says so (training/plan.py): batches with no in-batch false negatives, dev evaluations
train.evals_per_epoch times an epoch, a stop once the dev metric (train.select_by) has not improved for
train.patience evaluations; keeps the best checkpoint and saves the model with the model card
sentence-transformers generates, at the max_seq_length prepare chose. An interrupted run resumes from its last
checkpoint when rerun with the same params and data.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import sys
from pathlib import Path

from medical_matryoshka.core.atomic import output_dir, write_json
from medical_matryoshka.core.errors import free_bytes, no_space
from medical_matryoshka.core.runtime import stage_main
from medical_matryoshka.core.sections import EvalConfig, ModelConfig, TrainConfig
from medical_matryoshka.core.stage import StageConfig
from medical_matryoshka.reports import plan_report, stopping_report
from medical_matryoshka.retrieval.dev_evaluator import selection_metric
from medical_matryoshka.retrieval.scoring import load_retrieval_set
from medical_matryoshka.training.arguments import make_schedule, training_plan
from medical_matryoshka.training.batches import compare_samplers
from medical_matryoshka.training.checkpoints import (
    KEY_FILE,
    checkpoint_bytes,
    checkpoint_key,
    discard_incomplete,
    exclusive,
    latest_checkpoint,
    set_aside_damaged,
)
from medical_matryoshka.training.data import TrainingData, fitting_batch, read_training_data
from medical_matryoshka.training.loss import check_weights
from medical_matryoshka.training.runtime import (
    is_main_process,
    launch_distributed,
    machine_precision,
    under_torchrun,
    world_size,
)
from medical_matryoshka.training.trainer import base_model, build_trainer, run_training, training_summary


def resume_point(checkpoints: Path) -> str | None:
    """The newest sound checkpoint of an interrupted run; half-written ones are removed and damaged ones set
    aside (main process)."""
    if is_main_process():
        for path in discard_incomplete(checkpoints):
            print(f"removed {path}: an interrupted run left it half written")
        for path, target, why in set_aside_damaged(checkpoints):
            print(f"set aside {path} as {target.name}: it is damaged ({why}); resuming from the one before, if any")
    return latest_checkpoint(checkpoints)


def check_space(model, checkpoints: Path, model_dir: Path) -> None:
    """Stop before training, not after an epoch, when the checkpoint or model folder's disk cannot take a save."""
    need = checkpoint_bytes(model)
    for folder, size in ((checkpoints, need), (model_dir.parent, need // 3)):
        if free_bytes(folder) < size:
            raise no_space(folder, size)


def train_and_save(
    stage: StageConfig,
    cfg: TrainConfig,
    model_cfg: ModelConfig,
    eval_cfg: EvalConfig,
    data: TrainingData,
    checkpoints: Path,
    asked_batch: int,
) -> None:
    """datasets -> trainer -> train -> summary; the main process saves the model and metrics and logs."""
    paths = stage.paths
    dev = load_retrieval_set(paths.prepared_dev, allow_empty=True)
    selection = selection_metric(cfg.select_by, model_cfg.dims, eval_cfg) if dev else None
    schedule = make_schedule([len(rows) for rows in data.datasets.values()], cfg, world_size(), selection)
    model, rotation = base_model(model_cfg, data.rotation_texts, eval_cfg.batch_size)
    check_space(model, checkpoints, Path(paths.model))
    resume = resume_point(checkpoints)
    plan = {}
    if is_main_process():
        batches = compare_samplers(data.pairs, data.graph, cfg.batch_size, cfg.seed, cfg.directions)
        lengths = json.loads(paths.prepared_lengths.read_text(encoding="utf-8"))
        plan = training_plan(data, cfg, schedule, batches, lengths, len(dev.queries) if dev else 0, world_size())
        plan["batch_size_asked"] = asked_batch
        print("\n".join(plan_report(plan, rotation, resume)))
    with stage.track() if is_main_process() else contextlib.nullcontext() as run:
        if run is not None:
            run.log_params({"chosen": {k: v for k, v in plan.items() if k != "batches"}})
        trainer = build_trainer(model, data, dev, cfg, schedule, model_cfg.dims, eval_cfg, checkpoints, run)
        outcome = run_training(trainer, resume)
        if not is_main_process():
            return
        summary = training_summary(trainer, outcome, data, schedule, rotation, model_cfg.dims, eval_cfg)
        summary.update(batch_size_used=cfg.batch_size, batches=plan["batches"])
        print(stopping_report(summary["stopped"], eval_cfg.primary_measure))
        model.model_card_data._training_start_time = None  # no wall time in the card: same weights, same folder
        with output_dir(paths.model) as out:
            model.save(str(out))
            (out / KEY_FILE).write_text(checkpoints.name + "\n", encoding="utf-8")
        write_json(paths.train_metrics, summary)
        run.log_metrics({k: v for k, v in summary.items() if not isinstance(v, list)})
        run.log_metrics({"train.minutes": summary["train_seconds"] / 60}, parent=True)


@stage_main("train", begin=False)  # the MLflow run is opened by the process that trains (rank 0)
def main(stage: StageConfig) -> None:
    cfg, eval_cfg = stage.sections("train", "eval")
    model_cfg = stage.model()  # at the max_seq_length prepare chose
    machine_precision(cfg.precision)  # a recipe this machine cannot run stops now, not after the model load
    check_weights(cfg, model_cfg.dims)
    if cfg.nproc > 1 and not under_torchrun():
        sys.exit(launch_distributed(cfg.nproc, "stages.train"))
    if is_main_process():
        stage.begin()

    data = read_training_data(stage.paths, cfg)
    asked = cfg.batch_size
    cfg = fitting_batch(cfg, len(data.pairs))
    checkpoints = Path(stage.paths.checkpoints) / checkpoint_key(stage.params, data.pairs_file)
    with exclusive(checkpoints) if is_main_process() else contextlib.nullcontext():
        train_and_save(stage, cfg, model_cfg, eval_cfg, data, checkpoints, asked)
        if is_main_process():
            shutil.rmtree(checkpoints, ignore_errors=True)


if __name__ == "__main__":
    main()
