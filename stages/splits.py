"""Split records by document into train / dev / test and build the retrieval sets and statistics."""

from __future__ import annotations

import numpy as np
import pandas as pd
from datasets import Dataset

from stages.errors import PipelineError


def _draw(doc_ids: list[str], fraction: float, seed: int) -> set[str]:
    """A seeded, by-document sample of `fraction` of doc_ids (datasets' train_test_split)."""
    if fraction <= 0 or len(doc_ids) < 2:
        return set()
    split = Dataset.from_dict({"doc_id": sorted(doc_ids)}).train_test_split(test_size=fraction, seed=seed)
    return set(split["test"]["doc_id"])


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
        rng = np.random.default_rng(seed)
        keep: set[str] = set()
        for _, group in records.groupby("split"):
            ids = sorted(group["doc_id"].unique())
            keep.update(rng.permutation(ids)[:max_docs].tolist() if len(ids) > max_docs else ids)
        records = records[records["doc_id"].isin(keep)].reset_index(drop=True)
    for name in ("train", "test"):
        if not (records["split"] == name).any():
            raise PipelineError(
                f"the {name} split is empty ({records['doc_id'].nunique()} documents in all); "
                "use more data or change data.test_fraction / data.dev_fraction"
            )
    return records


def normalise(text: str) -> str:
    """Lower case, single spaces: what counts as the same text for leakage and duplicate checks."""
    return " ".join(str(text).lower().split())


def check_leakage(records: pd.DataFrame, boilerplate_max_words: int) -> set[str]:
    """Stop when a test query or test passage appears in the train or dev data (after normalising).

    Boilerplate texts of at most `boilerplate_max_words` words ("None.", "Case series.") are not
    information leaks: they are returned (normalised) so the training pairs holding one can be dropped.
    """
    test = records["split"] == "test"
    test_texts = set(records.loc[test, "anchor"].map(normalise)) | set(records.loc[test, "positive"].map(normalise))
    rest = records[~test]
    leaked = {
        column: sorted(set(rest.loc[rest[column].map(normalise).isin(test_texts), column]))
        for column in ("anchor", "positive")
    }
    real = {c: [t for t in texts if len(t.split()) > boilerplate_max_words] for c, texts in leaked.items()}
    if real["anchor"] or real["positive"]:
        examples = "; ".join(f"{c} {t[:80]!r}" for c, texts in real.items() for t in texts[:3])
        raise PipelineError(
            f"test data leaks into train/dev: {len(real['anchor'])} anchor(s) and {len(real['positive'])} "
            f"passage(s) also in the test split, e.g. {examples}; remove them from the source data"
        )
    return {normalise(t) for texts in leaked.values() for t in texts}


def duplicate_report(records: pd.DataFrame) -> dict[str, int]:
    """Duplicates inside train+dev: repeated pairs, and passages shared by several documents."""
    rest = records[records["split"] != "test"]
    norm = rest["positive"].map(normalise)
    return {
        "duplicate_pairs": int(rest.duplicated(["anchor", "positive"]).sum()),
        "passages_in_several_documents": int((rest.assign(n=norm).groupby("n")["doc_id"].nunique() > 1).sum()),
    }


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


def token_stats(tokenizer, texts: list[str], max_seq_length: int) -> dict[str, float]:
    """min / mean / max tokens per text as the model sees them (special tokens, truncation included)."""
    lengths = [len(ids) for ids in tokenizer(texts, truncation=True, max_length=max_seq_length)["input_ids"]]
    return {"min": int(min(lengths)), "mean": round(float(np.mean(lengths)), 2), "max": int(max(lengths))}


def dataset_stats(records: pd.DataFrame, pairs: pd.DataFrame, tokenizer, max_seq_length: int) -> dict:
    """The model card's "Training Dataset" statistics, the size of every split, duplicates."""
    docs = records.drop_duplicates("doc_id")
    counts = docs["split"].value_counts()
    all_train = records[records["split"] == "train"]
    return {
        "duplicates": {
            **duplicate_report(records),
            "train_pairs_dropped": len(all_train) - len(pairs),
        },
        "rows": {
            "train_pairs": len(pairs),
            "train_docs": int(counts.get("train", 0)),
            "dev_docs": int(counts.get("dev", 0)),
            "test_docs": int(counts.get("test", 0)),
            "corpus_passages": len(records),
        },
        "tokens": {
            "anchor": token_stats(tokenizer, pairs["anchor"].tolist(), max_seq_length),
            "positive": token_stats(tokenizer, pairs["positive"].tolist(), max_seq_length),
        },
    }
