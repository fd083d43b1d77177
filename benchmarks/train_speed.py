"""Training throughput: the train stage vs a plain sentence-transformers script, fp32 vs bf16 autocast.

Every variant trains from the same base model on the same mined pairs with the params.yaml profile
(default: the default profile), in its own temporary folder (your models/ and metrics/ are untouched;
MLflow goes to a throw-away store), then the test NDCG@10 of the model it saved is scored at every
dimension, so a faster setting never hides a quality loss. Throughput is training pairs per second with
the per-epoch dev evaluation taken out (each route's own evaluator), and the wall time with it. Every stage
variant runs with `pca_rotation` and `passage_pairs` off, like the plain script: this times the training loop.

    python -m benchmarks.train_speed --epochs 1                       # all variants, ~20 min on 2 cores
    python -m benchmarks.train_speed --epochs 1 --only stage,plain    # the stage's overhead alone
    python -m benchmarks.train_speed --epochs 1 --only plain,plain-bf16,stage-bf16,stage-bf16-grouped

Needs `dvc repro mine` (prepared data and mined pairs) first.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

import yaml

from benchmarks.common import banner, eval_setup, isolated_stage_run, run_measured
from medical_matryoshka.core.models import load_model
from medical_matryoshka.retrieval.scoring import score_all_dims

ROOT = Path.cwd()  # the checkout the benchmark runs in (its params.yaml, data and stages/)
BENCHMARKS = Path(__file__).resolve().parent

TRAIN_INPUTS = {"prepared", "pairs"}  # read from this checkout; the model, metrics and checkpoints go to a temp folder

# name -> (route, params overrides of the `train` section, plain-script flags)
VARIANTS = {
    "stage": ("stage", {"precision": "fp32", "length_grouped_chunks": False}, []),  # the plain script's chunks
    "plain": ("plain", {}, ["--precision", "fp32"]),
    "plain-bf16": ("plain", {}, ["--precision", "bf16"]),  # the stage's precision: like against like
    "stage-bf16": ("stage", {"precision": "bf16", "length_grouped_chunks": False}, []),
    "stage-bf16-grouped": ("stage", {"precision": "bf16", "length_grouped_chunks": True}, []),  # the default
    "stage-fp32-grouped": ("stage", {"precision": "fp32", "length_grouped_chunks": True}, []),
    "stage-bf16-mb128": ("stage", {"precision": "bf16", "mini_batch_size": 128}, []),  # one chunk: nothing to group
    "stage-fp32-mb128": ("stage", {"precision": "fp32", "mini_batch_size": 128}, []),
}


def test_ndcg(model_dir: Path) -> dict[str, float]:
    """Test NDCG@10 at every dim of a saved model, scored like the evaluate stage."""
    model_cfg, eval_cfg, _, rs = eval_setup()
    model = load_model(model_cfg.at(model_dir))
    scores = score_all_dims(model, rs, model_cfg.dims, eval_cfg)
    return {dim: round(values["cosine_ndcg@10"], 4) for dim, values in scores.items()}


def padding_report(params: dict, seed: int = 0) -> dict[str, tuple[float, float]]:
    """Padded / real tokens per column of the mined pairs, in the cached loss's chunks: batches of batch_size
    in a random order (as the sampler draws them), chunks of mini_batch_size in batch order (stock) or by
    length (length_grouped_chunks). {column: (stock, grouped)}, and "all"."""
    import numpy as np
    import pandas as pd

    model_cfg = eval_setup()[0]
    model = load_model(model_cfg)
    pairs = pd.read_parquet(ROOT / params["paths"]["pairs"] / params["paths"]["train_file"])
    batch, chunk = params["batch_size"], params["train"]["mini_batch_size"]
    order = np.random.default_rng(seed).permutation(len(pairs))
    report, totals = {}, np.zeros(3)
    for column in pairs.columns:
        lengths = model.preprocess(pairs[column].tolist())["attention_mask"].sum(dim=1).numpy()[order]
        padded = np.zeros(2)
        for begin in range(0, len(lengths), batch):
            rows = lengths[begin : begin + batch]
            for k, group in enumerate((rows, np.sort(rows)[::-1])):
                padded[k] += sum(len(c) * c.max() for c in np.array_split(group, range(chunk, len(group), chunk)))
        report[column] = tuple(padded / lengths.sum())
        totals += [*padded, lengths.sum()]
    report["all"] = (totals[0] / totals[2], totals[1] / totals[2])
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=float, default=None, help="override the profile's epochs")
    parser.add_argument("--only", default=",".join(VARIANTS), help=f"comma list from {', '.join(VARIANTS)}")
    args = parser.parse_args()
    banner()
    names = args.only.split(",")
    unknown = set(names) - set(VARIANTS)
    if unknown:
        raise SystemExit(f"error: unknown variant(s) {sorted(unknown)}; choose from {', '.join(VARIANTS)}")
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    if not (ROOT / params["paths"]["pairs"] / params["paths"]["train_file"]).is_file():
        raise SystemExit("error: no mined pairs; run `dvc repro mine` first")
    epochs = args.epochs or params["epochs"]
    print(
        f"profile {params['train']['profile']}: batch {params['batch_size']}, loss {params['train']['loss']}, "
        f"mini-batch {params['train']['mini_batch_size']}, {epochs} epoch(s), torch threads {os.cpu_count()}"
    )

    padding = padding_report(params)
    print(
        "padded / real tokens in the cached loss's chunks (stock -> length-grouped): "
        + ", ".join(f"{column} {stock:.2f}x -> {grouped:.2f}x" for column, (stock, grouped) in padding.items())
    )

    rows = []
    for name in names:
        route, overrides, flags = VARIANTS[name]
        variant_params = json.loads(json.dumps(params))
        # the training loop alone: the plain script trains plain pairs from the base model, so the stage does too
        # (the rotation's one-off fit is `pca_seconds` in a real run's metrics/train.json)
        variant_params["train"].update({"pca_rotation": False, "passage_pairs": False, **overrides})
        if args.epochs:
            variant_params["epochs"] = args.epochs
        with tempfile.TemporaryDirectory(prefix=f"bench-{name}-") as tmp:
            ws, env = isolated_stage_run(Path(tmp), ROOT, variant_params, TRAIN_INPUTS)
            if route == "stage":
                cmd = [sys.executable, "-m", "stages.train"]
                model_dir = ws / params["paths"]["model"]
                metrics_file = ws / params["paths"]["train_metrics"]
            else:
                model_dir = Path(tmp) / "plain-model"
                cmd = [sys.executable, str(BENCHMARKS / "plain_st_train.py"), "--out", str(model_dir), *flags]
                if args.epochs:
                    cmd += ["--epochs", str(args.epochs)]
                metrics_file = model_dir / "train.json"
            wall, peak, _ = run_measured(cmd, ws, env)
            summary = json.loads(metrics_file.read_text())
            ndcg = test_ndcg(model_dir)
        row = {"variant": name, "wall_s": round(wall, 1), "peak_gib": round(peak, 2), **summary, "ndcg@10": ndcg}
        rows.append(row)
        print(
            json.dumps(
                {
                    k: row[k]
                    for k in (
                        "variant",
                        "wall_s",
                        "train_seconds",
                        "dev_eval_seconds",
                        "pairs_per_second",
                        "peak_gib",
                        "ndcg@10",
                    )
                }
            ),
            flush=True,
        )

    print()
    dims = list(rows[0]["ndcg@10"])
    print(
        f"{'variant':18} {'pairs/s':>8} {'vs stage':>9} {'train s':>8} {'wall s':>7} {'peak GiB':>9}  "
        + " ".join(f"{d:>8}" for d in dims)
    )
    ref = next((r for r in rows if r["variant"] == "stage"), rows[0])
    for r in rows:
        print(
            f"{r['variant']:18} {r['pairs_per_second']:8.2f} {r['pairs_per_second'] / ref['pairs_per_second']:8.2f}x "
            f"{r['train_seconds']:8.1f} {r['wall_s']:7.1f} {r['peak_gib']:9.2f}  "
            + " ".join(f"{r['ndcg@10'][d]:8.4f}" for d in dims)
        )
    plain = next((r for r in rows if r["variant"] == "plain"), None)
    if plain and ref["variant"] == "stage":
        overhead = plain["pairs_per_second"] / ref["pairs_per_second"] - 1
        print(f"stage overhead vs plain script: {overhead:+.1%} time per pair (target <= 5%)")
    if plain:
        for r in rows:
            if r is not plain:
                print(
                    f"{r['variant']} vs plain script: {r['pairs_per_second'] / plain['pairs_per_second']:.2f}x pairs/s"
                )
    plain_bf16 = next((r for r in rows if r["variant"] == "plain-bf16"), None)
    if plain_bf16:  # like against like: the stage's bf16 variants against the plain script in bf16
        for r in rows:
            if r["variant"].startswith("stage-bf16"):
                print(
                    f"{r['variant']} vs plain script in bf16: "
                    f"{r['pairs_per_second'] / plain_bf16['pairs_per_second']:.2f}x pairs/s"
                )


if __name__ == "__main__":
    main()
