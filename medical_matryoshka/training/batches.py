"""Batches without in-batch false negatives: a batch sampler over the relevance graph of the training split.

MultipleNegativesRankingLoss treats every other text of a batch as a negative. The stock NO_DUPLICATES sampler
keeps a text out of a batch twice, but in many-to-many data a row (A, P1) still meets a row (B, P2) where P2
is also relevant to A: P2 is pushed away from A. What the loss scores, by direction (sentence-transformers'
MultipleNegativesRankingLoss):
  query_to_doc    a row's query against every passage of the batch (positives and negatives)
  doc_to_query    a row's positive against every query of the batch
  query_to_query  a row's query against the other queries
  doc_to_doc      a row's positive against every other row's passages
so a batch is clean when no query meets a passage relevant to it (the first two), no two queries share a
relevant passage (query_to_query on), and no positive meets a passage that shares a relevant query with it
(doc_to_doc on). RelevanceAwareBatchSampler builds such batches greedily, as the stock sampler does (rows that
clash are deferred to a later batch); `false_negatives` counts what a batch lets through, for any sampler.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence

import numpy as np
import pandas as pd
import torch
from sentence_transformers.base.sampler import DefaultBatchSampler

NEGATIVE_PREFIX = "negative"  # the mined pairs' negative_1..n columns


@dataclasses.dataclass(frozen=True)
class Row:
    query: str
    positive: str
    negatives: tuple[str, ...]

    @property
    def passages(self) -> tuple[str, ...]:
        return (self.positive, *self.negatives)

    @property
    def texts(self) -> frozenset[str]:
        return frozenset((self.query, *self.passages))


class RelevanceGraph:
    """Which passages are relevant to which queries in the training split (texts as the trainer sees them)."""

    def __init__(self, judgments: Iterable[tuple[str, str]]):
        self.relevant: dict[str, set[str]] = {}  # query -> its relevant passages
        self.queries_of: dict[str, set[str]] = {}  # passage -> the queries it is relevant to
        for query, passage in judgments:
            self.relevant.setdefault(query, set()).add(passage)
            self.queries_of.setdefault(passage, set()).add(query)

    @classmethod
    def of_pairs(cls, pairs: pd.DataFrame) -> RelevanceGraph:
        return cls(zip(pairs["anchor"], pairs["positive"], strict=True))

    def relevant_to(self, query: str) -> set[str]:
        return self.relevant.get(query, set())

    def sharing_a_passage(self, query: str) -> set[str]:
        """The other queries with a relevant passage in common with `query`."""
        return {q for p in self.relevant_to(query) for q in self.queries_of[p]} - {query}

    def sharing_a_query(self, passage: str) -> set[str]:
        """The other passages relevant to a query `passage` is relevant to."""
        return {p for q in self.queries_of.get(passage, ()) for p in self.relevant[q]} - {passage}


def rows_of(columns: dict[str, Sequence[str]]) -> list[Row]:
    """Rows from a training table's columns: anchor, positive, negative_1..n (the order MNRL reads them in)."""
    negatives = [columns[c] for c in columns if c.startswith(NEGATIVE_PREFIX)]
    return [
        Row(a, p, tuple(n[i] for n in negatives))
        for i, (a, p) in enumerate(zip(columns["anchor"], columns["positive"], strict=True))
    ]


DIRECTED = ("query_to_doc", "query_to_query", "doc_to_doc")


def false_negatives(batch: Sequence[Row], graph: RelevanceGraph, directions: Sequence[str]) -> Counter[str]:
    """What a batch lets the loss push apart although the data says they belong together, by kind:
    query_to_doc (a query and a passage relevant to it, of another row: query_to_doc and doc_to_query both
    score them), query_to_query (two queries that share a relevant passage), doc_to_doc (a row's positive and
    another row's passage that share a relevant query). Each pair counts once."""
    found: Counter[str] = Counter()
    for i, r in enumerate(batch):
        relevant = graph.relevant_to(r.query)
        for j, s in enumerate(batch):
            if i == j:
                continue
            found["query_to_doc"] += sum(p in relevant for p in s.passages)
            if j < i:
                continue
            if "query_to_query" in directions:
                found["query_to_query"] += bool(relevant & graph.relevant_to(s.query))
            if "doc_to_doc" in directions:  # a positive against the other row's passages, each pair once
                pairs = {frozenset((r.positive, d)) for d in s.passages} | {
                    frozenset((s.positive, d)) for d in r.passages
                }
                found["doc_to_doc"] += sum(len(pair) == 2 and _share_a_query(pair, graph) for pair in pairs)
    return Counter({k: found[k] for k in DIRECTED if k == "query_to_doc" or k in directions})


def _share_a_query(pair: frozenset[str], graph: RelevanceGraph) -> bool:
    a, b = pair
    return bool(graph.queries_of.get(a, set()) & graph.queries_of.get(b, set()))


