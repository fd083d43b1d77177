"""Which dimension and precision to ship: the primary metric of every (Matryoshka dim, precision) pair.

Every pair is scored from ONE encoding at full dimension (EncodedSet): a dimension is a slice, renormalised
(cosine, as the float32 metrics rank), and a precision is sentence-transformers' `quantize_embeddings` of
that slice:
- float32: cosine similarity (the same numbers as metrics/eval.json);
- int8: the corpus stored as one byte a component, as faiss' IndexScalarQuantizer (QT_8bit, min/max
  ranges per component calibrated on the TRAINING split's embeddings, never the test set) stores it, and ranked
  as that index ranks: the float query against each stored vector decoded (sq8_decode). Ranking int8 codes
  against int8 codes instead (`quantize_embeddings` on both sides) weights every component by its range, so
  after the PCA rotation the low-variance tail counts as much as the head: not what an index does;
- binary: one bit per component (sign), ranked by Hamming distance;
- binary_rescore: binary's top rescore_multiplier x k candidates (k = 10 for NDCG@10) re-ranked by the float
  query against the stored bits, as sentence-transformers' `semantic_search_faiss` / `_usearch` rescore.
  Stored vectors stay binary; only the query is float.
Ranking is exact search over the test corpus, ties broken by corpus id as the stock evaluator does (an
approximate index would make the numbers depend on its build; benchmarks/index_search.py measures those).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch
from sentence_transformers.util import quantize_embeddings

from medical_matryoshka.core.dims import dim_label
from medical_matryoshka.core.models import encode
from medical_matryoshka.core.sections import EvalConfig, FrontierConfig, bytes_per_vector
from medical_matryoshka.retrieval.noise import per_query
from medical_matryoshka.retrieval.scoring import (
    CalibrationTexts,
    EncodedSet,
    RetrievalSet,
    check_dims,
    encode_set,
    metrics_by_dim,
    rank_scores,
)


def _unit(x: torch.Tensor) -> np.ndarray:
    return torch.nn.functional.normalize(x.float(), dim=1).cpu().numpy()


def _bits(x: np.ndarray) -> torch.Tensor:
    """quantize_embeddings(x, "ubinary") unpacked to {0, 1} floats, the padding bits dropped."""
    return torch.from_numpy(
        np.unpackbits(quantize_embeddings(x, "ubinary"), axis=1)[:, : x.shape[1]].astype(np.float32)
    )


def _agreement(q: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    return q @ c.T + (1 - q) @ (1 - c).T  # bits that agree: dim - Hamming distance


def precision_scores(queries: np.ndarray, corpus: np.ndarray, calibration: np.ndarray, precision: str) -> torch.Tensor:
    """(queries x corpus) similarity under `precision`; rows are unit vectors of one truncation."""
    if precision == "float32":
        return torch.from_numpy(queries) @ torch.from_numpy(corpus).T
    if precision == "int8":
        return torch.from_numpy(queries) @ torch.from_numpy(sq8_decode(corpus, calibration)).T
    return _agreement(_bits(queries), _bits(corpus))


def sq8_decode(x: np.ndarray, calibration: np.ndarray) -> np.ndarray:
    """`x` stored in 8 bits a component and read back, as faiss' ScalarQuantizer QT_8bit with its default
    min/max range statistic does: each component scaled into its [min, max] over `calibration` (clipped),
    cut to one of 255 codes, decoded at the code's centre."""
    x, calibration = x.astype(np.float32), calibration.astype(np.float32)
    vmin = calibration.min(axis=0)
    vdiff = calibration.max(axis=0) - vmin
    scaled = np.clip(np.divide(x - vmin, vdiff, out=np.zeros_like(x), where=vdiff > 0), 0.0, 1.0)
    codes = (np.float32(255) * scaled).astype(np.int32).astype(np.float32)  # faiss: (int)(255 * x)
    return vmin + (codes + np.float32(0.5)) / np.float32(255) * vdiff


def _unit_slices(encoded: EncodedSet, calibration: torch.Tensor, dim: int) -> tuple[np.ndarray, ...]:
    """Queries, corpus and calibration embeddings truncated to `dim` and renormalised."""
    return tuple(_unit(x[:, :dim]) for x in (encoded.queries, encoded.corpus, calibration))


