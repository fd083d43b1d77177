"""Retrieval metrics: hand-computed values, equality with the stock evaluator, one encoding pass."""

from __future__ import annotations

import dataclasses
import math

import pytest
import yaml

from medical_matryoshka.core.dims import dim_key
from medical_matryoshka.core.sections import DataConfig, read_section
from medical_matryoshka.data.sources import load_records
from medical_matryoshka.data.splits import assign_splits, retrieval_set
from medical_matryoshka.retrieval.scoring import RetrievalSet, make_evaluator, score_all_dims
from tests.conftest import REPO
from tests.fakes import FixedEmbeddings


def test_hand_computed_metrics_per_dimension(eval_cfg):
    # 2-d embeddings chosen so q1 finds its passage c2 first at dim 2, but at dim 1 c1 and c2 tie
    # (both score 1) and the tie goes to the lower corpus id, c1, so c2 drops to rank 2.
    model = FixedEmbeddings(
        queries={"q1": [0.5, 1.0], "q2": [-1.0, 0.5]},
        corpus={"c2": [0.6, 0.8], "c1": [1.0, 0.0], "c3": [-1.0, 0.1]},  # c2 listed first on purpose
    )
    rs = RetrievalSet(
        queries={"q1": "q1", "q2": "q2"},
        corpus={"c2": "c2", "c1": "c1", "c3": "c3"},
        relevant={"q1": {"c2"}, "q2": {"c3"}},
    )
    metrics = score_all_dims(model, rs, (2, 1), eval_cfg)
    rank2 = 1 / math.log2(3)  # DCG of one relevant hit at rank 2, ideal DCG 1
    assert metrics["dim_2"]["cosine_ndcg@10"] == pytest.approx(1.0)
    assert metrics["dim_2"]["cosine_accuracy@1"] == pytest.approx(1.0)
    assert metrics["dim_1"]["cosine_ndcg@10"] == pytest.approx((rank2 + 1) / 2)
    assert metrics["dim_1"]["cosine_mrr@10"] == pytest.approx((0.5 + 1) / 2)
    assert metrics["dim_1"]["cosine_accuracy@1"] == pytest.approx(0.5)
    assert metrics["dim_1"]["cosine_precision@3"] == pytest.approx(1 / 3)
    assert metrics["dim_1"]["cosine_recall@1"] == pytest.approx(0.5)
    assert metrics["dim_1"]["cosine_map@100"] == pytest.approx(0.75)
    assert model.calls == 2, "queries and corpus must be encoded once each, whatever the number of dims"


CARD_METRICS = [f"cosine_{m}@{k}" for m in ("accuracy", "precision", "recall") for k in (1, 3, 5, 10)] + [
    "cosine_ndcg@10",
    "cosine_mrr@10",
    "cosine_map@100",
]


@pytest.fixture(scope="module")
def small_test_set(pubmedqa_dir) -> RetrievalSet:
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    cfg = dataclasses.replace(read_section(DataConfig, params, "data"), path=str(pubmedqa_dir))
    records, _ = assign_splits(load_records(cfg), 0.1, 0.2, seed=42, max_docs=40)
    data = retrieval_set(records, "test", ("train", "dev", "test"))
    return RetrievalSet(data["queries"], data["corpus"], {q: set(d) for q, d in data["relevant"].items()})


def test_encode_once_equals_one_stock_evaluator_per_truncate_dim(tiny_model, small_test_set, eval_cfg):
    dims = (64, 32, 16, 8)
    ours = score_all_dims(tiny_model, small_test_set, dims, eval_cfg)
    for dim in dims:
        stock = make_evaluator(small_test_set, eval_cfg, name=dim_key(dim), truncate_dim=dim)(tiny_model)
        assert sorted(ours[dim_key(dim)]) == sorted(CARD_METRICS)
        for metric, value in ours[dim_key(dim)].items():
            assert value == pytest.approx(stock[f"{dim_key(dim)}_{metric}"], abs=1e-6), (dim, metric)


def test_the_parent_summary_is_dimension_first_and_sorts_by_dimension():
    from medical_matryoshka.retrieval.tables import by_dim, parent_summary

    base = {dim_key(d): {"cosine_ndcg@10": v} for d, v in ((384, 0.80), (32, 0.60), (128, 0.75))}
    tuned = {dim_key(d): {"cosine_ndcg@10": v} for d, v in ((384, 0.90), (32, 0.72), (128, 0.85))}
    bounds = {"dim_384": {"low": 0.051234, "high": 0.14}}  # evaluate's intervals, where it has them
    summary = parent_summary(base, tuned, "cosine_ndcg@10", "ndcg@10", bounds)
    assert list(by_dim(tuned, "cosine_ndcg@10")) == ["d0032", "d0128", "d0384"]
    assert list(summary) == sorted(summary)[:-1] + ["share.d0032_of_d0384"]  # each dim: the NDCG first
    assert sorted(summary) == [
        "d0032.ndcg10", "d0032.ndcg10_base", "d0032.ndcg10_change",
        "d0128.ndcg10", "d0128.ndcg10_base", "d0128.ndcg10_change",
        "d0384.ndcg10", "d0384.ndcg10_base", "d0384.ndcg10_change",
        "d0384.ndcg10_change_ci_high", "d0384.ndcg10_change_ci_low",
        "share.d0032_of_d0384",
    ]  # fmt: skip
    assert summary["d0384.ndcg10_change_ci_low"] == 0.0512  # four decimals, as the runs table shows them
    assert summary["d0032.ndcg10_change"] == 0.12 and summary["d0384.ndcg10"] == 0.90
    assert summary["share.d0032_of_d0384"] == pytest.approx(0.8)
