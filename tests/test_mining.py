"""Hard-negative mining: the guards against false negatives, the statistics, reproducibility."""

from __future__ import annotations

import dataclasses

import pandas as pd
import pytest
import torch

from medical_matryoshka.core.errors import PipelineError
from medical_matryoshka.core.schema import build
from medical_matryoshka.core.sections import MiningConfig
from medical_matryoshka.negatives import mine_hard_negatives


class VectorModel:
    """Embeds each text as a given vector; counts encode calls."""

    def __init__(self, vectors: dict[str, list[float]]):
        self.vectors = vectors
        self.calls = 0

    def _encode(self, texts, normalize_embeddings=False, **kwargs):
        self.calls += 1
        emb = torch.tensor([self.vectors[t] for t in texts], dtype=torch.float32)
        return torch.nn.functional.normalize(emb, dim=1) if normalize_embeddings else emb

    encode_query = encode_document = _encode


CFG = MiningConfig(
    enabled=True,
    num_negatives=1,
    range_min=0,
    range_max=10,
    absolute_margin=None,
    relative_margin=0.05,
    sampling_strategy="top",
    batch_size=8,
)

# Claim A has two passages; a1 is its positive in row 1, and a2 (its own other paragraph) is the most
# similar passage to A after a1: it must never be A's negative. "A1 COPY" is another document's passage
# identical to a1 after normalising case and spaces, "a1 nearly" an almost identical passage scoring just
# below a1: both are false negatives. b1 and c1 are genuine negatives, b1 the harder one.
VECTORS = {
    "claim A": [1.0, 0.0, 0.0],
    "claim B": [0.0, 1.0, 0.0],
    "claim C": [0.0, 0.0, 1.0],
    "a1": [0.9, 0.1, 0.0],
    "a2": [0.95, 0.05, 0.0],
    "  A1   copy": [0.9, 0.1, 0.0],
    "a1 nearly": [0.9, 0.12, 0.0],
    "b1": [0.5, 1.0, 0.0],
    "c1": [0.3, 0.0, 1.0],
}
VECTORS["a1 copy"] = VECTORS["  A1   copy"]


def pairs() -> pd.DataFrame:
    return pd.DataFrame(
        [
            ("A", "claim A", "a1"),
            ("A", "claim A", "a2"),
            ("A", "claim A", "a1 copy"),
            ("B", "claim B", "b1"),
            ("B", "claim B", "  A1   copy"),
            ("B", "claim B", "a1 nearly"),
            ("C", "claim C", "c1"),
        ],
        columns=["doc_id", "anchor", "positive"],
    )


def test_same_document_duplicates_and_near_duplicates_are_never_negatives():
    model = VectorModel(VECTORS)
    rows, stats = mine_hard_negatives(model, pairs(), CFG, seed=42)
    negatives = dict(zip(rows["anchor"] + "|" + rows["positive"], rows["negative_1"], strict=True))
    for key, negative in negatives.items():
        anchor = key.split("|")[0]
        own = set(pairs().loc[pairs()["anchor"] == anchor, "positive"])
        assert negative not in own, f"{key}: mined a passage of its own document"
    # claim A's rows: a2 (own doc), '  A1   copy' (same text as its a1), 'a1 nearly' (margin) are skipped
    assert {negatives[f"claim A|{p}"] for p in ("a1", "a2", "a1 copy")} == {"b1"}
    assert stats["skipped"]["same_document"] > 0
    assert stats["skipped"]["duplicate_text"] > 0
    assert stats["skipped"]["margin"] > 0
    assert stats["rows_in"] == stats["rows_out"] == 7
    assert model.calls == 2, "anchors and corpus must be encoded once each"
    assert stats["negative_score"]["count"] == 7 and stats["positive_score"]["max"] <= 1.0


def test_range_min_skips_the_hardest_candidates():
    # claim A's guarded ranking: 'a1 nearly' (rank 1), b1 (rank 2), c1 (rank 3)
    rows, stats = mine_hard_negatives(VectorModel(VECTORS), pairs(), dataclasses.replace(CFG, range_min=2), seed=42)
    first = rows.loc[(rows["anchor"] == "claim A") & (rows["positive"] == "a1"), "negative_1"].item()
    assert first == "c1"
    assert stats["skipped"]["rank_below_range_min"] >= 2


def test_random_sampling_is_seeded():
    cfg = dataclasses.replace(CFG, sampling_strategy="random", relative_margin=None, num_negatives=1)
    one, _ = mine_hard_negatives(VectorModel(VECTORS), pairs(), cfg, seed=1)
    two, _ = mine_hard_negatives(VectorModel(VECTORS), pairs(), cfg, seed=1)
    pd.testing.assert_frame_equal(one, two)


def test_too_small_a_corpus_is_a_clear_error():
    small = pairs().head(1)
    with pytest.raises(PipelineError, match="too few to mine .*lower -S mining.num_negatives.*mining.enabled=false"):
        mine_hard_negatives(VectorModel(VECTORS), small, CFG, seed=42)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"num_negatives": 0}, "num_negatives must be >= 1"),
        ({"range_min": 5, "range_max": 5}, "range_min < range_max"),
        ({"sampling_strategy": "hardest"}, "sampling_strategy must be one of top, random"),
        ({"relative_margin": -0.1}, "relative_margin must be null or >= 0"),
    ],
)
def test_bad_mining_params_are_rejected(change, message):
    with pytest.raises(PipelineError, match=message):
        build(MiningConfig, {**dataclasses.asdict(CFG), **change})
