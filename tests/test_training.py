"""Training: input checks before any training, the card's step count, Matryoshka loss, dev logs, resume."""

from __future__ import annotations

import dataclasses
import json

import pandas as pd
import pytest
import yaml

from medical_matryoshka.core.dims import dim_key
from medical_matryoshka.core.errors import PipelineError
from medical_matryoshka.core.sections import EvalConfig, ModelConfig, TrainConfig, read_section
from medical_matryoshka.retrieval.dev_evaluator import dev_history, selection_metric
from medical_matryoshka.retrieval.scoring import RetrievalSet
from medical_matryoshka.training.arguments import Schedule, make_schedule, optimizer_steps, training_args
from medical_matryoshka.training.batches import RelevanceGraph
from medical_matryoshka.training.checkpoints import checkpoint_key, discard_incomplete, exclusive, latest_checkpoint
from medical_matryoshka.training.data import TrainingData, check_train_pairs, fitting_batch, passage_pairs
from medical_matryoshka.training.loss import build_loss
from medical_matryoshka.training.rotation import add_pca_rotation
from medical_matryoshka.training.runtime import resolve_precision
from medical_matryoshka.training.trainer import build_trainer, run_training, training_summary
from tests.conftest import PAIRS, REPO


@pytest.fixture
def params() -> dict:
    return yaml.safe_load((REPO / "params.yaml").read_text())


@pytest.fixture
def tiny_cfg(params) -> TrainConfig:
    cfg = read_section(TrainConfig, params)
    return dataclasses.replace(
        cfg, lr=1e-4, epochs=2, batch_size=4, grad_accum=1, logging_steps=1, loss="mnrl", matryoshka_weights=None
    )


def pairs() -> pd.DataFrame:
    return pd.DataFrame(PAIRS, columns=["anchor", "positive"])


def test_card_profile_is_the_cards_recipe(tmp_path):
    from commands.compose_params import compose

    out = tmp_path / "params.yaml"
    compose(out, ["train=card"], conf_dir=REPO / "conf")
    composed = yaml.safe_load(out.read_text())
    cfg = read_section(TrainConfig, composed)
    assert composed["mining"]["enabled"] is False  # the card trains on plain pairs
    assert (cfg.lr, cfg.epochs, cfg.batch_size, cfg.grad_accum) == (2e-5, 4, 16, 32)
    assert (cfg.warmup_ratio, cfg.scheduler, cfg.batch_sampler, cfg.seed) == (0.1, "cosine", "no_duplicates", 42)
    assert cfg.loss == "mnrl" and cfg.matryoshka_weights is None
    # 1,701 pairs (the card's data) -> 107 batches -> 4 optimizer steps per epoch -> 16, as in its Training Logs
    assert optimizer_steps(1701, cfg) == 16


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"lr": 0}, r"lr must be in \(0, 1\)"),
        ({"lr": -1e-5}, r"lr must be in \(0, 1\)"),
        ({"lr": 1e10}, r"lr must be in \(0, 1\) .* got 1e\+10"),
        ({"seed": -1}, r"seed must be in \[0, 2\*\*32\)"),
        (
            {"train": {"matryoshka_weights": [1, -1, 1, 1, 1]}},
            "train.matryoshka_weights must be null or a list of numbers >= 0",
        ),
        ({"train": {"matryoshka_weights": [0, 0, 0, 0, 0]}}, "train.matryoshka_weights must not be all 0"),
        ({"batch_size": 1}, "batch_size must be >= 2"),
        ({"epochs": 0}, "epochs must be > 0"),
        ({"scheduler": "cyclic"}, "scheduler must be one of"),
        ({"train": {"loss": "triplet"}}, "train.loss must be one of"),
        ({"train": {"precision": "fp8"}}, "train.precision must be one of"),
        ({"train": {"nproc": 0}}, "train.nproc must be >= 1"),
        ({"train": {"directions": ["doc_to_query"]}}, "train.directions must include query_to_doc"),
        (
            {"train": {"directions": ["query_to_doc", "doc_to_passage"]}},
            "train.directions must be a list of values from query_to_doc, doc_to_query",
        ),
        ({"train": {"scale": 0}}, "train.scale must be > 0"),
        ({"train": {"hardness_mode": "hardest"}}, "train.hardness_mode must be null or one of"),
        ({"train": {"hardness_strength": -1}}, "train.hardness_strength must be >= 0"),
    ],
)
def test_bad_training_params_fail_before_training(params, override, message):
    for key, value in override.items():
        if isinstance(value, dict):
            params[key].update(value)
        else:
            params[key] = value
    with pytest.raises(PipelineError, match=message):
        read_section(TrainConfig, params)


