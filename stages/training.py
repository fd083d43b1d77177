"""Matryoshka fine-tuning with sentence-transformers' trainer: loss, arguments, data checks, logging."""

from __future__ import annotations

import hashlib
import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from sentence_transformers.sentence_transformer.evaluation import SentenceEvaluator
from transformers import TrainerCallback

from stages.config import TrainConfig
from stages.errors import PipelineError
from stages.retrieval import RetrievalSet, score_all_dims
from stages.tracking import StageRun

DEV_NAME = "dev"


def check_train_pairs(pairs: pd.DataFrame, cfg: TrainConfig) -> tuple[pd.DataFrame, int]:
    """Reject what would break training; drop exact duplicate pairs (reported), before any training starts.

    Anchors repeated with different positives are expected (one claim, several passages): the
    no_duplicates batch sampler keeps them out of each other's batches, where they would be false negatives.
    """
    if list(pairs.columns[:2]) != ["anchor", "positive"]:
        raise PipelineError(f"training data must start with columns anchor, positive; got {list(pairs.columns)}")
    text = pairs.fillna("").astype(str)
    empty = int((text.apply(lambda col: col.str.strip()) == "").any(axis=1).sum())
    if empty:
        raise PipelineError(f"{empty} training row(s) have an empty text; fix the data source and rerun prepare")
    deduped = pairs.drop_duplicates().reset_index(drop=True)
    dropped = len(pairs) - len(deduped)
    if cfg.batch_size > len(deduped):
        raise PipelineError(
            f"batch_size {cfg.batch_size} exceeds the {len(deduped)} training pairs; "
            f"lower it (-S batch_size=N) or use more data"
        )
    return deduped, dropped


def passage_pairs(prepared: pd.DataFrame, seed: int) -> pd.DataFrame:
    """One (passage, other passage of the same abstract) row per training document with two or more passages.

    The test counts every passage of a claim's abstract as relevant; these rows pull an abstract's passages
    together. One row per document, so no batch holds two passages of one abstract as each other's negatives.
    """
    rng = np.random.default_rng(seed)
    rows = []
    for _, group in prepared.groupby("doc_id", sort=True):
        texts = list(dict.fromkeys(group["positive"]))
        if len(texts) >= 2:
            i, j = rng.choice(len(texts), size=2, replace=False)
            rows.append((texts[i], texts[j]))
    return pd.DataFrame(rows, columns=["anchor", "positive"])


def training_texts(prepared: pd.DataFrame) -> list[str]:
    """The training split's distinct claims and passages, in first-seen order: what the PCA rotation is fitted on."""
    return list(dict.fromkeys([*prepared["anchor"], *prepared["positive"]]))


def add_pca_rotation(model, texts: list[str], dims: tuple[int, ...], batch_size: int) -> dict[str, float]:
    """Append an orthogonal linear layer whose rows are the principal axes of the model's embeddings of `texts`.

    A rotation leaves every full-dimension cosine similarity unchanged, so training starts from exactly the
    base model's full-dimension ranking, while truncating to the first d components now keeps the d directions
    of largest variance instead of d arbitrary coordinates (the dimensionality-reduction recipe of the
    sentence-transformers examples, without the reduction), then a Normalize. Fine-tuning trains the layer with
    the rest.
    Returns the share of the variance the first d components hold, for every Matryoshka dim.
    """
    from sentence_transformers.base.modules import Dense, Normalize

    emb = model.encode(texts, batch_size=batch_size, convert_to_tensor=True, normalize_embeddings=True)
    emb = emb.double().cpu()
    centered = emb - emb.mean(dim=0)
    values, vectors = torch.linalg.eigh(centered.T @ centered)
    order = torch.argsort(values, descending=True)
    rotation = vectors[:, order].T.contiguous().float()
    width = emb.shape[1]
    model.append(Dense(width, width, bias=False, activation_function=None, init_weight=rotation))
    model.append(Normalize())  # training moves the layer off orthogonal: keep unit-length outputs (dot = cosine)
    share = values[order].clamp(min=0).cumsum(0) / values.clamp(min=0).sum()
    return {f"pca_variance_dim_{d}": round(float(share[d - 1]), 4) for d in dims}


