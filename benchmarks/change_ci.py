"""How much of a change is noise, between any models: the paired bootstrap `evaluate` reports for the
fine-tuned model against its base (retrieval/noise.py), for other model folders too.

Scores the base model and each fine-tuned folder on the prepared test set, query by query, at every Matryoshka
dimension (per-query means checked against sentence-transformers' own evaluator), and prints the 95% interval
of each model's NDCG@10 change against the base, then of each later model against the first.

    python -m benchmarks.change_ci                       # after `dvc repro`: what evaluate printed
    python -m benchmarks.change_ci --model a/ --model b/ # each against the base, then b against a
"""

from __future__ import annotations

import argparse

import numpy as np

from benchmarks.common import banner, eval_setup
from medical_matryoshka.core.models import load_model
from medical_matryoshka.retrieval.noise import RESAMPLES, intervals, per_query
from medical_matryoshka.retrieval.scoring import encode_set, metrics_by_dim


def scores(model, rs, dims, eval_cfg) -> dict[str, dict[str, float]]:
    """{"dim_384": {query_id: NDCG@10}} of one model, from one encoding."""
    encoded = encode_set(model, rs, eval_cfg)
    return per_query(encoded, dims, eval_cfg.primary_metric, metrics_by_dim(encoded, dims))


def interval_table(name: str, reference: dict, other: dict) -> None:
    """The change from `reference` to `other` at every dim, with its paired-bootstrap 95% interval."""
    bounds = intervals(reference, other)
    print(f"{'dim':>8} {'ref':>7} {name:>7} {'change':>8}  95% interval")
    for dim, b in bounds.items():
        ref, new = np.mean(list(reference[dim].values())), np.mean(list(other[dim].values()))
        print(f"{dim:>8} {ref:7.4f} {new:7.4f} {new - ref:+8.4f}  [{b['low']:+.4f}, {b['high']:+.4f}]")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", action="append", help="fine-tuned model folder (default: paths.model); repeatable")
    args = parser.parse_args()
    banner()
    model_cfg, eval_cfg, paths, rs = eval_setup()
    folders = args.model or [paths.model]
    table = {"base": scores(load_model(model_cfg), rs, model_cfg.dims, eval_cfg)}
    for folder in folders:
        table[folder] = scores(load_model(model_cfg.at(folder)), rs, model_cfg.dims, eval_cfg)
    print(f"{len(rs.queries)} test queries, {RESAMPLES} paired resamples; ref = the base model")
    for folder in folders:
        print(f"fine-tuned: {folder}")
        interval_table("tuned", table["base"], table[folder])
    for folder in folders[1:]:  # several models: each against the first, on the same resamples
        print(f"{folder} against ref = {folders[0]}")
        interval_table("tuned", table[folders[0]], table[folder])


if __name__ == "__main__":
    main()
