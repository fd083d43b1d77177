"""Training: input checks before any training, the card's step count, Matryoshka loss, dev logs, resume."""

from __future__ import annotations

import dataclasses

import pandas as pd
import pytest
import yaml

from stages import config
from stages.config import EvalConfig, ModelConfig, TrainConfig
from stages.errors import PipelineError
from stages.retrieval import RetrievalSet
from stages.training import (
    MatryoshkaRetrievalEvaluator,
    build_loss,
    check_train_pairs,
    checkpoint_key,
    dev_history,
    latest_checkpoint,
    optimizer_steps,
    training_args,
)
from tests.conftest import PAIRS, REPO


@pytest.fixture
def params() -> dict:
    return yaml.safe_load((REPO / "params.yaml").read_text())


@pytest.fixture
def tiny_cfg(params) -> TrainConfig:
    cfg = config.train_config(params)
    return dataclasses.replace(
        cfg, lr=1e-4, epochs=2, batch_size=4, grad_accum=1, logging_steps=1, loss="mnrl", matryoshka_weights=None
    )


def pairs() -> pd.DataFrame:
    return pd.DataFrame(PAIRS, columns=["anchor", "positive"])


def test_card_profile_is_the_cards_recipe(tmp_path):
    from stages.compose_params import compose

    out = tmp_path / "params.yaml"
    compose(out, ["train=card"], conf_dir=REPO / "conf")
    composed = yaml.safe_load(out.read_text())
    cfg = config.train_config(composed)
    assert composed["mining"]["enabled"] is False  # the card trains on plain pairs
    assert (cfg.lr, cfg.epochs, cfg.batch_size, cfg.grad_accum) == (2e-5, 4, 16, 32)
    assert (cfg.warmup_ratio, cfg.scheduler, cfg.batch_sampler, cfg.seed) == (0.1, "cosine", "no_duplicates", 42)
    assert cfg.loss == "mnrl" and cfg.matryoshka_weights is None
    # 1,701 pairs (the card's data) -> 107 batches -> 4 optimizer steps per epoch -> 16, as in its Training Logs
    assert optimizer_steps(1701, cfg) == 16


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"lr": 0}, "lr must be > 0"),
        ({"lr": -1e-5}, "lr must be > 0"),
        ({"batch_size": 1}, "batch_size must be >= 2"),
        ({"epochs": 0}, "epochs must be > 0"),
        ({"scheduler": "cyclic"}, "scheduler must be one of"),
        ({"train": {"loss": "triplet"}}, "train.loss must be one of"),
    ],
)
def test_bad_training_params_fail_before_training(params, override, message):
    for key, value in override.items():
        if isinstance(value, dict):
            params[key].update(value)
        else:
            params[key] = value
    with pytest.raises(PipelineError, match=message):
        config.train_config(params)


def test_empty_text_stops_before_training(tiny_cfg):
    bad = pairs()
    bad.loc[2, "positive"] = " "
    with pytest.raises(PipelineError, match="1 training row"):
        check_train_pairs(bad, tiny_cfg)


def test_batch_larger_than_the_data_is_rejected(tiny_cfg):
    with pytest.raises(PipelineError, match="batch_size 64 exceeds the 8 training pairs"):
        check_train_pairs(pairs(), dataclasses.replace(tiny_cfg, batch_size=64))


def test_duplicate_pairs_are_dropped_and_counted_repeated_anchors_kept(tiny_cfg):
    data = pd.concat([pairs(), pairs().head(2)], ignore_index=True)
    clean, dropped = check_train_pairs(data, tiny_cfg)
    assert dropped == 2 and len(clean) == 8
    assert clean["anchor"].duplicated().sum() == 1  # the aspirin claim keeps both of its passages


def test_matryoshka_weights_must_match_the_dims(tiny_model, tiny_cfg):
    with pytest.raises(PipelineError, match="3 values for 2 dims"):
        build_loss(tiny_model, dataclasses.replace(tiny_cfg, matryoshka_weights=(1.0, 1.0, 1.0)), (64, 32))
    loss = build_loss(tiny_model, dataclasses.replace(tiny_cfg, loss="cached_mnrl"), (64, 32))
    assert list(loss.matryoshka_dims) == [64, 32] and type(loss.loss).__name__ == "CachedMultipleNegativesRankingLoss"


