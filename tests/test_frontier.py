"""The size / quality frontier: bytes per vector, hand-checked rankings per precision, calibration on the training
split, one encoding, and the plot."""

from __future__ import annotations

import math

import pytest
import torch
import yaml

from medical_matryoshka.core.dims import dim_key, dim_label
from medical_matryoshka.core.errors import PipelineError
from medical_matryoshka.core.schema import build
from medical_matryoshka.core.sections import FrontierConfig, bytes_per_vector
from medical_matryoshka.retrieval.frontier import frontier, ranked_hits, vector_bytes
from medical_matryoshka.retrieval.scoring import RetrievalSet, encode_set, metrics_by_dim
from tests.conftest import REPO
from tests.fakes import FixedEmbeddings

PARAMS = yaml.safe_load((REPO / "params.yaml").read_text())
NDCG = "cosine_ndcg@10"
RANK2 = 1 / math.log2(3)  # NDCG@10 of one relevant passage at rank 2


def frontier_cfg(precisions=("float32", "int8", "binary", "binary_rescore"), multiplier=4) -> FrontierConfig:
    return build(FrontierConfig, {"precisions": list(precisions), "rescore_multiplier": multiplier})


def test_bytes_per_vector_pack_bits():
    assert [bytes_per_vector(384, p) for p in ("float32", "int8", "binary", "binary_rescore")] == [1536, 384, 48, 48]
    assert bytes_per_vector(30, "binary") == 4  # 30 bits take 4 whole bytes
    assert vector_bytes((64, 32), ("float32", "binary")) == {
        "d0032": {"float32": 128, "binary": 4},
        "d0064": {"float32": 256, "binary": 8},
    }


def one_query(corpus: dict[str, list[float]], query: list[float]):
    """An encoded set of one query whose relevant passage is 'c2', and a wide calibration set."""
    model = FixedEmbeddings(queries={"q": query}, corpus=corpus)
    rs = RetrievalSet(queries={"q": "q"}, corpus={c: c for c in corpus}, relevant={"q": {"c2"}})
    return model, rs


def test_binary_ties_fall_to_corpus_id_and_rescoring_by_the_float_query_breaks_them(eval_cfg):
    # the query's signs are (+, +, -); c1 (+, +, +) and c2 (+, -, -) both differ in one bit, so binary ties
    # and the lower id c1 ranks first. The float query against the stored bits: c1 1 + 0.05 - 0.3 = 0.75,
    # c2 1.0: rescoring puts c2 first. Float cosine ranks c2 first too.
    model, rs = one_query({"c1": [0.5, 0.5, 0.5], "c2": [0.9, -0.1, -0.4]}, [1.0, 0.05, -0.3])
    encoded = encode_set(model, rs, eval_cfg)
    calibration = torch.tensor([[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]])
    values = frontier(encoded, calibration, (3,), frontier_cfg(), NDCG)["d0003"]
    assert values["binary"] == pytest.approx(RANK2)
    assert values["binary_rescore"] == pytest.approx(1.0)
    assert values["float32"] == pytest.approx(1.0)
    assert values["int8"] == pytest.approx(1.0)
    hits = ranked_hits(encoded, calibration, 3, "binary_rescore", 4, top_k=10)[0]
    assert [h["corpus_id"] for h in hits] == ["c2", "c1"]
    norm = math.sqrt(1.0 + 0.05**2 + 0.3**2)  # the query is a unit vector
    assert [h["score"] for h in hits] == pytest.approx([1.0 / norm, 0.75 / norm], abs=1e-6)


def test_rescoring_sees_only_the_binary_shortlist_of_multiplier_times_k(eval_cfg):
    # query signs (+, +, +, +): c1 and c2 (-, +, +, +) are 1 bit away, c3 (+, -, -, +) 2. The float query
    # against the bits scores c1 and c2 0.3, c3 1.1: c3 comes first only when it is on the shortlist, which
    # for k = 1 takes a multiplier of 3, not 2.
    corpus = {"c1": [-0.5, 0.5, 0.5, 0.5], "c2": [-0.6, 0.4, 0.5, 0.5], "c3": [0.9, -0.2, -0.2, 0.3]}
    model, rs = one_query(corpus, [1.0, 0.1, 0.1, 0.1])
    encoded = encode_set(model, rs, eval_cfg)
    calibration = torch.tensor([[-1.0] * 4, [1.0] * 4])
    top = [ranked_hits(encoded, calibration, 4, "binary_rescore", m, top_k=1)[0][0]["corpus_id"] for m in (2, 3)]
    assert top == ["c1", "c3"]


def test_int8_uses_the_calibration_ranges_not_the_test_set(eval_cfg):
    model, rs = one_query({"c1": [0.8, 0.6], "c2": [0.6, 0.8]}, [0.0, 1.0])
    encoded = encode_set(model, rs, eval_cfg)
    wide = torch.tensor([[-1.0, -1.0], [1.0, 1.0]])
    assert frontier(encoded, wide, (2,), frontier_cfg(["int8"]), NDCG)["d0002"]["int8"] == pytest.approx(1.0)
    # ranges far from every test vector: each component clips to the same bucket, all scores tie, c1 first
    far = torch.tensor([[-1.0, -1.0], [-0.99, -0.99]])
    assert frontier(encoded, far, (2,), frontier_cfg(["int8"]), NDCG)["d0002"]["int8"] == pytest.approx(RANK2)