def test_empty_text_stops_before_training():
    bad = pairs()
    bad.loc[2, "positive"] = " "
    with pytest.raises(PipelineError, match="1 training row"):
        check_train_pairs(bad)


def test_a_batch_larger_than_the_data_is_the_whole_data(tiny_cfg):
    assert fitting_batch(dataclasses.replace(tiny_cfg, batch_size=64), 8).batch_size == 8  # said by the plan
    assert fitting_batch(tiny_cfg, 8) is tiny_cfg
    with pytest.raises(PipelineError, match="1 training pair\\(s\\): in-batch negatives need at least 2"):
        fitting_batch(tiny_cfg, 1)


def test_duplicate_pairs_are_dropped_and_counted_repeated_anchors_kept():
    data = pd.concat([pairs(), pairs().head(2)], ignore_index=True)
    clean, dropped = check_train_pairs(data)
    assert dropped == 2 and len(clean) == 8
    assert clean["anchor"].duplicated().sum() == 1  # the aspirin claim keeps both of its passages


def test_matryoshka_weights_must_match_the_dims(tiny_model, tiny_cfg):
    with pytest.raises(PipelineError, match="3 values for 2 dims"):
        build_loss(tiny_model, dataclasses.replace(tiny_cfg, matryoshka_weights=(1.0, 1.0, 1.0)), (64, 32))
    loss = build_loss(
        tiny_model, dataclasses.replace(tiny_cfg, loss="cached_mnrl", length_grouped_chunks=False), (64, 32)
    )
    assert list(loss.matryoshka_dims) == [64, 32] and type(loss.loss).__name__ == "CachedMultipleNegativesRankingLoss"


def test_checkpoint_key_changes_with_params_and_data(tmp_path):
    a, b = tmp_path / "a.parquet", tmp_path / "b.parquet"
    a.write_bytes(b"one")
    b.write_bytes(b"two")
    assert checkpoint_key({"lr": 1}, a) == checkpoint_key({"lr": 1}, a)
    assert checkpoint_key({"lr": 1}, a) != checkpoint_key({"lr": 2}, a)
    assert checkpoint_key({"lr": 1}, a) != checkpoint_key({"lr": 1}, b)


def training_data(out) -> TrainingData:
    return TrainingData({"claims": pairs()}, 0, out / "pairs.parquet", [], RelevanceGraph.of_pairs(pairs()))


