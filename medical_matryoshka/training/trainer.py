"""Assemble sentence-transformers' trainer from the profile, run it, and summarise what it did."""

from __future__ import annotations

import dataclasses
import shutil
import time
from pathlib import Path
from typing import Any

from medical_matryoshka.core.errors import free_bytes, is_disk_full, no_space
from medical_matryoshka.core.lifetime import ActiveClock
from medical_matryoshka.core.models import load_model
from medical_matryoshka.core.sections import EvalConfig, ModelConfig, TrainConfig
from medical_matryoshka.core.tracking.run import StageRun
from medical_matryoshka.retrieval.dev_evaluator import MatryoshkaRetrievalEvaluator, dev_history
from medical_matryoshka.retrieval.scoring import RetrievalSet
from medical_matryoshka.training.arguments import Schedule, training_args
from medical_matryoshka.training.batches import RelevanceAwareBatchSampler, RelevanceGraph
from medical_matryoshka.training.callbacks import CompactProgress, MlflowLogCallback
from medical_matryoshka.training.checkpoints import MarkCompleteCheckpoints, checkpoint_bytes
from medical_matryoshka.training.data import TrainingData
from medical_matryoshka.training.loss import build_loss
from medical_matryoshka.training.rotation import add_pca_rotation
from medical_matryoshka.training.runtime import world_size


def base_model(model_cfg: ModelConfig, rotation_texts: list[str], batch_size: int) -> tuple[Any, dict[str, float]]:
    """The base model to fine-tune, with the PCA rotation layer when there are texts to fit it on.

    The rotation is fitted on the training split only and is deterministic, so a resumed run rebuilds the
    same layer. Returns the model and the rotation's variance shares and fit time (empty without one).
    """
    model = load_model(model_cfg)
    model.model_card_data.base_model = model_cfg.name
    if not rotation_texts:
        return model, {}
    start = time.perf_counter()
    rotation = add_pca_rotation(model, rotation_texts, model_cfg.dims, batch_size)
    rotation["pca_seconds"] = round(time.perf_counter() - start, 1)
    return model, rotation


def trainer_class(graph: RelevanceGraph | None, directions: tuple[str, ...]):
    """SentenceTransformerTrainer, whose batches are relevance-aware when `graph` is given (the library's
    documented way: override get_batch_sampler)."""
    from sentence_transformers import SentenceTransformerTrainer

    if graph is None:
        return SentenceTransformerTrainer

    class RelevanceAwareTrainer(SentenceTransformerTrainer):
        def get_batch_sampler(self, dataset, batch_size, drop_last, valid_label_columns=None, generator=None, seed=0):
            return RelevanceAwareBatchSampler(
                dataset, batch_size, drop_last, graph, directions, valid_label_columns, generator, seed
            )

    return RelevanceAwareTrainer


def build_trainer(
    model,
    data: TrainingData,
    dev: RetrievalSet | None,
    cfg: TrainConfig,
    schedule: Schedule,
    dims: tuple[int, ...],
    eval_cfg: EvalConfig,
    checkpoints: Path,
    run: StageRun | None,
):
    """SentenceTransformerTrainer with the Matryoshka loss, the dev evaluator on the schedule, early stopping,
    relevance-aware batches (train.batch_sampler) and MLflow logging."""
    from datasets import Dataset
    from transformers import EarlyStoppingCallback
    from transformers.trainer_callback import ProgressCallback

    tables = {name: Dataset.from_pandas(rows, preserve_index=False) for name, rows in data.datasets.items()}
    graph = data.graph if cfg.batch_sampler == "relevance_aware" else None
    stopping = [EarlyStoppingCallback(schedule.patience)] if dev and schedule.patience else []
    trainer = trainer_class(graph, cfg.directions)(
        model=model,
        args=training_args(cfg, checkpoints, schedule, eval_cfg),
        train_dataset=tables if len(tables) > 1 else tables["claims"],  # several: each batch from one of them
        loss=build_loss(model, cfg, dims),
        evaluator=MatryoshkaRetrievalEvaluator(dev, dims, eval_cfg) if dev else None,
        callbacks=[MarkCompleteCheckpoints(), *stopping, *([MlflowLogCallback(run, dims, eval_cfg)] if run else [])],
    )
    trainer.remove_callback(ProgressCallback)  # its per-log dictionaries: 75 dev metrics a line
    trainer.add_callback(CompactProgress(dims, eval_cfg))
    guard_checkpoint_saves(trainer, checkpoint_bytes(model))
    return trainer