def optimizer_steps(n_pairs: int | list[int], cfg: TrainConfig, processes: int = 1) -> int:
    """Optimizer steps the trainer will take (batches per epoch / accumulation x epochs).

    Several data sets (a list of sizes) are batched separately, each batch from one of them. Under DDP a step
    takes `processes` batches, one per process, and the last incomplete one is dropped.
    """
    per_step = cfg.batch_size * processes
    sizes = n_pairs if isinstance(n_pairs, list) else [n_pairs]
    batches = sum(n // per_step if processes > 1 else math.ceil(n / per_step) for n in sizes)
    return math.ceil(cfg.epochs * math.ceil(batches / cfg.grad_accum))


def world_size() -> int:
    """Processes in this training run (torchrun sets WORLD_SIZE; 1 when run plainly)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_main_process() -> bool:
    """Only global rank 0 writes outputs and logs to MLflow."""
    return int(os.environ.get("RANK", "0")) == 0


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AVX-512 BF16 or AMX), where autocast pays off."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def resolve_precision(precision: str, cuda: bool, cuda_bf16: bool, cpu_bf16: bool = False) -> str:
    """The precision training really uses.

    auto: bf16 mixed precision on a CUDA GPU that has bf16, and on a CPU with native bf16 (AVX-512 BF16 /
    AMX: 1.6x the pairs per second of fp32 at the same test NDCG@10, README "Performance"); fp32 otherwise.
    fp16 needs CUDA (it needs a loss scaler).
    """
    if precision == "auto":
        return "bf16" if (cuda and cuda_bf16) or (not cuda and cpu_bf16) else "fp32"
    if precision == "fp16" and not cuda:
        raise PipelineError("train.precision=fp16 needs a CUDA GPU; use bf16 or fp32 on CPU (-S train.precision=bf16)")
    if precision == "bf16" and cuda and not cuda_bf16:
        raise PipelineError("this GPU has no bf16; use -S train.precision=fp16 (or fp32)")
    return precision


def build_loss(model, cfg: TrainConfig, dims: tuple[int, ...]):
    """MatryoshkaLoss over (Cached)MultipleNegativesRankingLoss at every configured dimension.

    Under DDP every process's batch is gathered, so each query sees the whole global batch as negatives,
    as in a single-process run with nproc x batch_size.
    """
    from sentence_transformers.sentence_transformer.losses import (
        CachedMultipleNegativesRankingLoss,
        MatryoshkaLoss,
        MultipleNegativesRankingLoss,
    )

    common = {
        "scale": cfg.scale,
        "directions": cfg.directions,
        "hardness_mode": cfg.hardness_mode,
        "hardness_strength": cfg.hardness_strength,
        "gather_across_devices": world_size() > 1,
    }
    if cfg.loss == "cached_mnrl":
        inner = CachedMultipleNegativesRankingLoss(model, mini_batch_size=cfg.mini_batch_size, **common)
    else:
        inner = MultipleNegativesRankingLoss(model, **common)
    weights = list(cfg.matryoshka_weights) if cfg.matryoshka_weights else None
    if weights is not None and len(weights) != len(dims):
        raise PipelineError(f"train.matryoshka_weights has {len(weights)} values for {len(dims)} dims {list(dims)}")
    return MatryoshkaLoss(model, inner, matryoshka_dims=list(dims), matryoshka_weights=weights)


def training_args(cfg: TrainConfig, output_dir: Path, full_dim: int, has_dev: bool, eval_batch_size: int):
    from sentence_transformers import SentenceTransformerTrainingArguments

    cuda = torch.cuda.is_available()
    precision = resolve_precision(
        cfg.precision, cuda, cuda and torch.cuda.is_bf16_supported(), not cuda and cpu_has_native_bf16()
    )
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
        per_device_eval_batch_size=eval_batch_size,
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
        metric_for_best_model=f"eval_{DEV_NAME}_dim_{full_dim}_cosine_ndcg@10" if has_dev else None,
        greater_is_better=True,
        logging_steps=cfg.logging_steps,
        report_to="none",
        disable_tqdm=False,
        dataloader_pin_memory=torch.cuda.is_available(),
    )


class MatryoshkaRetrievalEvaluator(SentenceEvaluator):
    """Dev evaluator for the trainer: every Matryoshka dim from one encoding pass (see retrieval.py).

    Returns sentence-transformers' names (dev_dim_384_cosine_ndcg@10, ...) and fills the model card's
    "Training Logs" with NDCG@10 at every dimension, like the card's own table.
    """

    def __init__(self, rs: RetrievalSet, dims: tuple[int, ...], eval_cfg, name: str = DEV_NAME):
        super().__init__()
        self.rs, self.dims, self.eval_cfg, self.name = rs, dims, eval_cfg, name
        self.primary_metric = f"dim_{dims[0]}_cosine_ndcg@10"

    def __call__(self, model, output_path=None, epoch: int = -1, steps: int = -1) -> dict[str, float]:
        scores = score_all_dims(model, self.rs, self.dims, self.eval_cfg)
        metrics = {f"{dim}_{metric}": value for dim, values in scores.items() for metric, value in values.items()}
        metrics = self.prefix_name_to_metrics(metrics, self.name)
        self.store_metrics_in_model_card_data(model, metrics, epoch, steps)
        logs = model.model_card_data.training_logs
        if logs:  # the card's table shows every dimension's NDCG@10, not only the primary one
            logs[-1].update({k: v for k, v in metrics.items() if k.endswith("_cosine_ndcg@10")})
        return metrics


class MlflowLogCallback(TrainerCallback):
    """Send the trainer's logs (loss, learning rate, dev metrics per epoch) to the stage's MLflow run."""

    def __init__(self, run: StageRun):
        self.run = run

    def on_log(self, args, state, control, logs: dict[str, Any] | None = None, **kwargs):
        if logs:
            numeric = {k: v for k, v in logs.items() if isinstance(v, int | float) and not isinstance(v, bool)}
            self.run.log_metrics(numeric, step=state.global_step)


def checkpoint_key(params: dict[str, Any], data_file: Path) -> str:
    """Checkpoints are reused only for the same training params and the same data."""
    digest = hashlib.sha256(json.dumps(params, sort_keys=True, default=str).encode())
    digest.update(data_file.read_bytes())
    return digest.hexdigest()[:16]


def latest_checkpoint(folder: Path) -> str | None:
    """The trainer's newest checkpoint-N folder, if an interrupted run left one."""
    found = sorted(folder.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[-1]))
    return str(found[-1]) if found else None


def dev_history(log_history: list[dict[str, Any]], dims: tuple[int, ...]) -> list[dict[str, float]]:
    """Per-epoch dev NDCG@10 at every dim from the trainer's log history (the card's Training Logs)."""
    rows = []
    for entry in log_history:
        if f"eval_{DEV_NAME}_dim_{dims[0]}_cosine_ndcg@10" in entry:
            row = {"epoch": entry["epoch"], "step": entry["step"]}
            row.update({f"dim_{d}": entry[f"eval_{DEV_NAME}_dim_{d}_cosine_ndcg@10"] for d in dims})
            rows.append(row)
    return rows