@dataclasses.dataclass
class _Open:
    """The batch being filled: what it holds, and what it must not take."""

    texts: set[str] = dataclasses.field(default_factory=set)
    queries: set[str] = dataclasses.field(default_factory=set)
    passages: set[str] = dataclasses.field(default_factory=set)
    positives: set[str] = dataclasses.field(default_factory=set)
    no_passage: set[str] = dataclasses.field(default_factory=set)  # relevant to a query here (or near a positive)
    no_positive: set[str] = dataclasses.field(default_factory=set)  # near a negative here (doc_to_doc)
    no_query: set[str] = dataclasses.field(default_factory=set)  # a query one of these passages answers (or near)
    relevant: set[str] = dataclasses.field(default_factory=set)  # passages relevant to a query here
    answered: set[str] = dataclasses.field(default_factory=set)  # queries a passage here is relevant to


@dataclasses.dataclass(frozen=True)
class _Rules:
    """A row's texts and what it forbids, precomputed once."""

    texts: frozenset[str]
    query: str
    positive: str
    passages: frozenset[str]
    no_passage: frozenset[str]
    no_positive: frozenset[str]
    no_query: frozenset[str]
    relevant: frozenset[str]  # the query's relevant passages but its own positive (query_to_doc, doc_to_query)
    answered: frozenset[str]  # the other queries its passages are relevant to


def _rules(row: Row, graph: RelevanceGraph, directions: Sequence[str]) -> _Rules:
    relevant = frozenset(set(graph.relevant_to(row.query)) - {row.positive})
    answered = frozenset({q for p in row.passages for q in graph.queries_of.get(p, ())} - {row.query})
    no_passage, no_query = set(relevant), set(answered)
    no_positive: set[str] = set()
    if "query_to_query" in directions:
        no_query |= graph.sharing_a_passage(row.query)
    if "doc_to_doc" in directions:
        no_passage |= graph.sharing_a_query(row.positive)
        no_positive = {p for n in row.negatives for p in graph.sharing_a_query(n)}
    return _Rules(
        row.texts, row.query, row.positive, frozenset(row.passages), frozenset(no_passage), frozenset(no_positive),
        frozenset(no_query), relevant, answered,
    )  # fmt: skip


def _fits(rules: _Rules, batch: _Open) -> bool:
    return (
        rules.texts.isdisjoint(batch.texts)
        and rules.passages.isdisjoint(batch.no_passage)
        and rules.positive not in batch.no_positive
        and rules.query not in batch.no_query
        and rules.no_passage.isdisjoint(batch.passages)
        and rules.no_positive.isdisjoint(batch.positives)
        and rules.no_query.isdisjoint(batch.queries)
    )


def _add(rules: _Rules, batch: _Open) -> None:
    batch.texts |= rules.texts
    batch.queries.add(rules.query)
    batch.passages |= rules.passages
    batch.positives.add(rules.positive)
    batch.no_passage |= rules.no_passage
    batch.no_positive |= rules.no_positive
    batch.no_query |= rules.no_query
    batch.relevant |= rules.relevant
    batch.answered |= rules.answered


def _fits_loosely(rules: _Rules, batch: _Open) -> bool:
    """No repeated text and no passage relevant to a query in the batch (the false negatives proper); the
    query_to_query and doc_to_doc rules waived."""
    return (
        rules.texts.isdisjoint(batch.texts)
        and rules.passages.isdisjoint(batch.relevant)
        and rules.query not in batch.answered
        and rules.relevant.isdisjoint(batch.passages)
        and rules.answered.isdisjoint(batch.queries)
    )


def _state(rows: Iterable[_Rules]) -> _Open:
    state = _Open()
    for rules in rows:
        _add(rules, state)
    return state


def _make_room(
    index: int, batches: list[list[int]], states: list[_Open], rules: Sequence[_Rules], size: int, test
) -> bool:
    """Put row `index`, which fits in no batch as they are, into a batch where it clashes (by `test`) with one row
    only, that row moving to another batch it fits in (one swap). True if it found one."""
    for k, batch in enumerate(batches):
        clashing = [i for i in batch if not test(rules[index], _state([rules[i]]))]
        if len(clashing) != 1:
            continue
        (moved,) = clashing
        for j, other in enumerate(batches):
            if j != k and len(other) < size and test(rules[moved], states[j]):
                batch.remove(moved)
                other.append(moved)
                _add(rules[moved], states[j])
                batch.append(index)
                states[k] = _state(rules[i] for i in batch)
                return True
    return False


