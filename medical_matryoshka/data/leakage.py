"""Leakage and duplicate checks between splits: test data must never be trained on."""

from __future__ import annotations

import dataclasses

import pandas as pd

from medical_matryoshka.core.errors import PipelineError


def normalise(text: str) -> str:
    """Lower case, single spaces: what counts as the same text for leakage and duplicate checks."""
    return " ".join(str(text).lower().split())


def is_boilerplate(text: str, max_words: int) -> bool:
    """At most `max_words` words ("None.", "Case series."): no information, so no leak and no link."""
    return len(str(text).split()) <= max_words


def _test_texts(records: pd.DataFrame) -> tuple[set[str], set[str]]:
    """The test split's queries and passages, normalised."""
    test = records[records["split"] == "test"]
    return set(test["anchor"].map(normalise)), set(test["positive"].map(normalise))


@dataclasses.dataclass(frozen=True)
class LeakReport:
    exclude: set[str]  # boilerplate texts (normalised) in test and train/dev: the train pairs holding one go
    shared_test_passages: int  # test passages that are also train/dev positives (allowed over a shared corpus)
    dropped_queries: set[str]  # train/dev queries (doc_id) repeating a test query, with leaked_queries=drop


def _examples(texts: list[str]) -> str:
    return "; ".join(f"{t[:80]!r}" for t in texts[:3])


def _plural(n: int, one: str, many: str) -> str:
    return f"{n} {one if n == 1 else many}"


def check_leakage(
    records: pd.DataFrame, boilerplate_max_words: int, shared_passages: str = "fail", leaked_queries: str = "fail"
) -> LeakReport:
    """Stop when a test query appears in the train or dev data (after normalising), or with `leaked_queries`
    "drop" name the train/dev queries that repeat one (to be removed); a test passage that is also a train/dev
    positive stops too when `shared_passages` is "fail", else it is counted.

    A shared passage is legitimate retrieval over a fixed corpus (the corpus is known when training): only
    the test queries must be unseen. Boilerplate texts of at most `boilerplate_max_words` words ("None.",
    "Case series.") are not information leaks: they are returned (normalised) so the training pairs holding
    one can be dropped.
    """
    test_queries, test_passages = _test_texts(records)

    def real(text: str) -> bool:
        return not is_boilerplate(text, boilerplate_max_words)

    rest = records[records["split"] != "test"]
    repeats = rest["anchor"].map(lambda a: real(a) and normalise(a) in test_queries)
    dropped = set(rest.loc[repeats, "doc_id"]) if leaked_queries == "drop" else set()
    rest = rest[~rest["doc_id"].isin(dropped)]
    rest_texts = {c: sorted(set(rest[c])) for c in ("anchor", "positive")}
    query_leaks = [t for c in ("anchor", "positive") for t in rest_texts[c] if normalise(t) in test_queries]
    passage_leaks = [t for c in ("positive", "anchor") for t in rest_texts[c] if normalise(t) in test_passages]
    boiler = {normalise(t) for t in query_leaks + passage_leaks if not real(t)}
    query_leaks = sorted({t for t in query_leaks if real(t)})
    passage_leaks = sorted({t for t in passage_leaks if real(t)})
    if query_leaks:
        raise PipelineError(
            f"test data leaks into train/dev: {_plural(len(query_leaks), 'test query', 'test queries')} also in the "
            f"train/dev data, e.g. {_examples(query_leaks)}; the test queries must be unseen: remove them from the "
            "training part of the source (a BEIR set: their lines in qrels/train.tsv; a pairs file with "
            "data.test_path: their rows in data.path), or drop the train/dev "
            "queries that repeat one with -S data.leaked_queries=drop"
        )
    if passage_leaks and shared_passages == "fail":
        raise PipelineError(
            f"{_plural(len(passage_leaks), 'test passage is', 'test passages are')} also train/dev data, e.g. "
            f"{_examples(passage_leaks)}; over a fixed corpus that is allowed (-S data.shared_passages=report "
            "counts them instead), else remove them from the source"
        )
    return LeakReport(boiler, len(passage_leaks), dropped)


def shared_passage_rule(setting: str, split: dict) -> str:
    """data.shared_passages resolved: auto fails where the project drew the test split by component (a shared
    passage cannot come from the split, only from the data) and reports over an official or a query split."""
    if setting != "auto":
        return setting
    return "fail" if split["test"] == "component" else "report"


def clean_negatives(records: pd.DataFrame, keep_test_passages: bool) -> tuple[pd.DataFrame, dict[str, int]]:
    """Given negatives of the train/dev rows without false negatives (a positive of the same query, or the
    query itself) and, unless `keep_test_passages`, without test passages; a test query as a negative stops."""
    test = records["split"] == "test"
    test_queries, test_passages = _test_texts(records)
    own = records.groupby("doc_id")["positive"].agg(lambda ps: {normalise(p) for p in ps}).to_dict()
    counts = {"given": 0, "false_negatives_dropped": 0, "test_passages_dropped": 0, "test_passages_kept": 0}
    cleaned = []
    for doc, anchor, negatives, is_test in zip(
        records["doc_id"], records["anchor"], records["negatives"], test, strict=True
    ):
        kept = []
        for negative in [] if is_test else negatives:
            text = normalise(negative)
            counts["given"] += 1
            if text in own[doc] or text == normalise(anchor):
                counts["false_negatives_dropped"] += 1
            elif text in test_queries:
                raise PipelineError(
                    f"a given negative is a test query ({negative[:80]!r}): the test queries must be unseen; "
                    "remove it from the negative column"
                )
            elif text in test_passages and not keep_test_passages:
                counts["test_passages_dropped"] += 1
            else:
                counts["test_passages_kept"] += text in test_passages
                kept.append(negative)
        cleaned.append(tuple(kept))
    return records.assign(negatives=cleaned), counts


def duplicate_report(records: pd.DataFrame) -> dict[str, int]:
    """Duplicates inside train+dev: repeated pairs, and passages shared by several documents."""
    rest = records[records["split"] != "test"]
    norm = rest["positive"].map(normalise)
    return {
        "duplicate_pairs": int(rest.duplicated(["anchor", "positive"]).sum()),
        "passages_in_several_documents": int((rest.assign(n=norm).groupby("n")["doc_id"].nunique() > 1).sum()),
    }
