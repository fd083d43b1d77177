"""The trainer's arguments from the training profile, and the optimizer steps they make."""

from __future__ import annotations

import math
from pathlib import Path

import torch

from medical_matryoshka.core.sections import EvalConfig, TrainConfig
from medical_matryoshka.retrieval.dev_evaluator import dev_metric
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


def training_args(cfg: TrainConfig, output_dir: Path, full_dim: int, has_dev: bool, eval_cfg: EvalConfig):
    """SentenceTransformerTrainingArguments: the recipe, this machine's precision, per-epoch dev and checkpoints.

    The best checkpoint is chosen by the full dimension's dev primary metric.
    """
    from sentence_transformers import SentenceTransformerTrainingArguments

    cuda = torch.cuda.is_available()
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
        batch_sampler=cfg.batch_sampler,
        seed=cfg.seed,
        eval_strategy="epoch" if has_dev else "no",
        save_strategy="epoch",
        save_total_limit=2,
        load_best_model_at_end=has_dev,
        metric_for_best_model=dev_metric(full_dim, eval_cfg) if has_dev else None,
        greater_is_better=True,
        logging_steps=cfg.logging_steps,
        report_to="none",
        disable_tqdm=False,
        dataloader_pin_memory=cuda,
    )