def _ranked(slices, ids: list[str], precision: str, rescore_multiplier: int, top_k: int) -> list[list[dict]]:
    queries, corpus, calib = slices
    top_k = min(top_k, len(ids))
    if precision != "binary_rescore":
        return rank_scores(precision_scores(queries, corpus, calib, precision), ids, top_k)
    candidates = min(top_k * rescore_multiplier, len(ids))
    bits = _bits(corpus)
    shortlist = rank_scores(_agreement(_bits(queries), bits), ids, candidates)
    row = {cid: i for i, cid in enumerate(ids)}
    hits = []
    for q, hits_q in zip(torch.from_numpy(queries), shortlist, strict=True):
        rows = torch.tensor([row[h["corpus_id"]] for h in hits_q])
        scores = bits[rows] @ q  # the float query against the stored bits, as sentence-transformers rescores
        order = torch.sort(scores, descending=True, stable=True).indices[:top_k].tolist()  # ties: binary's order
        hits.append([{"corpus_id": hits_q[i]["corpus_id"], "score": float(scores[i])} for i in order])
    return hits


def ranked_hits(
    encoded: EncodedSet, calibration: torch.Tensor, dim: int, precision: str, rescore_multiplier: int, top_k: int
) -> list[list[dict]]:
    """Top-k hits per test query at `dim` and `precision` (see the module docstring). binary_rescore re-ranks
    binary's top rescore_multiplier x top_k, as a search for top_k hits would."""
    slices = _unit_slices(encoded, calibration, dim)
    return _ranked(slices, encoded.evaluator.corpus_ids, precision, rescore_multiplier, top_k)


def calibration_embeddings(model, texts: CalibrationTexts, batch_size: int) -> torch.Tensor:
    """The training split's claims and passages encoded as queries and documents are: int8's per-component
    ranges come from these, never from the test set."""
    options = {"batch_size": batch_size, "convert_to_tensor": True}
    claims, passages = texts.claims, texts.passages
    return torch.cat(
        [
            encode(model, claims, f"calibration: train claims ({len(claims)})", "encode_query", **options),
            encode(model, passages, f"calibration: train passages ({len(passages)})", "encode_document", **options),
        ]
    )


def frontier(
    encoded: EncodedSet, calibration: torch.Tensor, dims: tuple[int, ...], cfg: FrontierConfig, metric: str
) -> dict[str, dict[str, float]]:
    """{"d0032": {"float32": ndcg, "int8": ..., ...}, ...}: `metric` at every dim and precision, smallest dim
    first. `calibration`: embeddings of the training split, same model, full dimension. Each query retrieves
    the k hits `metric` reads (10 for ndcg@10): binary_rescore's shortlist is rescore_multiplier x k."""
    check_dims(dims, encoded.queries.shape[1])
    k = int(metric.rsplit("@", 1)[1])
    ids = encoded.evaluator.corpus_ids
    scored = {}
    for dim in sorted(dims):
        slices = _unit_slices(encoded, calibration, dim)  # once per dim, shared by every precision
        scored[dim_label(dim)] = {
            p: encoded.metrics(_ranked(slices, ids, p, cfg.rescore_multiplier, k))[metric] for p in cfg.precisions
        }
    return scored


class Scored(NamedTuple):
    """A model on the test set: every metric at every dim, the frontier, and the primary metric query by
    query at every dim (retrieval/noise.py), all from one encoding."""

    metrics: dict[str, dict[str, float]]
    frontier: dict[str, dict[str, float]]
    per_query: dict[str, dict[str, float]]


def score_with_frontier(
    model,
    test_set: RetrievalSet,
    calibration: CalibrationTexts,
    dims: tuple[int, ...],
    eval_cfg: EvalConfig,
    cfg: FrontierConfig,
) -> Scored:
    """What the baseline, evaluate and export stages report of `model` on `test_set`, from one encoding of
    it, int8 calibrated on `calibration`'s embeddings."""
    encoded = encode_set(model, test_set, eval_cfg)
    metrics = metrics_by_dim(encoded, dims)
    queries = per_query(encoded, dims, eval_cfg.primary_metric, metrics)
    calibrated = calibration_embeddings(model, calibration, eval_cfg.batch_size)
    return Scored(metrics, frontier(encoded, calibrated, dims, cfg, eval_cfg.primary_metric), queries)


def vector_bytes(dims: tuple[int, ...], precisions: tuple[str, ...]) -> dict[str, dict[str, int]]:
    """{"d0032": {"float32": 128, ...}, ...}: bytes per stored vector, the frontier's x axis."""
    return {dim_label(d): {p: bytes_per_vector(d, p) for p in precisions} for d in sorted(dims)}
