"""Split records into train / dev / test by query or by connected component, and build the training pairs
and retrieval sets (many-to-many: a query's relevant set is every passage linked to it)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from medical_matryoshka.core.errors import PipelineError
from medical_matryoshka.core.sections import DataConfig
from medical_matryoshka.data.graph import component_report, query_components
from medical_matryoshka.data.leakage import normalise


def _draw(groups: pd.Series, fraction: float, seed: int) -> set[str]:
    """A seeded sample of about `fraction` of the queries (groups.index), taken in whole groups.

    The groups (sorted by label) are walked in a seeded permutation and taken while they fit in
    ceil(fraction x queries). With one query a group this is exactly datasets' train_test_split of the
    sorted ids (the same permutation and count), the rule every earlier split of this project used.
    """
    if fraction <= 0 or len(groups) < 2:
        return set()
    sizes = groups.value_counts()
    labels = sorted(sizes.index)
    target = math.ceil(fraction * len(groups))
    chosen, taken = set(), 0
    for i in np.random.default_rng(seed).permutation(len(labels)):
        size = int(sizes[labels[i]])
        if taken + size <= target:
            chosen.add(labels[i])
            taken += size
            if taken == target:
                break
    return set(groups.index[groups.isin(chosen)])


def _empty_draw(groups: pd.Series, fraction: float, how: str) -> str:
    """Why drawing `fraction` of the queries (groups.index) in whole groups took none."""
    if fraction <= 0:
        return f"data.test_fraction is {fraction:g}"
    if len(groups) < 2:
        return f"{len(groups)} query in all: one cannot be both trained and tested on"
    target, smallest = math.ceil(fraction * len(groups)), int(groups.value_counts().min())
    return (
        f"{len(groups)} queries, so the test share is {target}, and the smallest connected component "
        f"(queries linked by shared passages) holds {smallest}: none fits; -S data.split_by=query splits by "
        "query instead"
        if how == "component"
        else f"{len(groups)} queries, test share {target}"
    )


def require_searchable(
    test_set: dict, claims: int, data: DataConfig, official: bool, capped: bool = False, cutoff: int = 10
) -> None:
    """A test split must search more passages than the top-k cut-off (with `cutoff` or fewer, every relevant
    passage is in the top k by construction: a 1-passage corpus scores 1.0 whatever the model) and hold at least
    2 claims. Otherwise one line: what it has, what it needs, and the change that gets there (raising
    data.max_docs only where it left claims out: `capped`)."""
    queries, corpus = len(test_set["queries"]), len(test_set["corpus"])
    if corpus > cutoff and queries >= 2:
        return
    needs = []
    if corpus <= cutoff:
        fix = "add passages" + (f" or raise data.max_docs ({data.max_docs})" if capped else "")
        needs.append(f"more than {cutoff} passages to search ({fix})")
    if queries < 2:
        if official:
            needs.append("at least 2 claims in the source's test split")
        else:
            least = math.floor(1 / data.test_fraction) + 1
            needs.append(
                f"at least 2 test claims (with data.test_fraction {data.test_fraction:g} that takes {least} claims or "
                f"more in all, or a larger data.test_fraction)"
            )
    raise PipelineError(
        f"the test split has {queries} claim(s) over {corpus} passage(s), {claims} claim(s) in all: too few to "
        f"measure retrieval at top-{cutoff}; it needs {' and '.join(needs)}"
    )


def _grouping(records: pd.DataFrame, split_by: str, keep_share: float, boilerplate_max_words: int):
    """(doc_id -> group, how): whole components, or single queries where split_by asks or, under auto,
    where one component holds more than `keep_share` of the queries (it could not stay in train)."""
    components = query_components(records, boilerplate_max_words)
    report = component_report(records, components)
    hub = report["largest_queries"] > keep_share * len(components)
    if split_by == "query" or (split_by == "auto" and hub):
        largest = f"one component holds {report['largest_queries']} of {len(components)} queries"
        how = "query" if split_by == "query" else f"query (auto: {largest}, too many to split by component)"
        return pd.Series(components.index, index=components.index), how, report
    return components, "component", report


def _keep_docs_per_split(records: pd.DataFrame, max_docs: int, seed: int) -> pd.DataFrame:
    """At most `max_docs` queries of every split (seeded), for smoke runs."""
    rng = np.random.default_rng(seed)
    keep: set[str] = set()
    for _, group in records.groupby("split"):
        ids = sorted(group["doc_id"].unique())
        keep.update(rng.permutation(ids)[:max_docs].tolist() if len(ids) > max_docs else ids)
    return records[records["doc_id"].isin(keep)].reset_index(drop=True)


def assign_splits(
    records: pd.DataFrame,
    dev_fraction: float,
    test_fraction: float,
    seed: int,
    max_docs: int | None = None,
    split_by: str = "auto",
    boilerplate_max_words: int = 4,
) -> tuple[pd.DataFrame, dict]:
    """Label every record train, dev or test, by query, so no query straddles two splits; and say how.

    An official split (records already marked "test", and "dev" where the source has one) is kept;
    otherwise `test_fraction` of the queries is drawn, then `dev_fraction` of the rest, each in whole
    connected components of the claim-passage graph (`split_by`: auto | component | query).
    `max_docs` keeps at most that many queries per split (seeded), for smoke runs.
    """
    records = records.copy()
    official = records.drop_duplicates("doc_id").set_index("doc_id")["split"]
    info: dict = {}
    if official.isna().all():
        groups, how, info["graph"] = _grouping(
            records, split_by, 1 - test_fraction - dev_fraction, boilerplate_max_words
        )
        test_docs = _draw(groups, test_fraction, seed)
        info["test"] = how
        if not test_docs:
            info["test_empty_because"] = _empty_draw(groups, test_fraction, how)
    else:
        test_docs = set(official.index[official == "test"])
        info["test"] = "official"
    rest = records[~records["doc_id"].isin(test_docs)]
    if (official == "dev").any():
        dev_docs, info["dev"] = set(official.index[official == "dev"]), "official"
    else:
        groups, how, graph = _grouping(rest, split_by, 1 - dev_fraction, boilerplate_max_words)
        info.setdefault("graph", graph)
        dev_docs, info["dev"] = _draw(groups, dev_fraction, seed), how
    records["split"] = ["test" if d in test_docs else "dev" if d in dev_docs else "train" for d in records["doc_id"]]
    if max_docs is not None:
        records = _keep_docs_per_split(records, max_docs, seed)
    for name in ("train", "test"):
        if not (records["split"] == name).any():
            why = (
                "the source's official test split holds no query"
                if name == "test" and info["test"] == "official"
                else info["test_empty_because"]
                if name == "test" and "test_empty_because" in info
                else f"{records['doc_id'].nunique()} queries in all, {test_fraction:g} drawn for test and "
                f"{dev_fraction:g} of the rest for dev"
                + (f", then at most data.max_docs={max_docs} per split" if max_docs is not None else "")
            )
            raise PipelineError(
                f"the {name} split is empty ({why}); use more data or change data.test_fraction / data.dev_fraction"
            )
    return records, info


def train_pairs(records: pd.DataFrame, exclude: set[str] = frozenset()) -> pd.DataFrame:
    """(anchor, positive, doc_id[, negatives]) rows of the train split, without exact duplicates and `exclude`d
    texts; the negatives column (a list of texts a row) only where the source gave negatives."""
    columns = ["anchor", "positive", "doc_id"]
    if records["negatives"].map(len).any():
        columns.append("negatives")
    train = records.loc[records["split"] == "train", columns]
    if exclude:
        hit = train["anchor"].map(normalise).isin(exclude) | train["positive"].map(normalise).isin(exclude)
        train = train[~hit]
    train = train.drop_duplicates(["anchor", "positive"]).reset_index(drop=True)
    if "negatives" in train:
        train["negatives"] = train["negatives"].map(list)
    return train


def retrieval_set(
    records: pd.DataFrame, split: str, corpus_splits: tuple[str, ...], corpus: dict[str, str] | None = None
) -> dict:
    """Queries = the split's anchors; corpus = `corpus` where the source has a fixed one, else every passage of
    `corpus_splits` (one entry however many queries it serves); relevant = every passage linked to the query.
    Graded judgments (any score other than 1) add grades = {query: {passage: score}}; the stock metrics, binary,
    count every score > 0 as relevant, and the grades stay for a graded metric."""
    queries_rows = records[records["split"] == split]
    if corpus is None:
        corpus_rows = records[records["split"].isin(corpus_splits)]
        corpus = dict(zip(corpus_rows["passage_id"], corpus_rows["positive"], strict=True))
    by_query = queries_rows.groupby("doc_id", sort=False)
    rs = {
        "queries": dict(zip(queries_rows["doc_id"], queries_rows["anchor"], strict=True)),
        "corpus": corpus,
        "relevant": {doc: sorted(set(group["passage_id"])) for doc, group in by_query},
    }
    if (queries_rows["score"] != 1).any():
        rs["grades"] = {
            doc: {p: int(s) for p, s in sorted(zip(group["passage_id"], group["score"], strict=True))}
            for doc, group in by_query
        }
    return rs