def clean_batches(order: Sequence[int], rules: Sequence[_Rules], batch_size: int, count: int):
    """`count` batches of at most `batch_size` rows, dealt in `order` round the batches: each row goes to the next
    batch (from where the last one went) that it clashes with nothing in, or, failing that, to one where a single
    clashing row can move elsewhere. Rows that still fit nowhere are dealt again with only the false negatives
    proper kept out (query_to_query / doc_to_doc waived, counted by batch_report), rather than wait an epoch;
    rows that fit nowhere even then (a text repeated in every batch, which the stock sampler leaves out too) are
    returned. Returns (batches, rows left out)."""
    batches: list[list[int]] = [[] for _ in range(count)]
    states = [_Open() for _ in range(count)]
    turn = 0
    pending = list(order)
    for test in (_fits, _fits_loosely):
        left = []
        for index in pending:
            for step in range(count):
                k = (turn + step) % count
                if len(batches[k]) < batch_size and test(rules[index], states[k]):
                    batches[k].append(index)
                    _add(rules[index], states[k])
                    turn = (k + 1) % count
                    break
            else:
                if not _make_room(index, batches, states, rules, batch_size, test):
                    left.append(index)
        pending = left
    return batches, pending


class RelevanceAwareBatchSampler(DefaultBatchSampler):
    """Batches in which no row's passage is relevant to another row's query (and, with query_to_query or
    doc_to_doc terms, no two queries share a passage, no two passages a query), len() of them an epoch as the
    trainer's schedule assumes: rows in a seeded order are dealt round the batches (clean_batches); a row that
    fits in none waits for the next epoch (`rows_deferred`)."""

    def __init__(
        self,
        dataset,
        batch_size: int,
        drop_last: bool,
        graph: RelevanceGraph,
        directions: Sequence[str],
        valid_label_columns: list[str] | None = None,
        generator: torch.Generator | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__(dataset, batch_size, drop_last, valid_label_columns, generator, seed)
        names = [c for c in dataset.column_names if c in ("anchor", "positive") or c.startswith(NEGATIVE_PREFIX)]
        columns = {c: dataset[c] for c in names}
        self.rows = rows_of(columns)
        self.rules = [_rules(row, graph, directions) for row in self.rows]
        self.rows_deferred = 0

    def __len__(self) -> int:
        n = len(self.rows)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def epoch_batches(self) -> list[list[int]]:
        """This epoch's len() batches: the rows in a seeded order (seed + epoch, as the stock sampler) dealt round
        them by the relevance rules (clean_batches)."""
        if self.generator is not None and self.seed is not None:
            self.generator.manual_seed(self.seed + self.epoch)
        order = torch.randperm(len(self.rows), generator=self.generator).tolist()
        batches, left = clean_batches(order, self.rules, self.batch_size, len(self))
        if self.drop_last:
            left += [i for b in batches if len(b) < self.batch_size for i in b]
            batches = [b for b in batches if len(b) == self.batch_size]
        self.rows_deferred = len(left)
        return [b for b in batches if b]

    def __iter__(self) -> Iterator[list[int]]:
        yield from self.epoch_batches()


def stock_batches(dataset, batch_size: int, seed: int) -> list[list[int]]:
    """The batches sentence-transformers' NO_DUPLICATES sampler makes of `dataset` in the first epoch, with
    the trainer's seeding: what the relevance rules are measured against."""
    from sentence_transformers.base.sampler import NoDuplicatesBatchSampler

    generator = torch.Generator()
    sampler = NoDuplicatesBatchSampler(dataset, batch_size, drop_last=False, generator=generator, seed=seed)
    return [list(b) for b in sampler]


def batch_report(batches: Sequence[Sequence[int]], rows: Sequence[Row], graph, directions, taken: int) -> dict:
    """False negatives by kind and their total, over the `taken` batches the trainer takes an epoch (the stock
    sampler may yield more than its len(): the trainer never sees those), and how many rows those hold."""
    used = list(batches[:taken])
    found: Counter[str] = Counter()
    for batch in used:
        found.update(false_negatives([rows[i] for i in batch], graph, directions))
    sizes = np.array([len(b) for b in used]) if used else np.zeros(1, dtype=int)
    return {
        **{k: int(v) for k, v in found.items()},
        "total": int(sum(found.values())),
        "batches": len(used),
        "batches_made": len(batches),
        "rows": int(sizes.sum()),
        "rows_in_all": len(rows),
        "smallest_batch": int(sizes.min()),
    }


def compare_samplers(pairs: pd.DataFrame, graph: RelevanceGraph, batch_size: int, seed: int, directions) -> dict:
    """The first epoch under the stock NO_DUPLICATES sampler and under the relevance-aware one, on the same rows,
    batch size and seed (metrics/train.json `batches`): in-batch false negatives, and the rows the trainer's
    len() batches hold (rows that clash with every batch wait for a later epoch under both)."""
    from datasets import Dataset

    dataset = Dataset.from_pandas(pairs, preserve_index=False)
    ours = RelevanceAwareBatchSampler(dataset, batch_size, False, graph, directions, generator=torch.Generator(),
                                      seed=seed)  # fmt: skip
    rows, taken = ours.rows, len(ours)
    return {
        "no_duplicates": batch_report(stock_batches(dataset, batch_size, seed), rows, graph, directions, taken),
        "relevance_aware": batch_report(ours.epoch_batches(), rows, graph, directions, taken),
    }
