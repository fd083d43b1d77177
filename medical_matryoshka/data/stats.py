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


def summary_lines(stats: dict, max_seq_length: int, details: str) -> list[str]:
    """What `prepare` says in the terminal: sizes, how the splits were drawn, what was counted, tokens."""
    rows, tokens, split = stats["rows"], stats["tokens"], stats["split"]
    lines = [
        f"{rows['train_pairs']} training pairs from {rows['train_docs']} documents; dev {rows['dev_docs']} and "
        f"test {rows['test_docs']} documents over {rows['corpus_passages']} corpus passages"
    ]
    how = f"split: test {split['test']}, dev {split['dev']}"
    if "graph" in split:
        graph = split["graph"]
        largest = f"the largest {graph['largest_queries']} queries / {graph['largest_rows']} rows"
        how += f" ({graph['count']} components, {largest})"
    if stats["source"].get("rows_collapsed"):
        how += f"; {stats['source']['rows_collapsed']} repeated rows collapsed"
    lines.append(how)
    if split["leaked_queries_dropped"]:
        lines.append(
            f"dropped {split['leaked_queries_dropped']} train/dev query(ies) repeating a test query word for word "
            "(data.leaked_queries=drop), counted as split.leaked_queries_dropped"
        )
    if split["shared_test_passages"]:
        lines.append(
            f"{split['shared_test_passages']} test passage(s) are also train/dev positives: allowed over a shared "
            "corpus (only test queries must be unseen), counted as split.shared_test_passages"
        )
    if "negatives" in stats:
        n = stats["negatives"]
        lines.append(
            f"given negatives: {n['given']} read, {n['false_negatives_dropped']} false negatives dropped (a positive "
            f"of their own query), {n['test_passages_dropped']} test passages dropped"
        )
    lines.append(
        f"tokens per text (max {max_seq_length}): anchor mean {tokens['anchor']['mean']}, positive mean "
        f"{tokens['positive']['mean']}; details in {details}"
    )
    return lines
