"""How much of a change is noise: a paired bootstrap over the test queries of the NDCG@10 change.

Scores the base model and the fine-tuned model (models/finetuned) on the prepared test set, query by
query, at every Matryoshka dimension, and resamples the queries 10,000 times (seeded) for a 95% interval
of the fine-tuned minus base NDCG@10. The per-query means are checked against sentence-transformers'
own InformationRetrievalEvaluator values (to 1e-6) before anything is printed.

    python -m benchmarks.change_ci                       # after `dvc repro`
    python -m benchmarks.change_ci --model other/model --resamples 20000
    python -m benchmarks.change_ci --model a/ --model b/ # several models against one base encoding
"""

from __future__ import annotations

import argparse
import math

import numpy as np

from benchmarks.common import banner, eval_setup
from medical_matryoshka.models import load_model
from medical_matryoshka.retrieval.scoring import EncodedSet, make_evaluator, metrics_by_dim, rank_corpus

K = 10


def ndcg_per_query(model, evaluator, dims, eval_cfg) -> dict[int, np.ndarray]:
    """Binary-relevance NDCG@10 of every query at every dim (the evaluator's definition), checked against the
    evaluator's own metric code on the same rankings."""
    queries = model.encode_query(evaluator.queries, convert_to_tensor=True, batch_size=eval_cfg.batch_size)
    corpus = model.encode_document(evaluator.corpus, convert_to_tensor=True, batch_size=eval_cfg.batch_size)
    stock = metrics_by_dim(EncodedSet(evaluator, queries, corpus, min(eval_cfg.top_k, len(corpus))), dims)
    out = {}
    for dim in dims:
        hits = rank_corpus(queries, corpus, evaluator.corpus_ids, dim, K)
        values = []
        for qid, ranked in zip(evaluator.queries_ids, hits, strict=True):
            relevant = evaluator.relevant_docs[qid]
            dcg = sum(1 / math.log2(i + 2) for i, hit in enumerate(ranked) if hit["corpus_id"] in relevant)
            ideal = sum(1 / math.log2(i + 2) for i in range(min(len(relevant), K)))
            values.append(dcg / ideal)
        out[dim] = np.array(values)
        if abs(out[dim].mean() - stock[f"dim_{dim}"][f"cosine_ndcg@{K}"]) > 1e-6:
            raise SystemExit(f"error: per-query NDCG@{K} at {dim} disagrees with the evaluator")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", action="append", help="fine-tuned model folder (default: paths.model); repeatable")
    parser.add_argument("--resamples", type=int, default=10_000)
    args = parser.parse_args()
    banner()
    model_cfg, eval_cfg, paths, rs = eval_setup()
    evaluator = make_evaluator(rs, eval_cfg)
    base = ndcg_per_query(load_model(model_cfg), evaluator, model_cfg.dims, eval_cfg)
    rng = np.random.default_rng(0)
    n = len(evaluator.queries_ids)
    samples = rng.integers(0, n, size=(args.resamples, n))
    for finetuned_dir in args.model or [paths.model]:
        tuned = ndcg_per_query(load_model(model_cfg.at(finetuned_dir)), evaluator, model_cfg.dims, eval_cfg)
        print(f"{n} test queries, {args.resamples} paired resamples; fine-tuned: {finetuned_dir}")
        print(f"{'dim':>5} {'base':>7} {'tuned':>7} {'change':>8}  95% interval")
        for dim in model_cfg.dims:
            diff = tuned[dim] - base[dim]
            low, high = np.percentile(diff[samples].mean(axis=1), [2.5, 97.5])
            means = f"{base[dim].mean():7.4f} {tuned[dim].mean():7.4f} {diff.mean():+8.4f}"
            print(f"{dim:>5} {means}  [{low:+.4f}, {high:+.4f}]")


if __name__ == "__main__":
    main()
