"""Data preparation: PubMedQA mapping and counts, by-document splits, other sources, bad input."""

from __future__ import annotations

import dataclasses
import shutil

import pytest
import yaml

from medical_matryoshka.core.errors import PipelineError
from medical_matryoshka.core.sections import DataConfig, read_section
from medical_matryoshka.data.leakage import check_leakage
from medical_matryoshka.data.sources import load_records
from medical_matryoshka.data.splits import assign_splits, retrieval_set, train_pairs
from medical_matryoshka.data.stats import dataset_stats, token_stats
from tests.conftest import REPO, data_config


@pytest.fixture
def pubmedqa_cfg(pubmedqa_dir) -> DataConfig:
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    cfg = read_section(DataConfig, params, "data")
    return dataclasses.replace(cfg, path=str(pubmedqa_dir))


@pytest.fixture
def pubmedqa_records(pubmedqa_cfg):
    return load_records(pubmedqa_cfg)


def test_pubmedqa_maps_claims_to_their_contexts(pubmedqa_records):
    records = pubmedqa_records
    assert len(records) == 3358  # every CONTEXT is a passage
    assert records["doc_id"].nunique() == 1000
    non_test = records[records["split"].isna()]
    assert len(non_test) == 1669 and non_test["doc_id"].nunique() == 500
    assert records.loc[records["split"] == "test", "doc_id"].nunique() == 500
    # one anchor per document: its LONG_ANSWER
    assert (records.groupby("doc_id")["anchor"].nunique() == 1).all()


def test_splits_are_by_document_seeded_and_keep_the_official_test(pubmedqa_records):
    split, _ = assign_splits(pubmedqa_records, dev_fraction=0.1, test_fraction=0.2, seed=42)
    per_doc = split.groupby("doc_id")["split"].nunique()
    assert (per_doc == 1).all(), "a document straddles two splits"
    docs = split.drop_duplicates("doc_id")["split"].value_counts()
    assert (docs["train"], docs["dev"], docs["test"]) == (450, 50, 500)
    official = set(pubmedqa_records.loc[pubmedqa_records["split"] == "test", "doc_id"])
    assert set(split.loc[split["split"] == "test", "doc_id"]) == official
    again, _ = assign_splits(pubmedqa_records, 0.1, 0.2, seed=42)
    other, _ = assign_splits(pubmedqa_records, 0.1, 0.2, seed=7)
    dev = lambda s: set(s.loc[s["split"] == "dev", "doc_id"])  # noqa: E731
    assert dev(again) == dev(split) and dev(other) != dev(split)
    pairs = train_pairs(split)
    assert len(pairs) + (split["split"] == "dev").sum() == 1669
    assert list(pairs.columns) == ["anchor", "positive", "doc_id"]


def test_test_retrieval_set_is_the_official_claims_against_every_context(pubmedqa_records):
    split, _ = assign_splits(pubmedqa_records, 0.1, 0.2, seed=42)
    test = retrieval_set(split, "test", ("train", "dev", "test"))
    assert len(test["queries"]) == 500 and len(test["corpus"]) == 3358
    for qid, passages in test["relevant"].items():
        own = split.loc[split["doc_id"] == qid, "passage_id"]
        assert passages == sorted(own)
    dev = retrieval_set(split, "dev", ("train", "dev"))
    assert len(dev["queries"]) == 50 and not set(dev["corpus"]) & set(test["relevant"]).union(
        *(set(v) for v in test["relevant"].values())
    )


def test_max_docs_shrinks_every_split(pubmedqa_records):
    small, _ = assign_splits(pubmedqa_records, 0.1, 0.2, seed=42, max_docs=5)
    assert small.drop_duplicates("doc_id")["split"].value_counts().to_dict() == {"train": 5, "dev": 5, "test": 5}


def test_corrupt_raw_file_stops_with_the_checksum(pubmedqa_cfg, tmp_path):
    bad = tmp_path / "pubmedqa"
    shutil.copytree(pubmedqa_cfg.path, bad)
    with (bad / "ori_pqal.json").open("a") as f:
        f.write(" ")
    with pytest.raises(PipelineError, match="corrupt or a different version.*fetch_raw"):
        load_records(dataclasses.replace(pubmedqa_cfg, path=str(bad)))


def test_missing_raw_file_says_how_to_fetch(pubmedqa_cfg, tmp_path):
    with pytest.raises(PipelineError, match="missing; fetch it with `python -m commands.fetch_raw`"):
        load_records(dataclasses.replace(pubmedqa_cfg, path=str(tmp_path)))


