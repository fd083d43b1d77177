"""Evaluation: encode-once scoring of every Matryoshka dim vs the stock sentence-transformers route.

The stock route is a SequentialEvaluator of one InformationRetrievalEvaluator per truncate_dim (what the
model card's users run); it encodes queries and corpus once per dimension. This project's route
(medical_matryoshka/retrieval/scoring.py) encodes both once at full dimension and scores each dimension from slices.
Both run on the same model and the same test set; the metrics must agree to 1e-6.

    python -m benchmarks.eval_speed                  # the base model of params.yaml, the prepared test set
    python -m benchmarks.eval_speed --model models/finetuned --repeats 3
"""

from __future__ import annotations

import argparse

from benchmarks.common import banner, eval_setup, median, timed
from medical_matryoshka.core.dims import dim_key
from medical_matryoshka.core.models import load_model
from medical_matryoshka.retrieval.scoring import make_evaluator, score_all_dims

TOLERANCE = 1e-6


def stock_route(model, rs, dims, eval_cfg) -> dict[str, dict[str, float]]:
    from sentence_transformers.sentence_transformer.evaluation import SequentialEvaluator

    evaluators = [make_evaluator(rs, eval_cfg, name=dim_key(dim), truncate_dim=dim) for dim in dims]
    flat = SequentialEvaluator(evaluators)(model)
    return {
        dim_key(dim): {
            k.removeprefix(f"{dim_key(dim)}_"): v for k, v in flat.items() if k.startswith(f"{dim_key(dim)}_")
        }
        for dim in dims
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="a saved model folder (default: the base model of params.yaml)")
    parser.add_argument("--data", default=None, help="retrieval set json (default: <paths.prepared>/<paths.test_file>)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of each route (median reported)")
    args = parser.parse_args()
    banner()

    model_cfg, eval_cfg, _, rs = eval_setup(args.data)
    if args.model:
        model_cfg = model_cfg.at(args.model)
    model = load_model(model_cfg)
    dims = model_cfg.dims
    print(f"model: {model_cfg.name}; {len(rs.queries)} queries x {len(rs.corpus)} passages; dims {list(dims)}")

    model.encode_query(list(rs.queries.values())[:32])  # warm-up: first-call allocations off the clock
    ours_s, ours = timed(lambda: score_all_dims(model, rs, dims, eval_cfg), args.repeats)
    stock_s, stock = timed(lambda: stock_route(model, rs, dims, eval_cfg), args.repeats)

    worst = max(abs(ours[d][m] - stock[d][m]) for d in ours for m in ours[d])
    n_metrics = sum(len(v) for v in ours.values())
    print(f"encode-once (this project): median {median(ours_s):.1f} s  runs {[round(s, 1) for s in ours_s]}")
    print(f"stock SequentialEvaluator:  median {median(stock_s):.1f} s  runs {[round(s, 1) for s in stock_s]}")
    print(f"speed-up: {median(stock_s) / median(ours_s):.2f}x for {len(dims)} dims (target >= 4x)")
    print(f"metrics: {n_metrics} values, largest difference {worst:.2e} (tolerance {TOLERANCE:g})")
    print("NDCG@10: " + "  ".join(f"{d}={ours[d]['cosine_ndcg@10']:.4f}" for d in ours))
    if worst > TOLERANCE:
        raise SystemExit(f"error: the two routes disagree by {worst:.2e} > {TOLERANCE:g}")


if __name__ == "__main__":
    main()