def make_trainer(model, cfg, out, dims, eval_cfg, dev, callbacks=()):
    """The train stage's trainer (build_trainer) on the fixture pairs, no MLflow run, and its schedule."""
    selection = selection_metric(cfg.select_by, dims, eval_cfg) if dev else None
    schedule = make_schedule([len(pairs())], cfg, 1, selection)
    trainer = build_trainer(model, training_data(out), dev, cfg, schedule, dims, eval_cfg, out, None)
    for callback in callbacks:
        trainer.add_callback(callback)
    return trainer, schedule


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
    """Stop after epoch 1 (as an interrupted run would), then resume from its checkpoint to the end.

    In between, a checkpoint killed while being written (no completion mark, truncated trainer state) is
    removed and resuming falls back to the last complete one.
    """
    from sentence_transformers import SentenceTransformer
    from transformers import TrainerCallback

    class StopAfterFirstEpoch(TrainerCallback):
        def on_epoch_end(self, args, state, control, **kwargs):
            if state.epoch == 1:
                control.should_training_stop = True

    dims = (64, 32, 16)
    eval_cfg = read_section(EvalConfig, params, "eval")
    out = tmp_path / "checkpoints"
    tiny_cfg = dataclasses.replace(tiny_cfg, patience=None)  # every epoch: the stop is this test's
    model = SentenceTransformer(str(tiny_model_dir), device="cpu")
    first, _ = make_trainer(model, tiny_cfg, out, dims, eval_cfg, dev_set, [StopAfterFirstEpoch()])
    first.train()
    assert first.state.global_step == optimizer_steps(8, tiny_cfg) // 2
    done = out / f"checkpoint-{first.state.global_step}"
    torn = out / f"checkpoint-{first.state.global_step + 1}"
    torn.mkdir()
    (torn / "trainer_state.json").write_text((done / "trainer_state.json").read_text()[:40])
    assert latest_checkpoint(out) == str(done)
    assert discard_incomplete(out) == [torn] and not torn.exists() and done.is_dir()

    model = SentenceTransformer(str(tiny_model_dir), device="cpu")
    second, schedule = make_trainer(model, tiny_cfg, out, dims, eval_cfg, dev_set)
    outcome = run_training(second, latest_checkpoint(out))
    assert second.state.global_step == optimizer_steps(8, tiny_cfg)
    assert (outcome.resumed_step, outcome.resumed_epoch) == (first.state.global_step, 1.0)
    summary = training_summary(second, outcome, training_data(out), schedule, {}, dims, eval_cfg)
    resumed = [e for e in second.state.log_history if "eval_runtime" in e and e["step"] > first.state.global_step]
    # the speed of this run only: the epoch since the checkpoint, without its dev evaluations
    assert summary["resumed_from_step"] == first.state.global_step
    assert summary["pairs_per_second"] == round(8 / (outcome.seconds - sum(e["eval_runtime"] for e in resumed)), 2)
    # an epoch of 2 steps is evaluated at every step (train.evals_per_epoch 4 asks for more than it has)
    history = dev_history(second.state.log_history, dims, eval_cfg)
    assert schedule.eval_steps == 1 and [row["epoch"] for row in history] == [0.5, 1.0, 1.5, 2.0]
    assert all(0 <= row[dim_key(d)] <= 1 for row in history for d in dims)
    assert all(row["mean"] == pytest.approx(sum(row[dim_key(d)] for d in dims) / 3) for row in history)
    assert second.state.best_metric == max(row["mean"] for row in history)  # train.select_by: mean
    assert summary["stopped"]["reason"] == "epochs" and summary["stopped"]["at_step"] == 4
    # the generated model card's Training Logs table shows NDCG@10 at every dimension
    logged = [row for row in model.model_card_data.training_logs if "dev_dim_16_cosine_ndcg@10" in row]
    assert logged and all(f"dev_{dim_key(d)}_cosine_ndcg@10" in logged[-1] for d in dims)


def test_dims_above_the_model_are_rejected_before_training(params):
    from medical_matryoshka.core.models import load_model

    model_cfg = dataclasses.replace(read_section(ModelConfig, params, "model"), dims=(512, 256), max_seq_length=64)
    with pytest.raises(PipelineError, match="exceed the dimension 384"):
        load_model(model_cfg)


def test_precision_auto_is_bf16_only_where_the_hardware_has_it():
    assert resolve_precision("auto", cuda=True, cuda_bf16=True) == "bf16"
    assert resolve_precision("auto", cuda=True, cuda_bf16=False) == "fp32"
    assert resolve_precision("auto", cuda=False, cuda_bf16=False, cpu_bf16=True) == "bf16"  # AVX-512 BF16 / AMX
    assert resolve_precision("auto", cuda=False, cuda_bf16=False, cpu_bf16=False) == "fp32"
    assert resolve_precision("bf16", cuda=False, cuda_bf16=False) == "bf16"  # asked for: emulated if need be
    assert resolve_precision("fp32", cuda=True, cuda_bf16=True) == "fp32"
    with pytest.raises(PipelineError, match="fp16 needs a CUDA GPU"):
        resolve_precision("fp16", cuda=False, cuda_bf16=False)
    with pytest.raises(PipelineError, match="this GPU has no bf16"):
        resolve_precision("bf16", cuda=True, cuda_bf16=False)


