"""Relevance-aware batches: no in-batch false negatives where the stock NO_DUPLICATES sampler lets them through,
every row once an epoch, the trainer's batch count kept."""

from __future__ import annotations

import pandas as pd
import pytest
import torch
from datasets import Dataset

from medical_matryoshka.training.batches import (
    RelevanceAwareBatchSampler,
    RelevanceGraph,
    Row,
    batch_report,
    compare_samplers,
    false_negatives,
    rows_of,
    stock_batches,
)
from tests.conftest import claim, many_to_many_rows, passage

FOUR = ("query_to_doc", "doc_to_query", "query_to_query", "doc_to_doc")


def test_a_batch_the_stock_sampler_accepts_holds_a_false_negative_the_relevance_sampler_removes():
    # claim A cites P1 and P2, claim B cites P2: (A, P1) and (B, P2) share no text, so NO_DUPLICATES batches them
    # together, and the loss pushes P2 away from A, and A away from B (they share P2)
    rows = pd.DataFrame({"anchor": ["A", "A", "B"], "positive": ["P1", "P2", "P2"]})
    graph = RelevanceGraph.of_pairs(rows)
    batch = [Row("A", "P1", ()), Row("B", "P2", ())]
    assert false_negatives(batch, graph, FOUR) == {"query_to_doc": 1, "query_to_query": 1, "doc_to_doc": 1}
    assert false_negatives(batch, graph, ("query_to_doc",)) == {"query_to_doc": 1}

    table = pd.DataFrame({"anchor": ["A", "B", "C", "D", "E"], "positive": ["P1", "P2", "P3", "P4", "P5"]})
    dataset = Dataset.from_pandas(table)
    together = 0
    for seed in range(12):
        stock = stock_batches(dataset, batch_size=2, seed=seed)
        together += any(set(b) == {0, 1} for b in stock)  # rows (A, P1) and (B, P2) in one batch
        ours = RelevanceAwareBatchSampler(dataset, 2, False, graph, FOUR, generator=torch.Generator(), seed=seed)
        batches = ours.epoch_batches()
        assert len(batches) == 3 and sorted(i for b in batches for i in b) == [0, 1, 2, 3, 4]
        assert not any({0, 1} <= set(b) for b in batches)
    assert together  # the stock sampler does put them together for some seeds


def test_a_mined_negative_relevant_to_another_rows_claim_is_kept_apart():
    # PubMedQA's case: one claim per abstract, but a row's mined negative is another claim's passage
    graph = RelevanceGraph([("A", "PA"), ("B", "PB"), ("C", "PC")])
    batch = [Row("A", "PA", ("PB",)), Row("B", "PB", ()), Row("C", "PC", ("PX",))]
    assert false_negatives(batch, graph, ("query_to_doc",)) == {"query_to_doc": 1}  # PB, a negative for A, is B's
    table = {"anchor": ["A", "B", "C"], "positive": ["PA", "PB", "PC"], "negative_1": ["PB", "PX", "PY"]}
    dataset = Dataset.from_pandas(pd.DataFrame(table))
    for seed in range(6):
        ours = RelevanceAwareBatchSampler(dataset, 2, False, graph, ("query_to_doc",), torch.Generator(), seed=seed)
        batches = ours.epoch_batches()
        assert sorted(i for b in batches for i in b) == [0, 1, 2] and not any({0, 1} <= set(b) for b in batches)


@pytest.fixture
def heavy() -> pd.DataFrame:
    """Heavy multi-relevance: 30 claims in 10 components, claims citing two passages, passages serving two
    claims (conftest.many_to_many_rows), plus 30 one-to-one claims, shuffled."""
    rows = [(r["claim"], r["passage"]) for r in many_to_many_rows()[:-1]]
    rows += [(claim(100 + i), passage(100 + i)) for i in range(30)]
    return pd.DataFrame(rows, columns=["anchor", "positive"]).sample(frac=1, random_state=0).reset_index(drop=True)


def test_on_heavy_many_to_many_data_the_stock_sampler_lets_false_negatives_through_and_ours_none(heavy):
    graph = RelevanceGraph.of_pairs(heavy)
    stock = ours = 0
    for seed in range(5):
        counts = compare_samplers(heavy, graph, batch_size=17, seed=seed, directions=FOUR)
        assert counts["no_duplicates"]["query_to_doc"] > 0  # a claim meets a passage relevant to it
        assert counts["relevance_aware"]["query_to_doc"] == 0  # never with ours
        assert counts["relevance_aware"]["batches"] == 5  # ceil(80 / 17), as the trainer's schedule counts
        assert counts["relevance_aware"]["rows"] == counts["relevance_aware"]["rows_in_all"] == 80
        stock, ours = stock + counts["no_duplicates"]["total"], ours + counts["relevance_aware"]["total"]
    # claim-claim and passage-passage pairs that share a relevant text: 3-claim chains over 5 batches leave the
    # dealing no room now and then; it waives those rules for a row rather than leave it out of the epoch
    assert stock >= 100 and ours <= 2


def test_every_row_trains_once_an_epoch_in_the_trainers_batch_count(heavy):
    graph = RelevanceGraph.of_pairs(heavy)
    dataset = Dataset.from_pandas(heavy)
    sampler = RelevanceAwareBatchSampler(dataset, 17, False, graph, FOUR, generator=torch.Generator(), seed=42)
    orders = []
    for epoch in range(3):
        sampler.set_epoch(epoch)
        batches = list(sampler)
        assert len(batches) == len(sampler) == 5
        assert sorted(i for b in batches for i in b) == list(range(len(heavy))) and sampler.rows_deferred == 0
        assert batch_report(batches, rows_of(dataset.to_dict()), graph, FOUR, 5).get("query_to_doc", 0) == 0
        orders.append(batches)
    assert orders[0] != orders[1]  # reshuffled each epoch, seeded
    sampler.set_epoch(0)
    assert list(sampler) == orders[0]


def test_a_hub_passage_shared_by_every_claim_cannot_share_a_batch_and_the_count_is_kept():
    # one review cited by all 6 claims: no two of its rows may meet, so a walk makes 6 batches of 1; the trainer
    # expects ceil(6 / 4) = 2, so 2 are yielded and 4 rows wait for the next epoch's walk (counted)
    rows = pd.DataFrame({"anchor": [f"C{i}" for i in range(6)], "positive": ["review"] * 6})
    dataset = Dataset.from_pandas(rows)
    sampler = RelevanceAwareBatchSampler(
        dataset, 4, False, RelevanceGraph.of_pairs(rows), FOUR, generator=torch.Generator(), seed=0
    )
    batches = list(sampler)
    assert len(batches) == 2 and all(len(b) == 1 for b in batches) and sampler.rows_deferred == 4
