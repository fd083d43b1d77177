"""Where a training step goes: PyTorch's profiler over a few optimizer steps of the train stage's own trainer.

The trainer is the stage's (`build_trainer`: same loss, arguments, precision, data collator) on the mined
pairs, without the dev evaluation, MLflow or the PCA rotation (it adds one small matmul). After --warmup steps
the profiler records --steps steps; the operators' own (self) CPU time is summed into what the step does:
matrix products, attention, layer norm, activations, dropout, embeddings, the optimizer, data loading (collation and
tokenisation), the rest of the operators, and the time no operator was running (Python, the framework).

    python -m benchmarks.train_profile                                  # the default profile, bf16 where native
    python -m benchmarks.train_profile --set precision=fp32 --set length_grouped_chunks=false
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import yaml

from benchmarks.common import banner

# category -> substrings of profiler event names (aten operators, record_function labels); first match wins
CATEGORIES = {
    "optimizer": ("adamw", "_foreach_", "_amp_foreach"),
    "dropout (random masks)": ("bernoulli", "dropout"),
    "data loading (collate, tokenize)": ("DataLoader", "collate"),
    "attention": ("scaled_dot_product", "_softmax", "softmax"),
    "matrix products": ("addmm", "aten::mm", "aten::bmm", "matmul", "aten::linear", "onednn", "mkldnn"),
    "layer norm": ("layer_norm",),
    "activations (GELU)": ("gelu",),
    "embeddings": ("embedding",),
}


def category(name: str) -> str:
    low = name.lower()
    for label, patterns in CATEGORIES.items():
        if any(p.lower() in low for p in patterns):
            return label
    return "other operators (copies, casts, reductions, ...)"


def profile_steps(params: dict, warmup: int, steps: int):
    """(profiler, wall seconds of the profiled steps) of the stage's trainer on the mined pairs."""
    import torch
    from transformers import TrainerCallback

    from medical_matryoshka.core.models import with_prepared_length
    from medical_matryoshka.core.sections import EvalConfig, ModelConfig, PathsConfig, TrainConfig, read_section
    from medical_matryoshka.training.arguments import make_schedule
    from medical_matryoshka.training.data import read_training_data
    from medical_matryoshka.training.runtime import machine_precision
    from medical_matryoshka.training.trainer import base_model, build_trainer

    cfg = read_section(TrainConfig, params)
    paths, eval_cfg = read_section(PathsConfig, params, "paths"), read_section(EvalConfig, params, "eval")
    model_cfg = with_prepared_length(read_section(ModelConfig, params, "model"), paths)
    data = read_training_data(paths, cfg)
    model, _ = base_model(model_cfg, [], eval_cfg.batch_size)
    schedule = make_schedule([len(rows) for rows in data.datasets.values()], cfg, 1, None)  # no dev evaluation

    class Profile(TrainerCallback):
        def __init__(self) -> None:
            self.prof = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU])
            self.start = 0.0
            self.seconds = 0.0

        def on_step_begin(self, args, state, control, **kwargs):
            if state.global_step == warmup:
                self.prof.__enter__()
                self.start = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == warmup + steps:
                self.seconds = time.perf_counter() - self.start
                self.prof.__exit__(None, None, None)
                control.should_training_stop = True

    with tempfile.TemporaryDirectory(prefix="profile-") as tmp:
        trainer = build_trainer(model, data, None, cfg, schedule, model_cfg.dims, eval_cfg, Path(tmp), None)
        trainer.args.save_strategy = "no"
        callback = Profile()
        trainer.add_callback(callback)
        print(f"precision {machine_precision(cfg.precision)}, batch {cfg.batch_size}, chunks {cfg.mini_batch_size}")
        trainer.train()
    return callback.prof, callback.seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--warmup", type=int, default=1, help="optimizer steps before profiling")
    parser.add_argument("--steps", type=int, default=2, help="optimizer steps profiled")
    parser.add_argument("--set", action="append", default=[], help="train.KEY=VALUE override (YAML value)")
    parser.add_argument("--top", type=int, default=12, help="also list the most expensive operators")
    args = parser.parse_args()
    banner()
    params = yaml.safe_load(Path("params.yaml").read_text())
    params["train"]["pca_rotation"] = False
    for item in args.set:
        key, _, value = item.partition("=")
        params["train"][key] = yaml.safe_load(value)
    prof, seconds = profile_steps(params, args.warmup, args.steps)

    events = prof.key_averages()
    totals: dict[str, float] = {}
    for event in events:
        if "DataLoader" in event.key:  # the loader's range, collation and tokenisation inside it
            seconds_in = event.cpu_time_total / 1e6
        elif event.key.startswith("aten::"):  # an operator's own time (the time of operators it calls excluded)
            seconds_in = event.self_cpu_time_total / 1e6
        else:
            continue
        label = category(event.key)
        totals[label] = totals.get(label, 0.0) + seconds_in
    outside = max(seconds - sum(totals.values()), 0.0)
    totals["outside operators (Python, trainer, autograd engine)"] = outside
    print(f"{args.steps} steps in {seconds:.1f} s ({seconds / args.steps:.1f} s a step); share of that time:")
    for label, value in sorted(totals.items(), key=lambda kv: -kv[1]):
        print(f"  {label:52} {value:7.2f} s  {value / seconds:6.1%}")
    print(f"\ntop {args.top} operators by own CPU time:")
    print(events.table(sort_by="self_cpu_time_total", row_limit=args.top))


if __name__ == "__main__":
    main()
