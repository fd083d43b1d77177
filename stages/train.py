"""Stage `train`: fine-tune the base model with MatryoshkaLoss over (Cached)MNRL on the mined pairs.

Evaluates on the dev split at every dimension after each epoch, keeps the best checkpoint by the full
dimension's dev primary metric, and saves the model with the model card sentence-transformers generates.
An interrupted run resumes from its last checkpoint when rerun with the same params and data.
"""

from __future__ import annotations

import contextlib
import shutil
import sys
from pathlib import Path

from medical_matryoshka.core.atomic import output_dir, write_json
from medical_matryoshka.core.dims import dim_of
from medical_matryoshka.core.errors import free_bytes, no_space
from medical_matryoshka.core.runtime import stage_main
from medical_matryoshka.core.sections import EvalConfig, ModelConfig, TrainConfig
from medical_matryoshka.core.stage import StageConfig
from medical_matryoshka.retrieval.scoring import load_retrieval_set
from medical_matryoshka.training.arguments import optimizer_steps
from medical_matryoshka.training.checkpoints import (
    KEY_FILE,
    checkpoint_bytes,
    checkpoint_key,
    discard_incomplete,
    exclusive,
    latest_checkpoint,
    set_aside_damaged,
)
from medical_matryoshka.training.data import TrainingData, read_training_data
from medical_matryoshka.training.loss import check_weights
from medical_matryoshka.training.runtime import (
    is_main_process,
    launch_distributed,
    machine_precision,
    under_torchrun,
    world_size,
)
from medical_matryoshka.training.trainer import base_model, build_trainer, run_training, training_summary


def announce(data: TrainingData, cfg: TrainConfig, rotation: dict, resume: str | None) -> None:
    steps = optimizer_steps([len(rows) for rows in data.datasets.values()], cfg, world_size())
    if rotation:
        kept = ", ".join(f"{dim_of(k)} {v:.3f}" for k, v in rotation.items() if "dim_" in k)
        print(
            f"PCA rotation from {len(data.rotation_texts)} training texts in {rotation['pca_seconds']} s; "
            f"variance in the first d components: {kept}"
        )
    passages = data.datasets.get("passages")
    print(
        f"training on {len(data.pairs)} pairs ({data.duplicates_dropped} duplicates dropped)"
        + (f" and {len(passages)} passage pairs" if passages is not None else "")
        + f", {steps} optimizer steps"
        + (f" over {world_size()} processes" if world_size() > 1 else "")
        + (f", resuming from {resume}" if resume else "")
    )


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
) -> None:
    """datasets -> trainer -> train -> summary; the main process saves the model and metrics and logs."""
    paths = stage.paths
    dev = load_retrieval_set(paths.prepared_dev, allow_empty=True)
    model, rotation = base_model(model_cfg, data.rotation_texts, eval_cfg.batch_size)
    check_space(model, checkpoints, Path(paths.model))
    resume = resume_point(checkpoints)
    if is_main_process():
        announce(data, cfg, rotation, resume)
    with stage.track() if is_main_process() else contextlib.nullcontext() as run:
        trainer = build_trainer(model, data, dev, cfg, model_cfg.dims, eval_cfg, checkpoints, run)
        outcome = run_training(trainer, resume)
        if not is_main_process():
            return
        summary = training_summary(trainer, outcome, data, cfg.epochs, rotation, model_cfg.dims, eval_cfg)
        model.model_card_data._training_start_time = None  # no wall time in the card: same weights, same folder
        with output_dir(paths.model) as out:
            model.save(str(out))
            (out / KEY_FILE).write_text(checkpoints.name + "\n", encoding="utf-8")
        write_json(paths.train_metrics, summary)
        run.log_metrics({k: v for k, v in summary.items() if not isinstance(v, list)})
        run.log_metrics({"train.minutes": summary["train_seconds"] / 60}, parent=True)


@stage_main("train", begin=False)  # the MLflow run is opened by the process that trains (rank 0)
def main(stage: StageConfig) -> None:
    cfg, model_cfg, eval_cfg = stage.sections("train", "model", "eval")
    machine_precision(cfg.precision)  # a recipe this machine cannot run stops now, not after the model load
    check_weights(cfg, model_cfg.dims)
    if cfg.nproc > 1 and not under_torchrun():
        sys.exit(launch_distributed(cfg.nproc, "stages.train"))
    if is_main_process():
        stage.begin()

    data = read_training_data(stage.paths, cfg)
    checkpoints = Path(stage.paths.checkpoints) / checkpoint_key(stage.params, data.pairs_file)
    with exclusive(checkpoints) if is_main_process() else contextlib.nullcontext():
        train_and_save(stage, cfg, model_cfg, eval_cfg, data, checkpoints)
        if is_main_process():
            shutil.rmtree(checkpoints, ignore_errors=True)


if __name__ == "__main__":
    main()
