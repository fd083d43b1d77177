"""How much of a change is noise: the primary metric query by query, and a paired bootstrap over the test
queries of fine-tuned minus base.

A test set of n queries measures a mean; the same model on another n queries would score differently. The
paired bootstrap resamples the queries (the same resample for both models, so what both find hard cancels)
and takes the 2.5th and 97.5th percentiles of the resampled mean change: a 95% interval. An interval above
zero is a gain beyond noise; one that holds zero is a change the test set cannot tell from none. Its half
width is the smallest change this test set can measure.

Per-query values use the stock evaluator's definition (binary relevance; NDCG's ideal ranking holds
min(relevant, k) hits) on the ranking the metrics come from, and their mean is checked against the
evaluator's own value before it is used.
"""

from __future__ import annotations

import math

import numpy as np

from medical_matryoshka.core.dims import dim_key, dim_of
from medical_matryoshka.core.errors import PipelineError
from medical_matryoshka.retrieval.scoring import EncodedSet, rank_corpus

RESAMPLES = 10_000
SEED = 0  # the same resamples on every run: two runs on one test set get comparable intervals
FEW_QUERIES = 50  # below this, evaluate warns that the test set measures little


def ndcg(ranked: list[str], relevant: set[str], k: int) -> float:
    """Binary-relevance NDCG@k of one ranked list of corpus ids."""
    dcg = sum(1 / math.log2(i + 2) for i, cid in enumerate(ranked[:k]) if cid in relevant)
    ideal = sum(1 / math.log2(i + 2) for i in range(min(len(relevant), k)))
    return dcg / ideal if ideal else 0.0


def per_query(encoded: EncodedSet, dims: tuple[int, ...], metric: str, aggregate: dict) -> dict[str, dict[str, float]]:
    """{"dim_384": {query_id: value}} of `metric` (an ndcg@k) for every test query, from the ranking whose
    aggregate is `aggregate` ({"dim_384": {metric: mean}}), which each dim's mean must reproduce."""
    k = int(metric.rsplit("@", 1)[1])
    if "ndcg@" not in metric:
        raise PipelineError(f"eval.primary_metric {metric}: the noise interval is computed for ndcg@k only")
    ev = encoded.evaluator
    out = {}
    for dim in dims:
        hits = rank_corpus(encoded.queries, encoded.corpus, ev.corpus_ids, dim, k)
        values = {
            qid: ndcg([h["corpus_id"] for h in ranked], ev.relevant_docs[qid], k)
            for qid, ranked in zip(ev.queries_ids, hits, strict=True)
        }
        mean, stock = float(np.mean(list(values.values()))), aggregate[dim_key(dim)][metric]
        if abs(mean - stock) > 1e-6:
            raise PipelineError(f"per-query {metric} at {dim} averages {mean:.6f}, the evaluator says {stock:.6f}")
        out[dim_key(dim)] = values
    return out


def intervals(base: dict[str, dict[str, float]], tuned: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
    """{"dim_384": {"low": ..., "high": ...}}: the 95% paired-bootstrap interval of tuned - base's mean, over
    the queries both were scored on (RESAMPLES resamples, seeded)."""
    out = {}
    for dim, tuned_q in tuned.items():
        if dim not in base:
            continue
        ids = sorted(set(tuned_q) & set(base[dim]))
        if not ids:
            raise PipelineError(f"no test query in common between the base and the fine-tuned scores at {dim}")
        diff = np.array([tuned_q[q] - base[dim][q] for q in ids])
        samples = np.random.default_rng(SEED).integers(0, len(ids), size=(RESAMPLES, len(ids)))
        low, high = np.percentile(diff[samples].mean(axis=1), [2.5, 97.5])
        out[dim] = {"low": float(low), "high": float(high)}
    return out


def counts(bounds: dict[str, dict[str, float]]) -> tuple[int, int, int]:
    """(dims, dims whose change's interval is above zero, dims whose interval is below zero)."""
    return len(bounds), sum(b["low"] > 0 for b in bounds.values()), sum(b["high"] < 0 for b in bounds.values())


def verdict(bounds: dict[str, dict[str, float]]) -> str:
    """`dvc exp show`'s vs_base cell: at how many dims the fine-tuned model is above its base beyond noise,
    and below it where any: "5/5 above", "0/5 above", "3/5 above, 1/5 below"."""
    n, above, below = counts(bounds)
    return f"{above}/{n} above" + (f", {below}/{n} below" if below else "")


def resolution(bounds: dict[str, dict[str, float]]) -> dict[str, float]:
    """{"dim_384": half width}: the smallest change the test set tells from noise at each dim."""
    return {dim: (b["high"] - b["low"]) / 2 for dim, b in bounds.items()}


def noise_line(queries: int, bounds: dict[str, dict[str, float]], measure: str) -> str:
    """What `evaluate` says under its table: how many queries, what the intervals add up to, and when the test
    set is too small to measure a change, what to do about it."""
    (n, above, below), widths = counts(bounds), resolution(bounds)
    low, high = min(widths, key=widths.get), max(widths, key=widths.get)
    span = f"±{widths[low]:.3f} ({dim_of(low)})" + (f" to ±{widths[high]:.3f} ({dim_of(high)})" if high != low else "")
    line = (
        f"{queries} test queries, paired bootstrap ({RESAMPLES:,} resamples): beyond noise, fine-tuned is above "
        f"its base at {above}/{n} dims" + (f" and below it at {below}/{n}" if below else "") + f"; changes under "
        f"about {span} {measure} are noise on this test set"
    )
    if queries < FEW_QUERIES:
        line += (
            f"\nwarning: {queries} test queries are too few to measure fine-tuning (under {FEW_QUERIES}); "
            "give it more test claims: a larger data.test_fraction, a held-out data.test_path, or no "
            "data.max_docs cap (the smoke profile's)"
        )
    return line
