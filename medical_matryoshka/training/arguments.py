"""The trainer's arguments from the training profile, and the schedule they make: optimizer steps, dev
evaluations and when training stops."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import torch

from medical_matryoshka.core.sections import EvalConfig, TrainConfig
from medical_matryoshka.training.runtime import machine_precision, world_size


def optimizer_steps(n_pairs: int | list[int], cfg: TrainConfig, processes: int = 1) -> int:
    """Optimizer steps the trainer will take (batches per epoch / accumulation x epochs).

    Several data sets (a list of sizes) are batched separately, each batch from one of them. Under DDP a step
    takes `processes` batches, one per process, and the last incomplete one is dropped.
    """
    per_step = cfg.batch_size * processes
    sizes = n_pairs if isinstance(n_pairs, list) else [n_pairs]
    batches = sum(n // per_step if processes > 1 else math.ceil(n / per_step) for n in sizes)
    return math.ceil(cfg.epochs * math.ceil(batches / cfg.grad_accum))


@dataclasses.dataclass(frozen=True)
class Schedule:
    """How long training may run and how it watches the dev split.

    A dev evaluation (and a checkpoint) every `eval_steps` optimizer steps, train.evals_per_epoch of them an
    epoch (every step where an epoch has fewer steps); training stops once the dev metric (`selection`) has not
    improved for `patience` evaluations in a row (None: it runs every epoch), and the best checkpoint is kept.
    `epochs` is the upper bound.
    """

    steps_per_epoch: int
    max_steps: int
    eval_steps: int | None  # None: no dev split, nothing to watch
    patience: int | None
    selection: str | None  # the trainer's log key of the dev metric that picks the checkpoint and stops training

    @property
    def evals_per_epoch(self) -> float:
        return self.steps_per_epoch / self.eval_steps if self.eval_steps else 0.0


def make_schedule(sizes: list[int], cfg: TrainConfig, processes: int, selection: str | None) -> Schedule:
    """The schedule of a run over data sets of `sizes` rows (`selection` None: no dev split)."""
    per_epoch = optimizer_steps(sizes, dataclasses.replace(cfg, epochs=1.0), processes)
    eval_steps = max(1, round(per_epoch / cfg.evals_per_epoch)) if selection else None
    return Schedule(
        per_epoch, optimizer_steps(sizes, cfg, processes), eval_steps, cfg.patience if selection else None, selection
    )


def training_args(cfg: TrainConfig, output_dir: Path, schedule: Schedule, eval_cfg: EvalConfig):
    """SentenceTransformerTrainingArguments: the recipe, this machine's precision, dev evaluations and checkpoints
    on the schedule; the best checkpoint is chosen by `schedule.selection`, and the early-stopping counter is
    restored with a resumed checkpoint."""
    from sentence_transformers import SentenceTransformerTrainingArguments

    cuda = torch.cuda.is_available()
    has_dev = schedule.selection is not None
    precision = machine_precision(cfg.precision)
    return SentenceTransformerTrainingArguments(
        bf16=precision == "bf16",
        fp16=precision == "fp16",
        tf32=cfg.tf32 if cuda and torch.cuda.get_device_capability()[0] >= 8 else None,
        use_cpu=not cuda,
        ddp_backend="gloo" if world_size() > 1 and not cuda else None,
        # gathering negatives across processes needs equal batch sizes on every process
        dataloader_drop_last=world_size() > 1,
        output_dir=str(output_dir),
        num_train_epochs=cfg.epochs,
        per_device_train_batch_size=cfg.batch_size,
        per_device_eval_batch_size=eval_cfg.batch_size,
        gradient_accumulation_steps=cfg.grad_accum,
        learning_rate=cfg.lr,
        lr_scheduler_type=cfg.scheduler,
        warmup_steps=cfg.warmup_ratio,  # transformers 5: a float below 1 is a ratio of the total steps
        # relevance_aware: the trainer's get_batch_sampler builds it (training/trainer.py)
        batch_sampler="no_duplicates" if cfg.batch_sampler == "relevance_aware" else cfg.batch_sampler,
        seed=cfg.seed,
        eval_strategy="steps" if has_dev else "no",
        eval_steps=schedule.eval_steps,
        save_strategy="steps" if has_dev else "epoch",
        save_steps=schedule.eval_steps or 500,
        save_total_limit=2,
        load_best_model_at_end=has_dev,
        metric_for_best_model=schedule.selection,
        greater_is_better=True,
        restore_callback_states_from_checkpoint=True,  # the early-stopping counter survives a resume
        logging_steps=cfg.logging_steps,
        report_to="none",
        disable_tqdm=False,
        dataloader_pin_memory=cuda,
    )


def training_plan(
    data, cfg: TrainConfig, schedule: Schedule, batches: dict, lengths: dict, dev_queries: int, processes: int
) -> dict:
    """What this run chose from the data, as the terminal says it and MLflow records it (params `chosen.*`):
    the text length, the schedule, the stopping rule and the false negatives the batches avoid."""
    stock = batches["no_duplicates"]["total"]
    left = batches["relevance_aware"]["total"] if cfg.batch_sampler == "relevance_aware" else stock
    return {
        "max_seq_length": lengths["max_seq_length"],
        "max_seq_length_setting": lengths["setting"],
        "passages_cut": lengths["passages"].get("share_cut", 0.0),
        "pairs": len(data.pairs),
        "passage_pairs": len(data.datasets.get("passages", [])),
        "batch_size": cfg.batch_size,
        "processes": processes,
        "steps_per_epoch": schedule.steps_per_epoch,
        "max_epochs": cfg.epochs,
        "max_steps": schedule.max_steps,
        "dev_queries": dev_queries,
        "eval_steps": schedule.eval_steps,
        "patience": schedule.patience,
        "select_by": cfg.select_by,
        "batch_sampler": cfg.batch_sampler,
        "false_negatives_stock": stock,
        "false_negatives_left": left,
        "batches": batches,
    }
