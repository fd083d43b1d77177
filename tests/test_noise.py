"""How much of a change is noise: per-query NDCG@10 from the evaluation's own ranking, the paired bootstrap
interval of fine-tuned minus base, and what `evaluate` says about it."""

from __future__ import annotations

import math

import numpy as np
import pytest

from medical_matryoshka.core.errors import PipelineError
from medical_matryoshka.retrieval.noise import FEW_QUERIES, intervals, noise_line, per_query, verdict
from medical_matryoshka.retrieval.scoring import RetrievalSet, encode_set, metrics_by_dim
from tests.fakes import FixedEmbeddings


def test_per_query_ndcg_is_the_evaluators_query_by_query(eval_cfg):
    # q1 finds its passage first at dim 2 and second at dim 1 (c1 and c2 tie at 1, the lower id first);
    # q2 has two relevant passages, one of them ranked third: its ideal DCG holds two hits
    model = FixedEmbeddings(
        queries={"q1": [0.5, 1.0], "q2": [-1.0, 0.5]},
        corpus={"c2": [0.6, 0.8], "c1": [1.0, 0.0], "c3": [-1.0, 0.1]},
    )
    texts = {"q1": "q1", "q2": "q2"}, {"c2": "c2", "c1": "c1", "c3": "c3"}
    rs = RetrievalSet(*texts, {"q1": {"c2"}, "q2": {"c3", "c1"}})
    encoded = encode_set(model, rs, eval_cfg)
    aggregate = metrics_by_dim(encoded, (2, 1))
    values = per_query(encoded, (2, 1), "cosine_ndcg@10", aggregate)
    ideal2 = 1 + 1 / math.log2(3)
    assert values["dim_1"]["q1"] == pytest.approx(1 / math.log2(3))
    assert values["dim_2"]["q1"] == pytest.approx(1.0)
    assert values["dim_2"]["q2"] == pytest.approx((1 + 1 / math.log2(4)) / ideal2)  # c3 first, c1 third
    for dim in ("dim_1", "dim_2"):  # the mean is the evaluator's value
        assert np.mean(list(values[dim].values())) == pytest.approx(aggregate[dim]["cosine_ndcg@10"])
    wrong = {d: {**m, "cosine_ndcg@10": m["cosine_ndcg@10"] + 0.01} for d, m in aggregate.items()}
    with pytest.raises(PipelineError, match="per-query cosine_ndcg@10 at 2 averages"):
        per_query(encoded, (2, 1), "cosine_ndcg@10", wrong)


def test_a_gain_on_every_query_is_beyond_noise_and_a_coin_flip_is_not():
    rng = np.random.default_rng(1)
    base_values = rng.uniform(0.3, 0.9, 400)
    base = {"dim_64": dict(enumerate(base_values)), "dim_32": dict(enumerate(base_values))}
    flips = rng.choice([-0.2, 0.2], 400)  # as many queries up as down: no change in expectation
    tuned = {
        "dim_64": {q: v + 0.05 for q, v in base["dim_64"].items()},
        "dim_32": {q: v + flips[q] for q, v in base["dim_32"].items()},
    }
    bounds = intervals(base, tuned)
    assert bounds["dim_64"] == pytest.approx({"low": 0.05, "high": 0.05})
    assert bounds["dim_32"]["low"] < 0 < bounds["dim_32"]["high"]
    assert bounds == intervals(base, tuned)  # seeded: the same interval on every run
    assert verdict(bounds) == "1/2 above"
    # the interval's half width for +-0.2 flips on 400 queries: about 1.96 x 0.2 / sqrt(400)
    assert (bounds["dim_32"]["high"] - bounds["dim_32"]["low"]) / 2 == pytest.approx(0.0196, rel=0.15)
    # paired by query id: the base scored a query the fine-tuned model was not, and the order differs
    shuffled = {"dim_64": dict([*reversed(base["dim_64"].items()), (999, 0.0)])}
    assert intervals(shuffled, {"dim_64": tuned["dim_64"]})["dim_64"] == pytest.approx({"low": 0.05, "high": 0.05})


def test_the_verdict_names_losses_and_noise():
    assert verdict({"a": {"low": -0.1, "high": -0.01}, "b": {"low": 0.01, "high": 0.1}}) == "1/2 above, 1/2 below"
    assert verdict({"a": {"low": -0.1, "high": 0.1}}) == "0/1 above"


def test_evaluate_warns_when_the_test_set_is_too_small_to_measure():
    wide = {"dim_384": {"low": -0.2, "high": 0.05}, "dim_32": {"low": 0.01, "high": 0.03}}
    line = noise_line(10, wide, "ndcg@10")
    assert "changes under about ±0.010 (32) to ±0.125 (384) ndcg@10 are noise" in line  # intervals' half widths
    assert "warning: 10 test queries are too few" in line and "data.test_path" in line
    assert "warning" not in noise_line(FEW_QUERIES, wide, "ndcg@10")