def test_cpu_training_args_never_carry_gpu_settings(tiny_cfg, params, tmp_path):
    eval_cfg = read_section(EvalConfig, params, "eval")
    schedule = make_schedule([8], tiny_cfg, 1, selection_metric("full", (64, 32), eval_cfg))
    args = training_args(dataclasses.replace(tiny_cfg, precision="fp32", tf32=True), tmp_path, schedule, eval_cfg)
    assert (args.bf16, args.fp16, args.tf32, args.use_cpu) == (False, False, None, True)
    assert args.ddp_backend is None and args.dataloader_drop_last is False  # one process: nothing dropped
    assert args.metric_for_best_model == "eval_dev_dim_64_cosine_ndcg@10"  # select_by full: the full dim's
    assert args.restore_callback_states_from_checkpoint  # a resumed run keeps its early-stopping count
    bf16 = training_args(dataclasses.replace(tiny_cfg, precision="bf16"), tmp_path, schedule, eval_cfg)
    assert bf16.bf16 and not bf16.fp16


def test_the_schedule_evaluates_several_times_an_epoch_and_epochs_bound_it(tiny_cfg, params):
    eval_cfg = read_section(EvalConfig, params, "eval")
    mean = selection_metric("mean", (64, 32), eval_cfg)
    cfg = dataclasses.replace(tiny_cfg, batch_size=128, epochs=3, evals_per_epoch=4)
    assert make_schedule([812], cfg, 1, mean) == Schedule(7, 21, 2, 2, "eval_dev_mean_cosine_ndcg@10")  # SciFact
    assert make_schedule([1500], cfg, 1, mean).eval_steps == 3  # PubMedQA: 12 steps an epoch
    assert make_schedule([100_000], cfg, 1, mean).eval_steps == 196  # 782 steps an epoch: 4 evaluations
    assert make_schedule([812], cfg, 1, None).eval_steps is None  # no dev split: nothing to watch
    assert selection_metric(32, (64, 32), eval_cfg) == "eval_dev_dim_32_cosine_ndcg@10"
    with pytest.raises(PipelineError, match="train.select_by 100 is not one of model.dims"):
        selection_metric(100, (64, 32), eval_cfg)


def test_training_stops_once_dev_stops_improving(tiny_model_dir, tiny_cfg, dev_set, params, tmp_path):
    """A learning rate too small to move the dev score: the first evaluation stays the best, and training stops
    `patience` evaluations later instead of running its 10 steps."""
    from sentence_transformers import SentenceTransformer

    eval_cfg = read_section(EvalConfig, params, "eval")
    cfg = dataclasses.replace(tiny_cfg, lr=1e-12, epochs=5, patience=2)
    model = SentenceTransformer(str(tiny_model_dir), device="cpu")
    trainer, schedule = make_trainer(model, cfg, tmp_path / "checkpoints", (64, 32, 16), eval_cfg, dev_set)
    outcome = run_training(trainer, None)
    summary = training_summary(trainer, outcome, training_data(tmp_path), schedule, {}, (64, 32, 16), eval_cfg)
    assert schedule.max_steps == 10 and trainer.state.global_step == 3  # evaluated at 1 (best), 2, 3: stop
    stopped = summary["stopped"]
    assert (stopped["reason"], stopped["best_step"], stopped["evaluations"]) == ("patience", 1, 3)


def test_steps_under_ddp_count_one_batch_per_process_and_drop_the_rest(tiny_cfg):
    cfg = dataclasses.replace(tiny_cfg, batch_size=8, grad_accum=1, epochs=1)
    assert optimizer_steps(78, cfg) == 10  # ceil(78 / 8): the last short batch is kept
    assert optimizer_steps(78, cfg, processes=2) == 4  # 78 // 16: equal batches on both processes