@pytest.mark.parametrize("suffix", [".jsonl", ".csv", ".parquet"])
def test_local_pair_files_with_a_column_mapping(pairs_frame, tmp_path, suffix):
    path = tmp_path / f"pairs{suffix}"
    if suffix == ".jsonl":
        pairs_frame.to_json(path, orient="records", lines=True)
    elif suffix == ".csv":
        pairs_frame.to_csv(path, index=False)
    else:
        pairs_frame.to_parquet(path)
    records = load_records(data_config(path))
    assert len(records) == 8 and records["doc_id"].nunique() == 7  # the aspirin claim has two passages
    split, _ = assign_splits(records, 0.0, 0.3, seed=42)
    assert (split.groupby("doc_id")["split"].nunique() == 1).all()
    assert set(split["split"]) == {"train", "test"}


def test_unknown_source_names_the_registered_ones(pairs_frame, tmp_path):
    with pytest.raises(PipelineError, match="data.source must be one of pubmedqa, beir, hf, file, got 'ftp'"):
        load_records(data_config(tmp_path / "pairs.jsonl", source="ftp"))


def test_missing_column_names_the_mapping_to_fix(pairs_frame, tmp_path):
    path = tmp_path / "pairs.jsonl"
    pairs_frame.rename(columns={"passage": "text"}).to_json(path, orient="records", lines=True)
    with pytest.raises(PipelineError, match=r"no column\(s\) \['passage'\].*data.columns.positive"):
        load_records(data_config(path))


def test_empty_text_is_rejected(pairs_frame, tmp_path):
    path = tmp_path / "pairs.jsonl"
    pairs_frame.loc[3, "passage"] = "  "
    pairs_frame.to_json(path, orient="records", lines=True)
    with pytest.raises(PipelineError, match=r"1 row\(s\) have an empty 'claim' or 'passage' cell: rows 4 \(passage\) "):
        load_records(data_config(path))


def test_empty_split_is_one_clear_error(pairs_frame, tmp_path):
    path = tmp_path / "pairs.jsonl"
    pairs_frame.head(1).to_json(path, orient="records", lines=True)
    records = load_records(data_config(path))
    with pytest.raises(PipelineError, match=r"the test split is empty \(1 query in all: one cannot be both"):
        assign_splits(records, 0.0, 0.3, seed=42)


def test_token_stats_count_what_the_model_sees(minilm_path):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(minilm_path)
    pieces = len(tok.tokenize("aspirin"))
    # word pieces plus [CLS] and [SEP]; truncation caps the length at max_seq_length
    short, long = pieces + 2, 3 * pieces + 2
    stats = token_stats(tok, ["aspirin", "aspirin aspirin aspirin"], 100)
    assert stats == {"min": short, "mean": (short + long) / 2, "max": long}
    assert token_stats(tok, ["aspirin " * 50], 10)["max"] == 10


def test_dataset_stats_report_rows_and_tokens(pubmedqa_records, minilm_path):
    from transformers import AutoTokenizer

    split, _ = assign_splits(pubmedqa_records, 0.1, 0.2, seed=42)
    pairs = train_pairs(split, exclude=check_leakage(split, boilerplate_max_words=4).exclude)
    stats = dataset_stats(split, pairs, 3358, AutoTokenizer.from_pretrained(minilm_path), 100)
    # 8 train passages are boilerplate also found in the test split ("None.", "Case series.")
    assert stats["duplicates"]["train_pairs_dropped"] == 8
    assert stats["rows"] == {
        "train_pairs": 1500,
        "train_docs": 450,
        "dev_docs": 50,
        "test_docs": 500,
        "corpus_passages": 3358,
    }
    for column in ("anchor", "positive"):
        s = stats["tokens"][column]
        assert 0 < s["min"] <= s["mean"] <= s["max"] <= 100


def test_a_test_passage_planted_in_train_stops_or_is_counted_as_asked(pubmedqa_records):
    split, _ = assign_splits(pubmedqa_records, 0.1, 0.2, seed=42)
    test_passage = split.loc[split["split"] == "test", "positive"].iloc[0]
    planted = split.copy()
    row = planted.index[planted["split"] == "train"][0]
    planted.loc[row, "positive"] = "  " + test_passage.upper() + " "  # same text after normalising
    with pytest.raises(PipelineError, match=r"1 test passage is also train/dev data.*data.shared_passages=report"):
        check_leakage(planted, boilerplate_max_words=4, shared_passages="fail")
    assert check_leakage(planted, boilerplate_max_words=4, shared_passages="report").shared_test_passages == 1
    assert check_leakage(split, boilerplate_max_words=4, shared_passages="report").shared_test_passages == 0


def test_a_test_query_used_as_a_dev_anchor_stops_prepare(pubmedqa_records):
    split, _ = assign_splits(pubmedqa_records, 0.1, 0.2, seed=42)
    planted = split.copy()
    dev_rows = planted["split"] == "dev"
    planted.loc[dev_rows, "anchor"] = split.loc[split["split"] == "test", "anchor"].iloc[0]
    with pytest.raises(PipelineError, match=r"test data leaks into train/dev: 1 test query also in the train/dev"):
        check_leakage(planted, boilerplate_max_words=4, shared_passages="report")


