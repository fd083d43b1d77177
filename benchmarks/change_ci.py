"""How much of a change is noise: a paired bootstrap over the test queries of the NDCG@10 change.

Scores the base model and the fine-tuned model (models/finetuned) on the prepared test set, query by
query, at every Matryoshka dimension, and resamples the queries 10,000 times (seeded) for a 95% interval
of the fine-tuned minus base NDCG@10. The per-query means are checked against sentence-transformers'
own InformationRetrievalEvaluator values (to 1e-6) before anything is printed.

    python -m benchmarks.change_ci                       # after `dvc repro`
    python -m benchmarks.change_ci --model other/model --resamples 20000
    python -m benchmarks.change_ci --model a/ --model b/ # each against the base, then b against a
"""

from __future__ import annotations

import argparse
import math

import numpy as np

from benchmarks.common import banner, eval_setup
from medical_matryoshka.core.dims import dim_key
from medical_matryoshka.core.models import load_model
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
        if abs(out[dim].mean() - stock[dim_key(dim)][f"cosine_ndcg@{K}"]) > 1e-6:
            raise SystemExit(f"error: per-query NDCG@{K} at {dim} disagrees with the evaluator")
    return out


def interval_table(name: str, reference: dict, scores: dict, dims, samples: np.ndarray) -> None:
    """The change from `reference` to `scores` at every dim, with its paired-bootstrap 95% interval."""
    print(f"{'dim':>5} {'ref':>7} {name:>7} {'change':>8}  95% interval")
    for dim in dims:
        diff = scores[dim] - reference[dim]
        low, high = np.percentile(diff[samples].mean(axis=1), [2.5, 97.5])
        means = f"{reference[dim].mean():7.4f} {scores[dim].mean():7.4f} {diff.mean():+8.4f}"
        print(f"{dim:>5} {means}  [{low:+.4f}, {high:+.4f}]")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", action="append", help="fine-tuned model folder (default: paths.model); repeatable")
    parser.add_argument("--resamples", type=int, default=10_000)
    args = parser.parse_args()
    banner()
    model_cfg, eval_cfg, paths, rs = eval_setup()
    evaluator = make_evaluator(rs, eval_cfg)
    folders = args.model or [paths.model]
    scores = {"base": ndcg_per_query(load_model(model_cfg), evaluator, model_cfg.dims, eval_cfg)}
    for folder in folders:
        scores[folder] = ndcg_per_query(load_model(model_cfg.at(folder)), evaluator, model_cfg.dims, eval_cfg)
    n = len(evaluator.queries_ids)
    samples = np.random.default_rng(0).integers(0, n, size=(args.resamples, n))
    print(f"{n} test queries, {args.resamples} paired resamples; ref = the base model")
    for folder in folders:
        print(f"fine-tuned: {folder}")
        interval_table("tuned", scores["base"], scores[folder], model_cfg.dims, samples)
    for folder in folders[1:]:  # several models: each against the first, on the same resamples
        print(f"{folder} against ref = {folders[0]}")
        interval_table("tuned", scores[folders[0]], scores[folder], model_cfg.dims, samples)


if __name__ == "__main__":
    main()