def test_passage_pairs_take_one_pair_of_distinct_passages_per_abstract():
    prepared = pd.DataFrame(
        {
            "doc_id": ["a", "a", "a", "b", "c", "c", "c"],
            "anchor": ["qa", "qa", "qa", "qb", "qc", "qc", "qc"],
            "positive": ["a1", "a2", "a3", "b1", "c1", "c1", "c2"],
        }
    )
    rows = passage_pairs(prepared, seed=42)
    assert len(rows) == 2  # b has one passage; c's repeated passage counts once
    for anchor, positive in zip(rows["anchor"], rows["positive"], strict=True):
        assert anchor != positive and anchor[0] == positive[0]
    assert rows.equals(passage_pairs(prepared, seed=42))


def test_pca_rotation_keeps_full_dim_scores_and_orders_components_by_variance(tiny_model):
    import torch

    texts = [text for pair in PAIRS for text in pair]
    kwargs = {"convert_to_tensor": True, "normalize_embeddings": True}
    before = tiny_model.encode(texts, **kwargs)
    share = add_pca_rotation(tiny_model, texts, (64, 32, 8), batch_size=16)
    after = tiny_model.encode(texts, **kwargs)
    assert torch.allclose(before @ before.T, after @ after.T, atol=1e-5)  # a rotation: same full-dim cosines
    with torch.no_grad():  # as after training, the layer is no longer orthogonal: outputs stay unit length
        tiny_model[-2].linear.weight.mul_(torch.linspace(0.5, 2.0, 64))
    raw = tiny_model.encode(texts, convert_to_tensor=True)
    assert torch.allclose(raw.norm(dim=1), torch.ones(len(texts)), atol=1e-5)
    assert not torch.allclose(before[:, :8], after[:, :8])
    variance = (after - after.mean(dim=0)).var(dim=0)
    assert torch.all(variance[:-1] >= variance[1:] - 1e-6)  # largest-variance directions first
    assert share["pca_variance_dim_64"] == pytest.approx(1.0) and 0 < share["pca_variance_dim_8"] < 1
    truncated = (after[:, :8] - after[:, :8].mean(dim=0)).var(dim=0).sum()
    assert truncated > (before[:, :8] - before[:, :8].mean(dim=0)).var(dim=0).sum()


def test_steps_count_the_batches_of_every_data_set(tiny_cfg):
    cfg = dataclasses.replace(tiny_cfg, batch_size=8, grad_accum=1, epochs=2)
    assert optimizer_steps([78, 20], cfg) == 2 * (10 + 3)  # each data set batched on its own


def test_loss_settings_reach_the_ranking_loss(tiny_model, tiny_cfg):
    both = ("query_to_doc", "doc_to_query")
    settings = {"directions": both, "scale": 30.0, "hardness_mode": "in_batch_negatives", "hardness_strength": 9.0}
    for kind in ("mnrl", "cached_mnrl"):
        loss = build_loss(tiny_model, dataclasses.replace(tiny_cfg, loss=kind, **settings), (64, 32))
        assert tuple(loss.loss.directions) == both
        inner = loss.loss
        assert (inner.scale, inner.hardness_mode, inner.hardness_strength) == (30.0, "in_batch_negatives", 9.0)


def test_bf16_autocast_trains_on_cpu_and_keeps_fp32_weights(tiny_model_dir, tiny_cfg, dev_set, params, tmp_path):
    import torch
    from sentence_transformers import SentenceTransformer

    dims = (64, 32)
    model = SentenceTransformer(str(tiny_model_dir), device="cpu")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    cfg = dataclasses.replace(tiny_cfg, precision="bf16", epochs=1)
    trainer, _ = make_trainer(model, cfg, tmp_path, dims, read_section(EvalConfig, params, "eval"), dev_set)
    result = trainer.train()
    after = model.state_dict()
    assert torch.isfinite(torch.tensor(result.training_loss))
    assert all(v.dtype == torch.float32 for v in after.values() if v.is_floating_point())
    assert any(not torch.equal(before[k], after[k]) for k in before)


HOLD_LOCK = """
import sys, time
from pathlib import Path
from medical_matryoshka.training.checkpoints import exclusive
with exclusive(Path(sys.argv[1])):
    print("locked", flush=True)
    time.sleep(120)
"""