def test_boilerplate_shared_with_test_is_dropped_from_training_not_a_stop(pubmedqa_records):
    split, _ = assign_splits(pubmedqa_records, 0.1, 0.2, seed=42)
    exclude = check_leakage(split, boilerplate_max_words=4).exclude
    assert "none." in exclude and "case series." in exclude
    pairs = train_pairs(split, exclude)
    assert not pairs["positive"].str.lower().str.strip().isin(exclude).any()
    # the test corpus keeps every passage
    assert len(retrieval_set(split, "test", ("train", "dev", "test"))["corpus"]) == 3358


def test_auto_length_covers_the_passages_rounded_up_and_capped_at_the_models_own():
    import numpy as np

    from medical_matryoshka.core.models import ModelLimits
    from medical_matryoshka.data.lengths import resolve_length

    minilm = ModelLimits(trained=256, positions=512)
    passages, queries = np.arange(1, 201), np.full(50, 30)  # 1..200 tokens: 95% fit in 190
    auto = resolve_length("auto", 0.95, passages, queries, minilm, "m")
    assert (auto["max_seq_length"], auto["needed_for_coverage"], auto["setting"]) == (192, 190, "auto")
    assert auto["passages"]["share_cut"] == 0.04 and auto["queries"]["share_cut"] == 0.0  # 193..200 cut
    abstracts = np.arange(200, 700)  # SciFact-like: longer than the model was trained at
    assert resolve_length("auto", 0.95, abstracts, queries, minilm, "m")["max_seq_length"] == 256
    assert resolve_length("auto", 0.95, np.full(10, 5), np.full(10, 5), minilm, "m")["max_seq_length"] == 32
    fixed = resolve_length(100, 0.95, passages, queries, minilm, "m")  # kept, and what it cuts is counted
    assert fixed["max_seq_length"] == 100 and fixed["passages"]["share_cut"] == 0.5 and fixed["auto_length"] == 192
    too_long = r"^params.yaml: model.max_seq_length 1000 is more than 'm' can read \(512 tokens, its position "
    with pytest.raises(PipelineError, match=too_long + r"embeddings\); use at most 512, or -S model.max_seq"):
        resolve_length(1000, 0.95, passages, queries, minilm, "m")


def test_a_fixed_length_that_cuts_more_than_the_coverage_says_so_with_the_fix():
    import numpy as np

    from medical_matryoshka.core.models import ModelLimits
    from medical_matryoshka.data.lengths import resolve_length
    from medical_matryoshka.reports import length_summary

    limits = ModelLimits(trained=256, positions=512)
    passages, queries = np.concatenate([np.full(60, 80), np.full(40, 300)]), np.full(20, 20)
    cut = length_summary(resolve_length(100, 0.95, passages, queries, limits, "m"), "metrics/data.json")
    assert cut[0].startswith("max_seq_length 100 (fixed: model.max_seq_length): cuts 40% of 100 passages (p50 80")
    assert cut[1] == (
        "warning: model.max_seq_length 100 cuts 40% of the passages (p95 300 tokens, longest 300), more than "
        "model.length_coverage 0.95 allows; -S model.max_seq_length=auto reads them at 256"
    )
    assert len(length_summary(resolve_length(320, 0.95, passages, queries, limits, "m"), "x")) == 1  # cuts none
    auto = length_summary(resolve_length("auto", 0.95, passages, queries, limits, "m"), "x")
    assert auto == [
        "max_seq_length 256 (auto: 95% of the texts fit in 300 tokens, capped at the model's own length): cuts 40% "
        "of 100 passages (p50 80, p95 300, longest 300) and 0% of 20 queries (p50 20, p95 20, longest 20); details in x"
    ]


def test_the_model_limits_are_its_own_length_and_its_positions(tiny_model_dir, minilm_path):
    from medical_matryoshka.core.models import ModelLimits, load_tokenizer, model_limits
    from medical_matryoshka.core.sections import ModelSource

    minilm = ModelSource(name=minilm_path, embedded_package=None, install=None, max_seq_length="auto",
                         length_coverage=0.95)  # fmt: skip
    assert model_limits(minilm, load_tokenizer(minilm)) == ModelLimits(trained=256, positions=512)
    tiny = ModelSource(name=str(tiny_model_dir), embedded_package=None, install=None, max_seq_length=64,
                       length_coverage=0.95)  # fmt: skip
    assert model_limits(tiny, load_tokenizer(tiny)).positions == 128  # its position embeddings, below the tokenizer's
