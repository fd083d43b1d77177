"""Split records by document into train / dev / test, and build the training pairs and retrieval sets."""

from __future__ import annotations

import numpy as np
import pandas as pd
from datasets import Dataset

from medical_matryoshka.data.leakage import normalise
from medical_matryoshka.errors import PipelineError


def _draw(doc_ids: list[str], fraction: float, seed: int) -> set[str]:
    """A seeded, by-document sample of `fraction` of doc_ids (datasets' train_test_split)."""
    if fraction <= 0 or len(doc_ids) < 2:
        return set()
    split = Dataset.from_dict({"doc_id": sorted(doc_ids)}).train_test_split(test_size=fraction, seed=seed)
    return set(split["test"]["doc_id"])


def _keep_docs_per_split(records: pd.DataFrame, max_docs: int, seed: int) -> pd.DataFrame:
    """At most `max_docs` documents of every split (seeded), for smoke runs."""
    rng = np.random.default_rng(seed)
    keep: set[str] = set()
    for _, group in records.groupby("split"):
        ids = sorted(group["doc_id"].unique())
        keep.update(rng.permutation(ids)[:max_docs].tolist() if len(ids) > max_docs else ids)
    return records[records["doc_id"].isin(keep)].reset_index(drop=True)


def assign_splits(
    records: pd.DataFrame, dev_fraction: float, test_fraction: float, seed: int, max_docs: int | None = None
) -> pd.DataFrame:
    """Label every record train, dev or test, by document, so no document straddles two splits.

    An official test split (records already marked "test") is kept; otherwise `test_fraction` of the
    documents is drawn. Dev documents are drawn from the non-test ones. `max_docs` keeps at most that
    many documents per split (seeded), for smoke runs.
    """
    records = records.copy()
    docs = records.drop_duplicates("doc_id")
    if docs["split"].isna().all():
        test_docs = _draw(docs["doc_id"].tolist(), test_fraction, seed)
    else:
        test_docs = set(docs.loc[docs["split"] == "test", "doc_id"])
    rest = [d for d in docs["doc_id"] if d not in test_docs]
    dev_docs = _draw(rest, dev_fraction, seed)
    records["split"] = ["test" if d in test_docs else "dev" if d in dev_docs else "train" for d in records["doc_id"]]
    if max_docs is not None:
        records = _keep_docs_per_split(records, max_docs, seed)
    for name in ("train", "test"):
        if not (records["split"] == name).any():
            raise PipelineError(
                f"the {name} split is empty ({records['doc_id'].nunique()} documents in all); "
                "use more data or change data.test_fraction / data.dev_fraction"
            )
    return records


def train_pairs(records: pd.DataFrame, exclude: set[str] = frozenset()) -> pd.DataFrame:
    """(anchor, positive, doc_id) rows of the train split, without exact duplicates and `exclude`d texts."""
    train = records.loc[records["split"] == "train", ["anchor", "positive", "doc_id"]]
    if exclude:
        hit = train["anchor"].map(normalise).isin(exclude) | train["positive"].map(normalise).isin(exclude)
        train = train[~hit]
    return train.drop_duplicates(["anchor", "positive"]).reset_index(drop=True)


def retrieval_set(records: pd.DataFrame, split: str, corpus_splits: tuple[str, ...]) -> dict:
    """Queries = the split's anchors, corpus = every positive of `corpus_splits`, relevant = own positives."""
    queries_rows = records[records["split"] == split]
    corpus_rows = records[records["split"].isin(corpus_splits)]
    return {
        "queries": dict(zip(queries_rows["doc_id"], queries_rows["anchor"], strict=True)),
        "corpus": dict(zip(corpus_rows["passage_id"], corpus_rows["positive"], strict=True)),
        "relevant": {doc: sorted(group["passage_id"]) for doc, group in queries_rows.groupby("doc_id", sort=False)},
    }
