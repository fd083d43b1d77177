"""The data set statistics of a sentence-transformers model card: rows per split, tokens per text."""

from __future__ import annotations

import numpy as np
import pandas as pd

from medical_matryoshka.data.leakage import duplicate_report


def token_stats(tokenizer, texts: list[str], max_seq_length: int) -> dict[str, float]:
    """min / mean / max tokens per text as the model sees them (special tokens, truncation included)."""
    lengths = [len(ids) for ids in tokenizer(texts, truncation=True, max_length=max_seq_length)["input_ids"]]
    return {"min": int(min(lengths)), "mean": round(float(np.mean(lengths)), 2), "max": int(max(lengths))}


def dataset_stats(records: pd.DataFrame, pairs: pd.DataFrame, corpus_size: int, tokenizer, max_seq_length: int) -> dict:
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
            "corpus_passages": corpus_size,
        },
        "tokens": {
            "anchor": token_stats(tokenizer, pairs["anchor"].tolist(), max_seq_length),
            "positive": token_stats(tokenizer, pairs["positive"].tolist(), max_seq_length),
        },
    }


def relevance_stats(records: pd.DataFrame) -> dict[str, int]:
    """How many-to-many the judgments are: queries with several passages, passages serving several queries."""
    per_query = records.groupby("doc_id")["passage_id"].nunique()
    per_passage = records.groupby("passage_id")["doc_id"].nunique()
    return {
        "judgments": len(records),
        "queries": int(per_query.size),
        "passages": int(per_passage.size),
        "queries_with_several_passages": int((per_query > 1).sum()),
        "max_passages_per_query": int(per_query.max()),
        "passages_with_several_queries": int((per_passage > 1).sum()),
        "max_queries_per_passage": int(per_passage.max()),
    }
