"""Hard-negative mining with false-negative guards.

For every (anchor, positive) train pair, candidates are the training passages ranked by the base model's
cosine similarity to the anchor (anchors and corpus encoded once). A candidate is skipped when it comes
from the anchor's own document (every positive of the same anchor included), when its text equals one of
the document's passages after normalising whitespace and case, when its rank is below `range_min`, or
when it scores too close to the positive (absolute / relative margin: likely a false negative). From the
remaining candidates within `range_max`, `num_negatives` are taken (top or seeded random); a row whose
window runs short takes the next guarded candidates beyond `range_max` (easier, never unguarded).
Skip counts are over the candidates examined: with "top", those ranked above the chosen negatives.

Given negatives (a `negatives` column from the source, data.columns.negative) come first: every row gets
max(num_negatives, the most given to one row) negatives, its given ones and mined ones for the rest (never a
mined copy of a given one). With mining off the given negatives pass through as they are.
"""

from __future__ import annotations

import dataclasses
from collections import Counter

import numpy as np
import pandas as pd
import torch

from medical_matryoshka.core.errors import PipelineError
from medical_matryoshka.core.models import encode
from medical_matryoshka.core.sections import MiningConfig
from medical_matryoshka.data.leakage import normalise

GUARDS = ("same_document", "duplicate_text", "rank_below_range_min", "margin")


@dataclasses.dataclass
class _Corpus:
    """The distinct training passages, and which documents hold which texts."""

    texts: list[str]
    normalised: list[str]
    docs_of: dict[str, set[str]]  # passage -> the documents holding it
    doc_texts: dict[str, set[str]]  # document -> its passages, normalised

    @classmethod
    def of(cls, pairs: pd.DataFrame) -> _Corpus:
        texts = pairs.drop_duplicates("positive")["positive"].tolist()
        docs_of: dict[str, set[str]] = {}
        doc_texts: dict[str, set[str]] = {}
        for doc, text in zip(pairs["doc_id"], pairs["positive"], strict=True):
            docs_of.setdefault(text, set()).add(doc)
            doc_texts.setdefault(doc, set()).add(normalise(text))
        return cls(texts, [normalise(t) for t in texts], docs_of, doc_texts)


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