def test_int8_ranks_as_a_faiss_scalar_quantizer_index_does(eval_cfg):
    """int8 is scored as faiss' IndexScalarQuantizer (QT_8bit, inner product) stores and searches: the same
    decoded vectors, the same top 10 and scores, the same NDCG@10, on components of very unequal variance (as
    after the PCA rotation), where ranking int8 codes against int8 codes would not agree."""
    import faiss
    import numpy as np

    from medical_matryoshka.retrieval.frontier import sq8_decode

    rng = np.random.default_rng(0)
    scale = np.geomspace(1.0, 0.02, 48).astype(np.float32)  # a head of large components, a tail of small ones

    def unit(n):
        x = rng.standard_normal((n, 48)).astype(np.float32) * scale
        return x / np.linalg.norm(x, axis=1, keepdims=True)

    queries, corpus, calibration = unit(40), unit(300), unit(500)
    index = faiss.IndexScalarQuantizer(48, faiss.ScalarQuantizer.QT_8bit, faiss.METRIC_INNER_PRODUCT)
    index.train(calibration)
    index.add(corpus)
    assert np.allclose(index.sa_decode(index.sa_encode(corpus)), sq8_decode(corpus, calibration), atol=1e-6)
    faiss_scores, faiss_rows = index.search(queries, 10)

    ids = [f"c{i:03d}" for i in range(300)]  # ids in row order: ties (none here) would fall the same way
    relevant = {f"q{i}": {ids[j] for j in np.argsort(-(corpus @ q))[:3]} for i, q in enumerate(queries)}
    model = FixedEmbeddings(
        queries={f"q{i}": q.tolist() for i, q in enumerate(queries)},
        corpus=dict(zip(ids, corpus.tolist(), strict=True)),
    )
    rs = RetrievalSet({q: q for q in relevant}, {c: c for c in ids}, relevant)
    encoded = encode_set(model, rs, eval_cfg)
    calib = torch.from_numpy(calibration)
    ours = ranked_hits(encoded, calib, 48, "int8", 4, 10)
    for hits, rows, scores in zip(ours, faiss_rows, faiss_scores, strict=True):
        assert [h["corpus_id"] for h in hits] == [ids[r] for r in rows]
        assert [h["score"] for h in hits] == pytest.approx(scores.tolist(), abs=1e-5)
    faiss_hits = [[{"corpus_id": ids[r], "score": float(s)} for r, s in zip(*pair, strict=True)]
                  for pair in zip(faiss_rows, faiss_scores, strict=True)]  # fmt: skip
    int8 = frontier(encoded, calib, (48,), frontier_cfg(["float32", "int8"]), NDCG)["d0048"]
    assert int8["int8"] == pytest.approx(encoded.metrics(faiss_hits)[NDCG], abs=1e-9)
    assert int8["float32"] == pytest.approx(1.0)


def test_float32_equals_the_evaluation_and_every_cell_comes_from_one_encoding(tiny_model, eval_cfg):
    texts = [f"claim {i} about the heart and its vessels" for i in range(40)]
    rs = RetrievalSet(
        queries={f"q{i}": t for i, t in enumerate(texts[:10])},
        corpus={f"c{i}": t + " in older adults" for i, t in enumerate(texts)},
        relevant={f"q{i}": {f"c{i}"} for i in range(10)},
    )
    calls = []
    original = tiny_model.encode_document

    def counting(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    tiny_model.encode_document = counting
    try:
        encoded = encode_set(tiny_model, rs, eval_cfg)
        table = frontier(encoded, encoded.corpus, (64, 16, 4), frontier_cfg(), NDCG)
    finally:
        del tiny_model.encode_document
    assert len(calls) == 1
    assert list(table) == ["d0004", "d0016", "d0064"]
    cosine = metrics_by_dim(encoded, (64, 16, 4))
    for dim in (64, 16, 4):
        assert table[dim_label(dim)]["float32"] == pytest.approx(cosine[dim_key(dim)][NDCG], abs=1e-6)
        assert all(0.0 <= v <= 1.0 for v in table[dim_label(dim)].values())


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (
            {"precisions": ["float32", "int4"]},
            r"frontier.precisions must be a non-empty list of values from float32, .* got \['float32', 'int4'\]",
        ),
        ({"precisions": []}, "frontier.precisions must be a non-empty list of values from"),
        ({"precisions": ["int8", "int8"]}, "frontier.precisions lists a precision twice"),
        ({"rescore_multiplier": 0}, "frontier.rescore_multiplier must be >= 1"),
    ],
)
def test_bad_frontier_settings_are_one_line(value, message):
    with pytest.raises(PipelineError, match=message):
        build(FrontierConfig, {**PARAMS["frontier"], **value})


def test_the_frontier_plot_draws_a_series_per_model_and_precision_with_byte_ticks():
    from medical_matryoshka.plots import draw_frontier

    precisions = ("float32", "int8", "binary", "binary_rescore")
    dims = (384, 64)
    values = {dim_label(d): {p: 0.5 + d / 1000 for p in precisions} for d in dims}
    frontier_data = {"bytes": vector_bytes(dims, precisions), "base": values, "finetuned": values}
    long_name = "civil-razz " + " ".join(f"knob{i}=value{i}" for i in range(30))  # a sweep of many overrides
    fig = draw_frontier(frontier_data, "ndcg@10", title=long_name)
    assert fig._suptitle.get_text() == long_name[:109] + "…"  # one line, not cut off at the figure's edges
    ax = fig.axes[0]
    labels = [line.get_label() for line in ax.get_lines()]
    assert labels == [f"{m}: {p}" for m in ("base", "fine-tuned") for p in precisions]
    assert ax.get_xscale() == "log"
    assert [t.get_text() for t in ax.get_xticklabels()] == ["8", "48", "64", "256", "384", "1536"]
    assert sorted(t.get_text() for t in ax.texts) == sorted(["384", "64"] * 4)  # each fine-tuned point: its dim
