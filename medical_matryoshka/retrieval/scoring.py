"""Retrieval evaluation at every Matryoshka dimension from ONE encoding pass, and the readers of its inputs
(the prepared retrieval sets; the training split's texts that calibrate int8).

The stock route runs one InformationRetrievalEvaluator per truncate_dim and so encodes queries and
corpus once per dimension. Here both are encoded once at full dimension; each dimension's cosine
ranking comes from a slice of those embeddings, and the metrics come from the stock evaluator's own
compute_metrics, so the definitions (and values) are sentence-transformers'.

Results use the metrics-file schema shared by baseline, evaluate and the model card:
{"dim_<d>": {"cosine_ndcg@10": ..., ...}}.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch
from sentence_transformers.sentence_transformer.evaluation import InformationRetrievalEvaluator
from sentence_transformers.util import cos_sim

from medical_matryoshka.core.dims import dim_key
from medical_matryoshka.core.errors import PipelineError, require_input
from medical_matryoshka.core.models import encode
from medical_matryoshka.core.sections import SCORE_FUNCTION, EvalConfig


@dataclass(frozen=True)
class RetrievalSet:
    queries: dict[str, str]
    corpus: dict[str, str]
    relevant: dict[str, set[str]]


def load_retrieval_set(path: str | Path, allow_empty: bool = False) -> RetrievalSet | None:
    """Read a prepared retrieval set; an empty one is an error unless `allow_empty` (then None)."""
    path = require_input(path, "prepare", what="retrieval set ")
    data = json.loads(path.read_text(encoding="utf-8"))
    rs = RetrievalSet(data["queries"], data["corpus"], {q: set(docs) for q, docs in data["relevant"].items()})
    if not rs.queries or not rs.corpus:
        if allow_empty:
            return None
        raise PipelineError(
            f"retrieval set {path} has {len(rs.queries)} queries and {len(rs.corpus)} passages; prepare wrote it "
            "so (see the split counts in metrics/data.json): rerun `dvc repro prepare` with more data or other "
            "data.test_fraction / data.dev_fraction"
        )
    return rs


@dataclass(frozen=True)
class CalibrationTexts:
    """The training split's distinct claims and passages: int8's per-component ranges come from their
    embeddings (retrieval/frontier.py), never from the test set."""

    claims: list[str]
    passages: list[str]


def load_calibration_texts(path: str | Path) -> CalibrationTexts:
    """Read the calibration texts from the prepared training split (each text once, first-seen order)."""
    rows = pd.read_parquet(require_input(path, "prepare", what="training split "), columns=["anchor", "positive"])
    return CalibrationTexts(rows["anchor"].unique().tolist(), rows["positive"].unique().tolist())


def make_evaluator(rs: RetrievalSet, cfg: EvalConfig, name: str = "", truncate_dim: int | None = None):
    """The stock evaluator, configured with this project's metric cut-offs."""
    return InformationRetrievalEvaluator(
        queries=rs.queries,
        corpus=rs.corpus,
        relevant_docs=rs.relevant,
        accuracy_at_k=list(cfg.accuracy_at_k),
        precision_recall_at_k=list(cfg.precision_recall_at_k),
        ndcg_at_k=list(cfg.ndcg_at_k),
        mrr_at_k=list(cfg.mrr_at_k),
        map_at_k=list(cfg.map_at_k),
        batch_size=cfg.batch_size,
        name=name,
        truncate_dim=truncate_dim,
        write_csv=False,
    )


def rank_scores(scores: torch.Tensor, corpus_ids: list[str], top_k: int) -> list[list[dict]]:
    """Top-k corpus hits per query of a (queries x corpus) score matrix, highest first.

    Ties are broken by ascending corpus id, the order the stock evaluator ranks by.
    """
    by_id = sorted(range(len(corpus_ids)), key=corpus_ids.__getitem__)
    values, idx = torch.sort(scores[:, by_id], dim=1, descending=True, stable=True)
    values, idx = values[:, :top_k].tolist(), idx[:, :top_k].tolist()
    return [
        [{"corpus_id": corpus_ids[by_id[j]], "score": s} for j, s in zip(row_idx, row_val, strict=True)]
        for row_idx, row_val in zip(idx, values, strict=True)
    ]


def rank_corpus(
    query_emb: torch.Tensor, corpus_emb: torch.Tensor, corpus_ids: list[str], dim: int, top_k: int
) -> list[list[dict]]:
    """Top-k corpus hits per query by cosine similarity of the first `dim` components."""
    return rank_scores(cos_sim(query_emb[:, :dim], corpus_emb[:, :dim]), corpus_ids, top_k)


@dataclass(frozen=True)
class EncodedSet:
    """A retrieval set's queries and corpus encoded once at full dimension, with the stock evaluator that
    turns ranked hits into metrics (its corpus_ids give the corpus rows' order)."""

    evaluator: InformationRetrievalEvaluator
    queries: torch.Tensor
    corpus: torch.Tensor
    top_k: int  # hits per query the metrics need (EvalConfig.top_k, at most the corpus)

    def metrics(self, hits: list[list[dict]]) -> dict[str, float]:
        """{"cosine_ndcg@10": ..., ...}: the card's 15 metrics of ranked hits, by the stock evaluator."""
        return {
            f"{SCORE_FUNCTION}_{metric.replace('@k', f'@{k}')}": float(value)
            for metric, values in self.evaluator.compute_metrics(hits).items()
            for k, value in values.items()
        }


def encode_set(model, rs: RetrievalSet, cfg: EvalConfig, split: str = "test") -> EncodedSet:
    """Queries and corpus of `rs` encoded once, at the model's full dimension."""
    evaluator = make_evaluator(rs, cfg)
    options = {"batch_size": cfg.batch_size, "convert_to_tensor": True}
    queries, corpus = evaluator.queries, evaluator.corpus
    query_emb = encode(model, queries, f"{split} queries ({len(queries)})", "encode_query", **options)
    corpus_emb = encode(model, corpus, f"{split} corpus ({len(corpus)})", "encode_document", **options)
    return EncodedSet(evaluator, query_emb, corpus_emb, min(cfg.top_k, len(evaluator.corpus_ids)))


def check_dims(dims: tuple[int, ...], full_dim: int) -> None:
    if dims[0] > full_dim:
        raise PipelineError(f"dims {list(dims)} exceed the model's embedding dimension {full_dim}")


def metrics_by_dim(encoded: EncodedSet, dims: tuple[int, ...]) -> dict[str, dict[str, float]]:
    """{"dim_384": {"cosine_ndcg@10": ..., ...}, ...}: cosine ranking of each truncation of `encoded`."""
    check_dims(dims, encoded.queries.shape[1])
    ids = encoded.evaluator.corpus_ids
    return {
        dim_key(dim): encoded.metrics(rank_corpus(encoded.queries, encoded.corpus, ids, dim, encoded.top_k))
        for dim in dims
    }


def score_all_dims(
    model, rs: RetrievalSet, dims: tuple[int, ...], cfg: EvalConfig, split: str = "test"
) -> dict[str, dict[str, float]]:
    """{"dim_384": {"cosine_ndcg@10": ..., ...}, ...}: the card's 15 metrics at every dimension."""
    return metrics_by_dim(encode_set(model, rs, cfg, split), dims)