def guard_checkpoint_saves(trainer, need: int) -> None:
    """A checkpoint save that fails leaves no torn folder behind (the trainer writes checkpoint-N in place and
    only our completion mark says it is whole), and a full disk is one line naming the folder and the space a
    checkpoint needs. torch.save's own error on a full disk does not say so: the free space decides."""
    from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

    save = trainer._save_checkpoint

    def guarded(model, trial):
        run_dir = Path(trainer.args.output_dir)
        folder = run_dir / f"{PREFIX_CHECKPOINT_DIR}-{trainer.state.global_step}"
        try:
            save(model, trial)
        except Exception as err:
            shutil.rmtree(folder, ignore_errors=True)
            if is_disk_full(err) or free_bytes(run_dir) < need:
                full = no_space(run_dir, need)
                raise type(full)(f"{full}; training resumes from the last complete checkpoint") from err
            raise

    trainer._save_checkpoint = guarded


@dataclasses.dataclass(frozen=True)
class TrainingOutcome:
    training_loss: float
    seconds: float  # this process's training, from the resumed checkpoint on
    resumed_step: int  # 0 without a resume
    resumed_epoch: float


def run_training(trainer, resume: str | None) -> TrainingOutcome:
    """Train (resuming from `resume` if given) and wait for every process."""
    from transformers import TrainerState

    resumed = TrainerState.load_from_json(str(Path(resume) / "trainer_state.json")) if resume else TrainerState()
    clock = ActiveClock()  # a SIGSTOP pause is not training time
    result = trainer.train(resume_from_checkpoint=resume)
    seconds = clock.stop()
    trainer.accelerator.wait_for_everyone()
    return TrainingOutcome(result.training_loss, seconds, resumed.global_step, resumed.epoch or 0.0)


def stopping_summary(trainer, schedule: Schedule) -> dict[str, Any]:
    """Where training stopped and why, and which checkpoint it kept (metrics/train.json `stopped`)."""
    state = trainer.state
    best = state.best_model_checkpoint
    best_step = int(best.rsplit("-", 1)[-1]) if best else state.global_step
    early = state.global_step < schedule.max_steps
    return {
        "reason": "patience" if early else "epochs",
        "at_step": state.global_step,
        "at_epoch": round(state.epoch or 0.0, 2),
        "max_steps": schedule.max_steps,
        "best_step": best_step,
        "best_epoch": round(best_step / schedule.steps_per_epoch, 2),
        "best_dev": state.best_metric,
        "selection": schedule.selection,
        "patience": schedule.patience,
        "eval_steps": schedule.eval_steps,
        "evaluations": sum(schedule.selection in entry for entry in state.log_history) if schedule.selection else 0,
    }


def training_summary(
    trainer, outcome: TrainingOutcome, data: TrainingData, schedule: Schedule, rotation: dict, dims, eval_cfg
) -> dict[str, Any]:
    """metrics/train.json: data, runtime, steps, loss, speed, where it stopped, and the dev curve."""
    log = trainer.state.log_history
    # speed counts this process's work only: after a resume, the steps and dev evaluations since the checkpoint
    eval_seconds = sum(entry.get("eval_runtime", 0.0) for entry in log if entry["step"] > outcome.resumed_step)
    metric = eval_cfg.primary_measure
    trained_rows = data.total_rows * (trainer.state.global_step - outcome.resumed_step) / schedule.steps_per_epoch
    return {
        "train_pairs": len(data.pairs),
        "passage_pairs": len(data.datasets.get("passages", [])),
        **rotation,
        "duplicate_pairs_dropped": data.duplicates_dropped,
        "processes": world_size(),
        "precision": "bf16" if trainer.args.bf16 else "fp16" if trainer.args.fp16 else "fp32",
        "optimizer_steps": trainer.state.global_step,
        "train_loss": outcome.training_loss,
        "train_seconds": round(outcome.seconds, 1),
        "dev_eval_seconds": round(eval_seconds, 1),
        "resumed_from_step": outcome.resumed_step,
        # training only (the dev evaluations excluded), all processes together
        "pairs_per_second": round(trained_rows / max(outcome.seconds - eval_seconds, 1e-9), 2),
        "stopped": stopping_summary(trainer, schedule),
        f"dev_{metric}_curve": dev_history(log, dims, eval_cfg),
    }