def test_one_training_per_checkpoint_folder_and_a_dead_holder_frees_it(tmp_path):
    import os
    import subprocess
    import sys

    folder = tmp_path / "checkpoints" / "key"
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(folder)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        busy = rf"pid {holder.pid} is training into .*key with the same params"
        with pytest.raises(PipelineError, match=busy), exclusive(folder):
            pass
    finally:
        holder.kill()  # SIGKILL: no cleanup runs in the holder
        holder.wait()
    with exclusive(folder):
        assert (folder / ".training.lock").read_text() == f"pid {os.getpid()}"
    assert not folder.exists()  # no checkpoint written: no empty folder left behind
    with exclusive(folder):
        (folder / "checkpoint-2").mkdir()
    assert (folder / "checkpoint-2").is_dir()  # something to resume from: kept


SPAWN_CHILD = """
import shlex, subprocess, sys
trainer = [sys.executable, "-c",
    "from medical_matryoshka.core.lifetime import die_with_parent; import os, time; die_with_parent(); "
    "print(os.getpid(), flush=True); time.sleep(120)"]
if sys.argv[1] != "direct":  # as dvc runs a stage: `$SHELL -c "<cmd>"`; dash forks the command, bash execs it
    trainer = [sys.argv[1], "-c", shlex.join(trainer)]
child = subprocess.Popen(trainer, stdout=subprocess.PIPE, text=True)
print(child.stdout.readline().strip(), flush=True)
child.wait()
"""


@pytest.mark.parametrize("shell", ["direct", "/bin/dash", "/bin/bash"])
def test_a_trainer_does_not_outlive_the_process_that_started_it(shell):
    import os
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    parent = subprocess.Popen([sys.executable, "-c", SPAWN_CHILD, shell], stdout=subprocess.PIPE, text=True, cwd=REPO)
    child = int(parent.stdout.readline())
    parent.send_signal(signal.SIGKILL)  # as when `dvc` is killed
    parent.wait()
    status = Path(f"/proc/{child}/status")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            if "\tZ" in status.read_text().split("State:")[1].splitlines()[0]:
                return  # dead, not yet reaped
        except FileNotFoundError:
            return
        time.sleep(0.1)
    os.kill(child, signal.SIGKILL)
    raise AssertionError("the child kept running after its parent was killed")


def test_checkpoints_of_a_model_already_in_place_are_removed_unless_held(tmp_path):
    from medical_matryoshka.training.checkpoints import discard_finished

    root, model = tmp_path / "checkpoints", tmp_path / "model"
    (root / "k1" / "checkpoint-3").mkdir(parents=True)
    (root / "k2" / "checkpoint-5").mkdir(parents=True)  # another params' interrupted run: kept for resuming
    assert discard_finished(root, model) is None  # no model in place yet
    model.mkdir()
    (model / "checkpoint_key").write_text("k1\n")
    with exclusive(root / "k1"):  # a trainer holds it
        assert discard_finished(root, model) is None
    assert (root / "k1").is_dir()
    assert discard_finished(root, model) == root / "k1"
    assert not (root / "k1").exists() and (root / "k2" / "checkpoint-5").is_dir()


def test_a_complete_checkpoint_that_lost_a_file_is_set_aside_and_the_one_before_used(tmp_path):
    from types import SimpleNamespace

    from medical_matryoshka.training.checkpoints import MarkCompleteCheckpoints, set_aside_damaged

    for step in (3, 6):
        folder = tmp_path / f"checkpoint-{step}"
        folder.mkdir()
        for name in ("trainer_state.json", "optimizer.pt", "scheduler.pt", "model.safetensors"):
            (folder / name).write_text(json.dumps({"global_step": step}) if name.endswith(".json") else "w" * step)
        args = SimpleNamespace(output_dir=str(tmp_path), should_save=True)
        MarkCompleteCheckpoints().on_save(args, SimpleNamespace(global_step=step), None)
    assert set_aside_damaged(tmp_path) == [] and latest_checkpoint(tmp_path) == str(tmp_path / "checkpoint-6")
    (tmp_path / "checkpoint-6/trainer_state.json").unlink()  # the case: complete, then a file lost
    (tmp_path / "checkpoint-3/model.safetensors").write_text("w")  # and one truncated: damaged too
    moved = set_aside_damaged(tmp_path)
    assert [(old.name, new.name, why) for old, new, why in moved] == [
        ("checkpoint-3", "damaged-checkpoint-3", "model.safetensors is 1 bytes, saved as 3"),
        ("checkpoint-6", "damaged-checkpoint-6", "trainer_state.json is missing"),
    ]
    assert latest_checkpoint(tmp_path) is None  # neither is resumed from; both are kept for a look
    assert (tmp_path / "damaged-checkpoint-6/optimizer.pt").is_file()