def test_checkpoint_key_changes_with_params_and_data(tmp_path):
    a, b = tmp_path / "a.parquet", tmp_path / "b.parquet"
    a.write_bytes(b"one")
    b.write_bytes(b"two")
    assert checkpoint_key({"lr": 1}, a) == checkpoint_key({"lr": 1}, a)
    assert checkpoint_key({"lr": 1}, a) != checkpoint_key({"lr": 2}, a)
    assert checkpoint_key({"lr": 1}, a) != checkpoint_key({"lr": 1}, b)


def make_trainer(model, cfg, out, dims, eval_cfg, dev, callbacks=()):
    from datasets import Dataset
    from sentence_transformers import SentenceTransformerTrainer

    return SentenceTransformerTrainer(
        model=model,
        args=training_args(cfg, out, dims[0], True, eval_cfg.batch_size),
        train_dataset=Dataset.from_pandas(pairs(), preserve_index=False),
        loss=build_loss(model, cfg, dims),
        evaluator=MatryoshkaRetrievalEvaluator(dev, dims, eval_cfg),
        callbacks=list(callbacks),
    )


@pytest.fixture
def dev_set() -> RetrievalSet:
    frame = pairs()
    return RetrievalSet(
        queries={f"q{i}": a for i, a in enumerate(frame["anchor"].unique())},
        corpus={f"p{i}": p for i, p in enumerate(frame["positive"])},
        relevant={
            f"q{i}": {f"p{j}" for j, row in frame.iterrows() if row["anchor"] == a}
            for i, a in enumerate(frame["anchor"].unique())
        },
    )


def test_training_logs_dev_ndcg_at_every_dim_and_resumes(tiny_model_dir, tiny_cfg, dev_set, params, tmp_path):
    """Stop after epoch 1 (as an interrupted run would), then resume from its checkpoint to the end."""
    from sentence_transformers import SentenceTransformer
    from transformers import TrainerCallback

    class StopAfterFirstEpoch(TrainerCallback):
        def on_epoch_end(self, args, state, control, **kwargs):
            if state.epoch == 1:
                control.should_training_stop = True

    dims = (64, 32, 16)
    eval_cfg = config.section(EvalConfig, params, "eval")
    out = tmp_path / "checkpoints"
    model = SentenceTransformer(str(tiny_model_dir), device="cpu")
    first = make_trainer(model, tiny_cfg, out, dims, eval_cfg, dev_set, [StopAfterFirstEpoch()])
    first.train()
    assert first.state.global_step == optimizer_steps(8, tiny_cfg) // 2
    resume = latest_checkpoint(out)
    assert resume is not None and resume.endswith(f"checkpoint-{first.state.global_step}")

    model = SentenceTransformer(str(tiny_model_dir), device="cpu")
    second = make_trainer(model, tiny_cfg, out, dims, eval_cfg, dev_set)
    second.train(resume_from_checkpoint=resume)
    assert second.state.global_step == optimizer_steps(8, tiny_cfg)
    history = dev_history(second.state.log_history, dims)
    assert [row["epoch"] for row in history] == [1.0, 2.0]
    assert all(0 <= row[f"dim_{d}"] <= 1 for row in history for d in dims)
    assert second.state.best_metric == max(row["dim_64"] for row in history)
    # the generated model card's Training Logs table shows NDCG@10 at every dimension
    logged = [row for row in model.model_card_data.training_logs if "dev_dim_16_cosine_ndcg@10" in row]
    assert logged and all(f"dev_dim_{d}_cosine_ndcg@10" in logged[-1] for d in dims)


def test_dims_above_the_model_are_rejected_before_training(params):
    from stages.models import load_model

    model_cfg = dataclasses.replace(config.section(ModelConfig, params, "model"), dims=(512, 256))
    with pytest.raises(PipelineError, match="exceed the dimension 384"):
        load_model(model_cfg)
