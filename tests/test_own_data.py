"""Users' own data as it comes: many-to-many pairs split by component, BEIR folders over a shared corpus,
graded and missing qrels lines, given negatives, and the leakage rule that says what a user can do."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from datasets import Dataset

from medical_matryoshka.core.errors import PipelineError
from medical_matryoshka.core.sections import MiningConfig
from medical_matryoshka.data.leakage import check_leakage, clean_negatives, normalise, shared_passage_rule
from medical_matryoshka.data.sources import load_source
from medical_matryoshka.data.splits import _draw, assign_splits, retrieval_set, train_pairs
from medical_matryoshka.negatives import mine_hard_negatives, pass_given_negatives
from tests.conftest import claim, data_config, many_to_many_rows, passage


def prepare(cfg, seed: int = 42):
    """What stages.prepare does with the data, without the model: records, split info, leak report."""
    source = load_source(cfg)
    records, split = assign_splits(
        source.records, cfg.dev_fraction, cfg.test_fraction, seed, cfg.max_docs, cfg.split_by, cfg.boilerplate_max_words
    )
    split["shared_passages"] = shared_passage_rule(cfg.shared_passages, split)
    leaks = check_leakage(records, cfg.boilerplate_max_words, split["shared_passages"], cfg.leaked_queries)
    records = records[~records["doc_id"].isin(leaks.dropped_queries)]
    records, negatives = clean_negatives(records, keep_test_passages=split["shared_passages"] == "report")
    return source, records, split, leaks, negatives


# ---- pairs files: many-to-many, split by connected component


@pytest.fixture
def many_to_many_file(tmp_path):
    path = tmp_path / "pairs.jsonl"
    pd.DataFrame(many_to_many_rows()).to_json(path, orient="records", lines=True)
    return path


def test_a_passage_is_one_corpus_entry_and_a_query_holds_every_passage_linked_to_it(many_to_many_file):
    source, records, split, leaks, _ = prepare(data_config(many_to_many_file))
    assert source.notes == {"rows_read": 51, "rows_collapsed": 1}
    assert records["doc_id"].nunique() == 30 and records["passage_id"].nunique() == 30
    assert claim(0).upper() not in set(records["anchor"])  # one spelling a query (the first), so the batch
    assert (records.groupby("doc_id")["anchor"].nunique() == 1).all()  # sampler sees it as the same text
    test = retrieval_set(records, "test", ("train", "dev", "test"))
    assert len(test["corpus"]) == 30  # every passage once, however many claims cite it
    ids = dict(zip(records["positive"].map(normalise), records["passage_id"], strict=True))
    for query, text in test["queries"].items():
        i = next(i for i in range(30) if claim(i) == text)
        cited = {i, i + 1} if i % 3 < 2 else {i}
        assert set(test["relevant"][query]) == {ids[normalise(passage(j))] for j in cited}


@pytest.mark.parametrize("seed", [1, 7, 42])
def test_the_split_keeps_components_whole_so_it_can_never_leak(many_to_many_file, seed):
    _, records, split, leaks, _ = prepare(data_config(many_to_many_file, dev_fraction=0.2), seed)
    assert (split["test"], split["dev"], split["shared_passages"]) == ("component", "component", "fail")
    assert split["graph"] == {"count": 10, "largest_queries": 3, "largest_rows": 5, "singletons": 0}
    assert (records.groupby("passage_id")["split"].nunique() == 1).all()  # no passage in two splits
    assert leaks.shared_test_passages == 0  # check_leakage ran in "fail" mode and did not stop
    queries = records.drop_duplicates("doc_id")["split"].value_counts()
    # ceil(0.3 x 30) = 9 in whole components; dev: ceil(0.2 x 21) = 5, and whole components of 3 fit once
    assert queries["test"] == 9 and queries["dev"] == 3


def test_by_query_splits_share_the_corpus_and_count_the_shared_passages(many_to_many_file):
    _, records, split, leaks, _ = prepare(data_config(many_to_many_file, split_by="query"))
    assert (split["test"], split["shared_passages"]) == ("query", "report")
    shared = records.groupby("passage_id")["split"].nunique() > 1
    assert shared.any() and leaks.shared_test_passages > 0
    with pytest.raises(PipelineError, match="also train/dev data.*data.shared_passages=report"):
        prepare(data_config(many_to_many_file, split_by="query", shared_passages="fail"))


def test_a_hub_passage_turns_auto_into_a_query_split_instead_of_failing(tmp_path):
    hub = "A pooled analysis of all trials in this review, covering every drug named here."
    rows = [{"claim": claim(i), "passage": hub} for i in range(16)] + [
        {"claim": claim(i), "passage": passage(i)} for i in range(20)
    ]
    path = tmp_path / "hub.jsonl"
    pd.DataFrame(rows).to_json(path, orient="records", lines=True)
    _, records, split, leaks, _ = prepare(data_config(path, dev_fraction=0.1))
    assert split["graph"]["largest_queries"] == 16 and split["test"].startswith("query (auto")
    assert split["shared_passages"] == "report" and leaks.shared_test_passages == 1  # the hub, counted
    queries = records.drop_duplicates("doc_id")["split"].value_counts()
    assert queries["test"] == 6  # ceil(0.3 x 20)


@pytest.mark.parametrize(("n", "fraction", "seed"), [(500, 0.1, 42), (1000, 0.2, 7), (37, 0.3, 1)])
def test_one_query_per_component_draws_exactly_what_datasets_draws(n, fraction, seed):
    """The regression guard for PubMedQA (one claim per abstract): its dev split stays what it was."""
    ids = [f"{i:05d}" for i in range(n)]
    expected = set(Dataset.from_dict({"doc_id": ids}).train_test_split(test_size=fraction, seed=seed)["test"]["doc_id"])
    assert _draw(pd.Series(ids, index=ids), fraction, seed) == expected


# ---- BEIR folders


def test_beir_trains_on_the_train_qrels_and_tests_against_the_whole_corpus(beir_dir):
    cfg = data_config(beir_dir, source="beir", dev_fraction=0.2)
    source, records, split, leaks, _ = prepare(cfg)
    assert (split["test"], split["dev"], split["shared_passages"]) == ("official", "component", "report")
    assert leaks.shared_test_passages == 1  # p1 serves train q0, q1 and test q12: reported, not fatal
    assert source.notes == {"corpus_passages": 30, "queries_without_qrels": 0, "qrels_not_relevant": 1}
    test = retrieval_set(records, "test", ("train", "dev", "test"), source.corpus)
    assert len(test["corpus"]) == 30 and test["corpus"]["p3"] == f"Trial 3 {passage(3)}"  # title + " " + text
    assert test["relevant"] == {"q12": ["p1", "p14"], "q13": ["p14"], "q14": ["p15"], "q15": ["p15"]}
    assert test["grades"]["q12"] == {"p1": 1, "p14": 2}  # score 0 (q15-p20) is judged, not relevant
    pairs = train_pairs(records)
    assert set(pairs["doc_id"]) == set(records.loc[records["split"] == "train", "doc_id"])
    assert len(records[records["split"].isin(["train", "dev"])]) == 14  # every train judgment is kept


def test_beir_dev_qrels_are_the_dev_split(beir_dir):
    (beir_dir / "qrels/dev.tsv").write_text("q10\tp11\t1\nq11\tp12\t1\n")  # no header: also read
    train = [line for line in (beir_dir / "qrels/train.tsv").read_text().splitlines() if not line.startswith("q1")]
    (beir_dir / "qrels/train.tsv").write_text("\n".join(train) + "\n")
    source, records, split, _, _ = prepare(data_config(beir_dir, source="beir", dev_fraction=0.2))
    assert split["dev"] == "official"
    assert set(records.loc[records["split"] == "dev", "doc_id"]) == {"q10", "q11"}
    assert source.notes["queries_without_qrels"] == 1 and "q1" not in set(records["doc_id"])  # its lines went


def test_a_test_query_in_the_train_qrels_stops(beir_dir):
    with (beir_dir / "qrels/train.tsv").open("a") as f:
        f.write("q12\tp2\t1\n")
    with pytest.raises(PipelineError, match=r"query 'q12' is judged in both qrels/train.tsv and qrels/test.tsv"):
        prepare(data_config(beir_dir, source="beir"))


def test_a_train_query_repeating_a_test_query_stops_or_is_dropped(beir_dir):
    queries = beir_dir / "queries.jsonl"
    queries.write_text(queries.read_text() + json.dumps({"_id": "q99", "text": " " + claim(13).lower()}) + "\n")
    with (beir_dir / "qrels/train.tsv").open("a") as f:
        f.write("q99\tp5\t1\n")
    with pytest.raises(PipelineError, match="1 test query also in the train/dev data.*data.leaked_queries=drop"):
        prepare(data_config(beir_dir, source="beir"))
    _, records, _, leaks, _ = prepare(data_config(beir_dir, source="beir", leaked_queries="drop"))
    assert leaks.dropped_queries == {"q99"} and "q99" not in set(records["doc_id"])


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (("qrels/test.tsv", "q12\tp99\t1\n"), r"test.tsv names 1 corpus-id\(s\) absent from corpus.jsonl, e.g. 'p99'"),
        (("qrels/train.tsv", "q77\tp3\t1\n"), r"qrels/train.tsv names 1 query-id\(s\) absent from queries.jsonl"),
        (("qrels/train.tsv", "q3\tp3\n"), r"train.tsv line 16 has 2 tab-separated field\(s\), not 3"),
        (("qrels/train.tsv", "q3\tp3\thigh\n"), r"train.tsv line 16: score 'high' is not an integer grade"),
        (("corpus.jsonl", "{not json\n"), r"corpus.jsonl line 31 is not valid JSON"),
        (("queries.jsonl", '{"_id": "q50"}\n'), r"queries.jsonl line 17 lacks \['text'\]"),
    ],
)
def test_bad_beir_lines_are_one_clear_error(beir_dir, change, message):
    name, line = change
    with (beir_dir / name).open("a") as f:
        f.write(line)
    with pytest.raises(PipelineError, match=message):
        load_source(data_config(beir_dir, source="beir"))


def test_a_beir_folder_without_train_qrels_says_what_a_set_holds(beir_dir):
    (beir_dir / "qrels/train.tsv").unlink()
    with pytest.raises(PipelineError, match=r"has no qrels/train.tsv; training needs corpus.jsonl, queries.jsonl"):
        load_source(data_config(beir_dir, source="beir"))


def test_beir_files_listed_in_data_files_are_verified(beir_dir):
    cfg = data_config(beir_dir, source="beir", files={"qrels/test.tsv": {"url": None, "sha256": "0" * 64}})
    with pytest.raises(PipelineError, match="qrels/test.tsv is corrupt or a different version"):
        load_source(cfg)


# ---- given negatives


def negatives_file(tmp_path, cells="text"):
    """12 rows with a negative column: texts (one of them the row's own positive, one empty), or lists."""
    if cells == "text":
        negatives = [passage(i + 20) for i in range(12)]
        negatives[1], negatives[2] = passage(1).upper(), None  # a false negative; a row without
    else:
        negatives = [[passage(i + 20), passage(40)] for i in range(12)]
        negatives[2] = []
    rows = [{"claim": claim(i), "passage": passage(i), "negative": negatives[i]} for i in range(12)]
    for row in rows:
        row["negative_2"] = passage(60)
    path = tmp_path / "negatives.jsonl"
    pd.DataFrame(rows).to_json(path, orient="records", lines=True)
    return path


COLUMNS = {"anchor": "claim", "positive": "passage", "negative": "negative"}


def test_given_negatives_are_read_and_false_negatives_dropped(tmp_path):
    cfg = data_config(negatives_file(tmp_path), columns=COLUMNS)
    _, records, _, _, counts = prepare(cfg)
    split_of = dict(zip(records["anchor"], records["split"], strict=True))
    trained = [i for i in range(12) if split_of[claim(i)] != "test" and i != 2]
    assert counts["given"] == len(trained)  # test rows' negatives are not read; row 2 has none
    assert counts["false_negatives_dropped"] == (1 in trained)
    pairs = train_pairs(records)
    assert list(pairs.columns) == ["anchor", "positive", "doc_id", "negatives"]
    by_claim = dict(zip(pairs["anchor"], pairs["negatives"], strict=True))
    for i in (i for i in range(12) if split_of[claim(i)] == "train"):
        assert by_claim[claim(i)] == ([] if i in (1, 2) else [passage(i + 20)])


def test_list_cells_and_several_negative_columns_are_read_together(tmp_path):
    path = negatives_file(tmp_path, cells="lists")
    records = load_source(data_config(path, columns={**COLUMNS, "negative": ["negative", "negative_2"]})).records
    by_claim = dict(zip(records["anchor"], records["negatives"], strict=True))
    assert by_claim[claim(3)] == (passage(23), passage(40), passage(60))
    assert by_claim[claim(2)] == (passage(60),)


def test_a_given_negative_that_is_a_test_query_stops(tmp_path):
    rows = [{"claim": claim(i), "passage": passage(i), "negative": claim((i + 1) % 20)} for i in range(20)]
    path = tmp_path / "bad.jsonl"
    pd.DataFrame(rows).to_json(path, orient="records", lines=True)
    cfg = data_config(path, columns={"anchor": "claim", "positive": "passage", "negative": "negative"})
    with pytest.raises(PipelineError, match="a given negative is a test query"):
        prepare(cfg)


def mining_cfg(**changes) -> MiningConfig:
    base = dict(
        enabled=True, num_negatives=1, range_min=0, range_max=20, absolute_margin=None, relative_margin=None,
        sampling_strategy="top", batch_size=16,
    )  # fmt: skip
    return MiningConfig(**{**base, **changes})


def given_pairs() -> pd.DataFrame:
    """Rows i with 0, 1 or 2 given negatives (i % 3)."""
    given = [[passage(30 + i)] * (i % 3 > 0) + [passage(50)] * (i % 3 > 1) for i in range(12)]
    rows = [(f"d{i}", claim(i), passage(i), given[i]) for i in range(12)]
    return pd.DataFrame(rows, columns=["doc_id", "anchor", "positive", "negatives"])


def test_mining_keeps_the_given_negatives_and_mines_the_rest(tiny_model):
    pairs = given_pairs()
    rows, stats = mine_hard_negatives(tiny_model, pairs, mining_cfg(num_negatives=1), seed=0)
    assert list(rows.columns) == ["anchor", "positive", "negative_1", "negative_2"]  # the most given to a row: 2
    given = dict(zip(pairs["anchor"], pairs["negatives"], strict=True))
    assert stats["rows_out"] == len(rows) > 0 and stats["rows_out"] + stats["rows_dropped_no_candidates"] == 12
    assert stats["given_negatives_used"] == sum(len(given[a]) for a in rows["anchor"])
    assert stats["mined_negatives"] == 2 * len(rows) - stats["given_negatives_used"] > 0
    for _, row in rows.iterrows():
        negatives, own = [row["negative_1"], row["negative_2"]], given[row["anchor"]]
        assert negatives[: len(own)] == own  # given first, as given
        assert all(m in set(pairs["positive"]) and m != row["positive"] for m in negatives[len(own) :])
        assert len(set(negatives)) == 2  # no mined copy of a given one


def test_mining_off_passes_the_given_negatives_every_row_has(tiny_model):
    rows, stats = pass_given_negatives(given_pairs())
    assert list(rows.columns) == ["anchor", "positive"]  # a row without a given negative: none for any row
    assert stats == {"rows_in": 12, "rows_out": 12, "given_negatives_used": 0, "given_negatives_unused": 12}
    some = given_pairs().iloc[[1, 2, 4, 5]]
    rows, stats = pass_given_negatives(some)
    assert list(rows.columns) == ["anchor", "positive", "negative_1"] and stats["given_negatives_unused"] == 2


def test_a_test_split_no_component_fits_says_why_and_what_to_do(tmp_path):
    # 6 claims in two components of 3 (each trio shares a passage): the test share, ceil(0.2 x 6) = 2, takes none
    rows = [{"claim": claim(i), "passage": passage(i)} for i in range(6)]
    rows += [{"claim": claim(i), "passage": passage(100 + i // 3)} for i in range(6)]
    path = tmp_path / "pairs.jsonl"
    pd.DataFrame(rows).to_json(path, orient="records", lines=True)
    records = load_source(data_config(path, test_fraction=0.2, dev_fraction=0.1)).records
    with pytest.raises(PipelineError, match=r"test share is 2, and the smallest connected component .* holds 3: none"
                       r" fits; -S data.split_by=query splits by query instead"):  # fmt: skip
        assign_splits(records, 0.1, 0.2, seed=42, split_by="component")
    records, info = assign_splits(records, 0.1, 0.2, seed=42, split_by="query")
    assert (records.drop_duplicates("doc_id")["split"] == "test").sum() == 2


def test_a_test_split_too_small_to_measure_says_what_would_work(tmp_path):
    from medical_matryoshka.data.splits import require_searchable

    data = data_config(tmp_path / "pairs.jsonl", test_fraction=0.2)
    one = {"queries": {"q1": "a", "q2": "b"}, "corpus": {"p1": "x"}, "relevant": {"q1": ["p1"], "q2": ["p1"]}}
    with pytest.raises(PipelineError, match=r"has 2 claim\(s\) over 1 passage\(s\), 9 claim\(s\) in all: .* needs "
                       r"more than 10 passages to search \(add passages\)$"):  # fmt: skip
        require_searchable(one, 9, data, official=False)
    capped = data_config(tmp_path / "pairs.jsonl", test_fraction=0.2, max_docs=1)
    with pytest.raises(PipelineError, match=r"\(add passages or raise data.max_docs \(1\)\)$"):  # it left claims out
        require_searchable(one, 9, capped, official=False, capped=True)
    eleven = {**one, "corpus": {f"p{i}": "x" for i in range(11)}}
    require_searchable(eleven, 9, data, official=False)  # more passages than the top-10 cut-off: measurable
    # 5 claims at test_fraction 0.2 give 1 test claim: a larger fraction or a 6th claim would (not max_docs)
    with pytest.raises(PipelineError, match=r"at least 2 test claims \(with data.test_fraction 0.2 that takes 6 "
                       r"claims or more in all, or a larger data.test_fraction\)$"):  # fmt: skip
        require_searchable({**eleven, "queries": {"q1": "a"}}, 5, data, official=False)
    with pytest.raises(PipelineError, match="at least 2 claims in the source's test split"):
        require_searchable({**eleven, "queries": {"q1": "a"}}, 5, data, official=True)


def test_a_semicolon_csv_is_read_as_such_and_named_in_its_errors(tmp_path):
    path = tmp_path / "pairs.csv"
    rows = pd.DataFrame(
        {"claim": [f"Claim {i}, with a comma" for i in range(6)], "passage": [f"P {i}, x" for i in range(6)]}
    )
    rows.to_csv(path, sep=";", index=False)  # what a spreadsheet in much of Europe saves
    records = load_source(data_config(path)).records
    assert sorted(records["anchor"]) == sorted(rows["claim"]) and sorted(records["positive"]) == sorted(rows["passage"])
    with pytest.raises(PipelineError, match=r"pairs.csv with semicolon delimiters \(sniffed\) has no column\(s\) "):
        load_source(data_config(path, columns={"anchor": "text", "positive": "passage", "negative": None}))
    tabs = tmp_path / "pairs.tsv.csv"
    rows.to_csv(tabs, sep="\t", index=False)
    assert len(load_source(data_config(tabs)).records) == 6
    assert len(load_source(data_config(tabs, csv_sep="\t")).records) == 6  # or named: data.csv_sep


def test_a_file_given_to_a_folder_profile_names_the_profile_that_reads_it(tmp_path):
    path = tmp_path / "my_qa.jsonl"
    path.write_text('{"anchor": "a", "positive": "b"}\n')
    with pytest.raises(PipelineError, match=r"is a file, but the data profile is pubmedqa .* -S data=pairs -S "):
        load_source(data_config(path, source="pubmedqa"))
    with pytest.raises(PipelineError, match=r"is a folder, but the data profile reads one pairs file .* -S data=beir"):
        load_source(data_config(tmp_path))


def test_a_csv_naming_a_column_twice_is_refused(tmp_path):
    path = tmp_path / "pairs.csv"
    path.write_text("claim,passage,passage\nc1,p1,p2\n", encoding="utf-8")
    with pytest.raises(PipelineError, match="its header names column 'passage' more than once"):
        load_source(data_config(path))


def test_a_malformed_jsonl_line_is_named_from_1(tmp_path):
    path = tmp_path / "pairs.jsonl"
    path.write_text('{"claim": "c1", "passage": "p1"}\n{"claim": "c2", "passage": \n', encoding="utf-8")
    with pytest.raises(PipelineError, match=r"pairs.jsonl line 2 is not valid JSON"):
        load_source(data_config(path))
    path.write_text('{"claim": "c1", "passage": "p1"}\n["c2", "p2"]\n', encoding="utf-8")
    with pytest.raises(PipelineError, match=r"line 2 holds a JSON list, not an object"):
        load_source(data_config(path))


def test_a_link_under_raw_to_data_elsewhere_gets_advice_that_works(tmp_path, monkeypatch):
    import subprocess

    from medical_matryoshka.data.sources import require_tracked

    monkeypatch.chdir(tmp_path)
    (tmp_path / "elsewhere.jsonl").write_text('{"claim": "c", "passage": "p"}\n', encoding="utf-8")
    (tmp_path / "data/raw").mkdir(parents=True)
    (tmp_path / "data/raw/link.jsonl").symlink_to(tmp_path / "elsewhere.jsonl")
    cfg = data_config("data/raw/link.jsonl")
    with pytest.raises(PipelineError, match="is a link to .*elsewhere.jsonl") as err:
        require_tracked(cfg, "data/raw")
    advice = str(err.value).rsplit(": ", 1)[1]
    subprocess.run(advice, shell=True, check=True, cwd=tmp_path)  # the line the user is told to type works
    assert not (tmp_path / "data/raw/link.jsonl").is_symlink()
    require_tracked(cfg, "data/raw")


def test_a_held_out_test_file_is_the_test_split_and_every_other_pair_trains(tmp_path):
    rows = many_to_many_rows()[:-1]
    train_file, test_file = tmp_path / "pairs.jsonl", tmp_path / "test.jsonl"
    pd.DataFrame(rows[:15]).to_json(train_file, orient="records", lines=True)  # components 0-2
    pd.DataFrame(rows[15:25]).to_json(test_file, orient="records", lines=True)  # components 3-4
    cfg = data_config(train_file, test_path=str(test_file), dev_fraction=0.0)
    source = load_source(cfg)
    assert source.notes["test_rows_read"] == 10
    records, info = assign_splits(source.records, cfg.dev_fraction, cfg.test_fraction, seed=42)
    assert info["test"] == "official"
    claims = records.drop_duplicates("doc_id")
    assert sorted(claims.loc[claims["split"] == "test", "anchor"]) == sorted({r["claim"] for r in rows[15:25]})
    assert (claims["split"] == "train").sum() == len({r["claim"] for r in rows[:15]})  # all of them train
    test_set = retrieval_set(records, "test", ("train", "dev", "test"))
    assert len(test_set["corpus"]) == len({r["passage"] for r in rows[:25]})  # searched over both files' passages

    leaked = tmp_path / "leaky.jsonl"
    pd.DataFrame([*rows[15:25], rows[0]]).to_json(leaked, orient="records", lines=True)  # a training claim
    records, _ = assign_splits(load_source(data_config(train_file, test_path=str(leaked))).records, 0.0, 0.2, 42)
    with pytest.raises(PipelineError, match=r"1 test query also in the train/dev data.*data.test_path: their rows"):
        check_leakage(records, boilerplate_max_words=4, shared_passages="report")
    dropped = check_leakage(records, boilerplate_max_words=4, shared_passages="report", leaked_queries="drop")
    assert len(dropped.dropped_queries) == 1


def test_a_held_out_test_file_must_be_watched_and_of_a_pairs_source(tmp_path):
    from medical_matryoshka.data.sources import require_tracked

    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "pairs.jsonl").write_text("{}\n")
    cfg = data_config(raw / "pairs.jsonl", test_path=str(raw / "test.jsonl"))
    with pytest.raises(
        PipelineError, match=r"is not what DVC watches for prepare .* add -S data.test_watch=.*test.jsonl"
    ):
        require_tracked(cfg, str(raw))
    require_tracked(data_config(raw / "pairs.jsonl", test_path=str(raw / "test.jsonl"), test_watch=str(raw)), str(raw))
    with pytest.raises(PipelineError, match=r"data.test_path .* is outside .*raw/"):
        require_tracked(data_config(raw / "pairs.jsonl", test_path=str(tmp_path / "t.jsonl")), str(raw))
    with pytest.raises(PipelineError, match=r"data.test_path is for a pairs file \(data.source file\), not beir"):
        require_tracked(data_config(raw, source="beir", test_path=str(raw / "test.jsonl")), str(raw))