def _score(model, anchors: list[str], corpus: list[str], batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Cosine scores of every anchor against every passage, and each anchor's ranking (best first)."""
    kwargs = {"batch_size": batch_size, "convert_to_tensor": True, "normalize_embeddings": True}
    anchor_emb = encode(model, anchors, f"mining: anchors ({len(anchors)})", "encode_query", **kwargs)
    corpus_emb = encode(model, corpus, f"mining: passages ({len(corpus)})", "encode_document", **kwargs)
    scores = (anchor_emb @ corpus_emb.T).float().cpu()
    return scores.numpy(), torch.argsort(scores, dim=1, descending=True).numpy()


def _ceiling(pos_score: float, cfg: MiningConfig) -> float:
    """The highest score a negative may have: below the positive by the configured margins."""
    ceiling = pos_score
    if cfg.absolute_margin is not None:
        ceiling = min(ceiling, pos_score - cfg.absolute_margin)
    if cfg.relative_margin is not None:
        ceiling = min(ceiling, pos_score - abs(pos_score) * cfg.relative_margin)
    return ceiling


def _guarded_candidates(
    doc: str,
    ranking: np.ndarray,
    scores: np.ndarray,
    ceiling: float,
    corpus: _Corpus,
    cfg: MiningConfig,
    skipped,
    need: int,
    given: set[str],
) -> tuple[list[int], list[int]]:
    """(candidates within range_max, candidates beyond it) that pass every guard, counting the skips."""
    window, extra, rank = [], [], 0
    for c in ranking:
        if doc in corpus.docs_of[corpus.texts[c]]:
            skipped["same_document"] += 1
            continue
        if corpus.normalised[c] in corpus.doc_texts[doc] or corpus.normalised[c] in given:
            skipped["duplicate_text"] += 1
            continue
        rank += 1
        if rank <= cfg.range_min:
            skipped["rank_below_range_min"] += 1
            continue
        if scores[c] > ceiling:
            skipped["margin"] += 1
            continue
        (window if rank <= cfg.range_max else extra).append(c)
        if cfg.sampling_strategy == "top" and len(window) >= need:
            break
        if rank >= cfg.range_max and len(window) + len(extra) >= need:
            break
    return window, extra


def _choose(window: list[int], extra: list[int], need: int, cfg: MiningConfig, rng) -> list[int]:
    """`need` candidates from the window (top or seeded random), filled from beyond it when it runs short."""
    if len(window) >= need:
        if cfg.sampling_strategy == "random":
            return list(rng.choice(window, size=need, replace=False))
        return window[:need]
    return (window + extra)[:need]


def given_negatives(pairs: pd.DataFrame) -> list[list[str]]:
    """Each row's given negatives (the prepare stage's `negatives` column), [] a row without."""
    if "negatives" not in pairs:
        return [[] for _ in range(len(pairs))]
    return [list(n) for n in pairs["negatives"]]


def pass_given_negatives(pairs: pd.DataFrame) -> tuple[pd.DataFrame, dict]:
    """Mining off: (anchor, positive, negative_1..k) with the given negatives, k the fewest any row has (every
    row of one training table needs as many); the ones beyond k are counted, not used."""
    stats = {"rows_in": len(pairs), "rows_out": len(pairs)}
    if "negatives" not in pairs:
        return pairs[["anchor", "positive"]], stats
    given = given_negatives(pairs)
    width = min(map(len, given)) if given else 0
    rows = [[a, p, *g[:width]] for a, p, g in zip(pairs["anchor"], pairs["positive"], given, strict=True)]
    columns = ["anchor", "positive", *(f"negative_{i + 1}" for i in range(width))]
    stats["given_negatives_used"] = width * len(rows)
    stats["given_negatives_unused"] = sum(map(len, given)) - stats["given_negatives_used"]
    return pd.DataFrame(rows, columns=columns), stats


def mine_hard_negatives(model, pairs: pd.DataFrame, cfg: MiningConfig, seed: int) -> tuple[pd.DataFrame, dict]:
    """(anchor, positive, negative_1..n) rows from (doc_id, anchor, positive[, negatives]) pairs, and mining
    statistics; n = max(num_negatives, the most negatives given to one row), given ones first."""
    corpus = _Corpus.of(pairs)
    given = given_negatives(pairs)
    width = max([cfg.num_negatives, *map(len, given)])
    if len(corpus.texts) <= cfg.num_negatives:
        raise PipelineError(
            f"only {len(corpus.texts)} training passages: too few to mine {cfg.num_negatives} negatives; add "
            "training pairs, lower -S mining.num_negatives, or train without mined negatives: -S mining.enabled=false"
        )
    anchors = pairs.drop_duplicates("anchor")["anchor"].tolist()
    anchor_index = {a: i for i, a in enumerate(anchors)}
    corpus_index = {t: i for i, t in enumerate(corpus.texts)}
    scores, ranking = _score(model, anchors, corpus.texts, cfg.batch_size)

    rng = np.random.default_rng(seed)
    skipped: Counter[str] = Counter()
    rows, pos_scores, neg_scores = [], [], []
    beyond_range, short = 0, 0
    mined = given_used = 0
    for doc, anchor, positive, own in zip(pairs["doc_id"], pairs["anchor"], pairs["positive"], given, strict=True):
        a = anchor_index[anchor]
        pos_score = float(scores[a, corpus_index[positive]])
        need = width - len(own)
        chosen: list[int] = []
        if need:
            ceiling = _ceiling(pos_score, cfg)
            given_texts = {normalise(n) for n in own}
            window, extra = _guarded_candidates(
                doc, ranking[a], scores[a], ceiling, corpus, cfg, skipped, need, given_texts
            )
            chosen = _choose(window, extra, need, cfg, rng)
            beyond_range += len(window) < need
            if len(chosen) < need:
                short += 1
                continue
        rows.append([anchor, positive, *own, *(corpus.texts[c] for c in chosen)])
        mined += len(chosen)
        given_used += len(own)
        pos_scores.append(pos_score)
        neg_scores.extend(float(scores[a, c]) for c in chosen)
    if not rows:
        raise PipelineError(
            f"mining kept none of the {len(pairs)} training pairs ({len(corpus.doc_texts)} training claims): every "
            f"candidate was skipped by a guard ({dict(skipped)}); use more data (data.max_docs) or train on "
            "plain pairs (-S mining.enabled=false)"
        )
    columns = ["anchor", "positive", *(f"negative_{i + 1}" for i in range(width))]
    stats = {
        "rows_in": len(pairs),
        "rows_out": len(rows),
        **({"given_negatives_used": given_used, "mined_negatives": mined} if "negatives" in pairs else {}),
        "rows_dropped_no_candidates": short,
        "rows_filled_beyond_range_max": beyond_range,
        "skipped": {g: int(skipped[g]) for g in GUARDS},
        "positive_score": _summary(pos_scores),
        "negative_score": _summary(neg_scores),
    }
    return pd.DataFrame(rows, columns=columns), stats