def test_the_active_clock_leaves_out_a_stop(tmp_path):
    import signal
    import subprocess
    import sys
    import time

    script = (
        "import time\n"
        "from medical_matryoshka.core.lifetime import ActiveClock\n"
        "clock = ActiveClock()\n"
        "print('started', flush=True)\n"
        "end = time.monotonic() + 6\n"
        "while time.monotonic() < end:\n"
        "    sum(range(10000))\n"
        "print(round(clock.stop(), 1), flush=True)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "started"
    time.sleep(1)
    proc.send_signal(signal.SIGSTOP)  # held for 4 s of the 6 s of wall time it runs
    time.sleep(4)
    proc.send_signal(signal.SIGCONT)
    seconds = float(proc.stdout.readline())
    proc.wait(timeout=30)
    assert 1.0 <= seconds <= 3.5, seconds  # ~2 s of running (6 s of wall time, 4 s of it stopped)


def test_the_plan_says_what_was_chosen_and_a_batch_larger_than_the_data():
    from medical_matryoshka.reports import plan_report, stopping_report

    counts = {"query_to_doc": 0, "query_to_query": 0, "doc_to_doc": 0, "total": 0, "rows": 35, "rows_in_all": 35}
    stock = {**counts, "query_to_doc": 4, "total": 4, "rows": 33}
    plan = {
        "max_seq_length": 224, "max_seq_length_setting": "auto", "passages_cut": 0.046, "pairs": 35,
        "passage_pairs": 0, "batch_size": 35, "batch_size_asked": 128, "processes": 1, "steps_per_epoch": 1,
        "max_epochs": 3.0, "max_steps": 3, "dev_queries": 5, "eval_steps": 1, "patience": 2, "select_by": "mean",
        "batch_sampler": "relevance_aware", "batches": {"no_duplicates": stock, "relevance_aware": counts},
    }  # fmt: skip
    lines = plan_report(plan, {}, None)
    assert lines[1] == "  texts read at 224 tokens (model.max_seq_length auto; 5% of the passages are longer)"
    assert lines[2] == (
        "  35 pairs, batch 35 (batch_size 128 is more than the 35 pairs: one batch holds them all): 1 optimizer steps "
        "an epoch, at most 3 epochs (3 steps)"
    )
    assert lines[3] == (
        "  dev (5 claims) every step: keeps the best dev NDCG@10 (mean over the dims), stops after 2 evaluations "
        "without a better one"
    )
    assert lines[4] == (
        "  batches: relevance-aware: first epoch 35 of 35 pairs, in-batch false negatives 0 claim-passage, 0 "
        "claim-claim, 0 passage-passage (the stock no_duplicates sampler: 33 of 35 pairs, 4 claim-passage, 0 "
        "claim-claim, 0 passage-passage)"
    )
    stopped = {"at_step": 12, "max_steps": 21, "at_epoch": 1.71, "evaluations": 6, "reason": "patience",
               "patience": 2, "best_dev": 0.8269, "best_step": 6, "best_epoch": 0.86,
               "selection": "eval_dev_mean_cosine_ndcg@10"}  # fmt: skip
    assert stopping_report(stopped, "ndcg@10") == (
        "stopped at step 12 of 21 (epoch 1.71): the dev score had not improved for 2 evaluations; kept step 6 "
        "(epoch 0.86), dev ndcg@10 0.8269 (mean_cosine_ndcg@10) after 6 evaluations"
    )
