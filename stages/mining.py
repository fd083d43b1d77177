"""Hard-negative mining with false-negative guards, and leakage checks between splits.

For every (anchor, positive) train pair, candidates are the training passages ranked by the base model's
cosine similarity to the anchor (anchors and corpus encoded once). A candidate is skipped when it comes
from the anchor's own document (every positive of the same anchor included), when its text equals one of
the document's passages after normalising whitespace and case, when its rank is below `range_min`, or
when it scores too close to the positive (absolute / relative margin: likely a false negative). From the
remaining candidates within `range_max`, `num_negatives` are taken (top or seeded random); a row whose
window runs short takes the next guarded candidates beyond `range_max` (easier, never unguarded).
Skip counts are over the candidates examined: with "top", those ranked above the chosen negatives.
"""

from __future__ import annotations

import dataclasses
from collections import Counter

import numpy as np
import pandas as pd
import torch

from stages.errors import PipelineError
from stages.splits import normalise

GUARDS = ("same_document", "duplicate_text", "rank_below_range_min", "margin")


@dataclasses.dataclass(frozen=True)
class MiningConfig:
    enabled: bool
    num_negatives: int
    range_min: int
    range_max: int
    absolute_margin: float | None
    relative_margin: float | None
    sampling_strategy: str
    batch_size: int

    def validate(self, key: str) -> None:
        if self.num_negatives < 1:
            raise PipelineError(f"params.yaml: {key}num_negatives must be >= 1, got {self.num_negatives}")
        if not 0 <= self.range_min < self.range_max:
            raise PipelineError(
                f"params.yaml: {key}range_min/range_max must satisfy 0 <= range_min < range_max, "
                f"got {self.range_min}/{self.range_max}"
            )
        if self.range_max - self.range_min < self.num_negatives:
            raise PipelineError(f"params.yaml: {key}range_max - range_min must leave room for num_negatives")
        if self.sampling_strategy not in ("top", "random"):
            raise PipelineError(f"params.yaml: {key}sampling_strategy must be top or random")
        for name in ("absolute_margin", "relative_margin"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise PipelineError(f"params.yaml: {key}{name} must be >= 0 or null, got {value}")
        if self.batch_size < 1:
            raise PipelineError(f"params.yaml: {key}batch_size must be >= 1, got {self.batch_size}")


def _summary(values: list[float]) -> dict[str, float]:
    if not values:
        return {"count": 0}
    arr = np.asarray(values, dtype=float)
    return {
        "count": int(arr.size),
        "mean": round(float(arr.mean()), 4),
        "min": round(float(arr.min()), 4),
        "p25": round(float(np.percentile(arr, 25)), 4),
        "median": round(float(np.median(arr)), 4),
        "p75": round(float(np.percentile(arr, 75)), 4),
        "max": round(float(arr.max()), 4),
    }


def mine(model, pairs: pd.DataFrame, cfg: MiningConfig, seed: int) -> tuple[pd.DataFrame, dict]:
    """(anchor, positive, negative_1..n) rows from (doc_id, anchor, positive) pairs, and mining statistics."""
    corpus = pairs.drop_duplicates("positive")["positive"].tolist()
    corpus_docs: dict[str, set[str]] = {}  # passage -> the documents holding it
    doc_texts: dict[str, set[str]] = {}  # document -> its passages, normalised
    for doc, text in zip(pairs["doc_id"], pairs["positive"], strict=True):
        corpus_docs.setdefault(text, set()).add(doc)
        doc_texts.setdefault(doc, set()).add(normalise(text))
    norm_corpus = [normalise(t) for t in corpus]
    anchors = pairs.drop_duplicates("anchor")[["anchor", "doc_id"]]
    anchor_index = {a: i for i, a in enumerate(anchors["anchor"])}
    corpus_index = {t: i for i, t in enumerate(corpus)}
    if len(corpus) <= cfg.num_negatives:
        raise PipelineError(f"only {len(corpus)} training passages: too few to mine {cfg.num_negatives} negatives")

    kwargs = {"batch_size": cfg.batch_size, "convert_to_tensor": True, "normalize_embeddings": True}
    anchor_emb = model.encode_query(anchors["anchor"].tolist(), **kwargs)
    corpus_emb = model.encode_document(corpus, **kwargs)
    scores = (anchor_emb @ corpus_emb.T).float().cpu()
    ranking = torch.argsort(scores, dim=1, descending=True).numpy()
    scores = scores.numpy()

    rng = np.random.default_rng(seed)
    skipped: Counter[str] = Counter()
    rows, pos_scores, neg_scores = [], [], []
    beyond_range, short = 0, 0
    for doc, anchor, positive in zip(pairs["doc_id"], pairs["anchor"], pairs["positive"], strict=True):
        a = anchor_index[anchor]
        pos_score = float(scores[a, corpus_index[positive]])
        ceiling = pos_score
        if cfg.absolute_margin is not None:
            ceiling = min(ceiling, pos_score - cfg.absolute_margin)
        if cfg.relative_margin is not None:
            ceiling = min(ceiling, pos_score - abs(pos_score) * cfg.relative_margin)
        window, extra, rank = [], [], 0
        for c in ranking[a]:
            if doc in corpus_docs[corpus[c]]:
                skipped["same_document"] += 1
                continue
            if norm_corpus[c] in doc_texts[doc]:
                skipped["duplicate_text"] += 1
                continue
            rank += 1
            if rank <= cfg.range_min:
                skipped["rank_below_range_min"] += 1
                continue
            if scores[a, c] > ceiling:
                skipped["margin"] += 1
                continue
            (window if rank <= cfg.range_max else extra).append(c)
            if cfg.sampling_strategy == "top" and len(window) >= cfg.num_negatives:
                break
            if rank >= cfg.range_max and len(window) + len(extra) >= cfg.num_negatives:
                break
        if len(window) >= cfg.num_negatives:
            if cfg.sampling_strategy == "random":
                chosen = list(rng.choice(window, size=cfg.num_negatives, replace=False))
            else:
                chosen = window[: cfg.num_negatives]
        else:
            chosen = (window + extra)[: cfg.num_negatives]
            beyond_range += 1
            if len(chosen) < cfg.num_negatives:
                short += 1
                continue
        rows.append([anchor, positive, *(corpus[c] for c in chosen)])
        pos_scores.append(pos_score)
        neg_scores.extend(float(scores[a, c]) for c in chosen)
    columns = ["anchor", "positive", *(f"negative_{i + 1}" for i in range(cfg.num_negatives))]
    stats = {
        "rows_in": len(pairs),
        "rows_out": len(rows),
        "rows_dropped_no_candidates": short,
        "rows_filled_beyond_range_max": beyond_range,
        "skipped": {g: int(skipped[g]) for g in GUARDS},
        "positive_score": _summary(pos_scores),
        "negative_score": _summary(neg_scores),
    }
    return pd.DataFrame(rows, columns=columns), stats
