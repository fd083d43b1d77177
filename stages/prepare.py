"""Stage `prepare`: raw records -> train pairs, dev and test retrieval sets, dataset statistics.

Outputs (paths from params.yaml `paths`): <prepared>/<train_file> (anchor, positive, doc_id[, negatives]),
<prepared>/<dev_file> and <test_file> (queries, corpus, relevant[, grades]), <prepared>/<lengths_file> (the
max_seq_length every later stage reads texts at: data/lengths.py), <data_metrics>.
"""

from __future__ import annotations

import json

from medical_matryoshka.core.atomic import output_dir, write_json
from medical_matryoshka.core.models import load_tokenizer, model_limits
from medical_matryoshka.core.runtime import stage_main
from medical_matryoshka.core.sections import ModelSource
from medical_matryoshka.core.stage import StageConfig
from medical_matryoshka.data.leakage import check_leakage, clean_negatives, shared_passage_rule
from medical_matryoshka.data.lengths import check_fixed_length, resolve_length, token_lengths
from medical_matryoshka.data.sources import load_source, require_tracked
from medical_matryoshka.data.splits import assign_splits, require_searchable, retrieval_set, train_pairs
from medical_matryoshka.data.stats import dataset_stats, relevance_stats
from medical_matryoshka.reports import data_summary


@stage_main("prepare")
def main(stage: StageConfig) -> None:
    data, model = stage.section("data"), stage.section("model", ModelSource)  # prepare reads no model.dims

    require_tracked(data, stage.paths.raw)
    tokenizer = load_tokenizer(model)
    limits = model_limits(model, tokenizer)
    check_fixed_length(model.max_seq_length, limits, model.name)  # before reading the data
    source = load_source(data)
    records, split = assign_splits(
        source.records, data.dev_fraction, data.test_fraction, stage.seed(), data.max_docs, data.split_by,
        data.boilerplate_max_words,
    )  # fmt: skip
    capped = records["doc_id"].nunique() < source.records["doc_id"].nunique()  # data.max_docs left claims out
    split["shared_passages"] = shared_passage_rule(data.shared_passages, split)
    leaks = check_leakage(records, data.boilerplate_max_words, split["shared_passages"], data.leaked_queries)
    records = records[~records["doc_id"].isin(leaks.dropped_queries)]
    records, negatives = clean_negatives(records, keep_test_passages=split["shared_passages"] == "report")
    pairs = train_pairs(records, exclude=leaks.exclude)
    sets = {"dev": retrieval_set(records, "dev", ("train", "dev"))}
    sets["test"] = retrieval_set(records, "test", ("train", "dev", "test"), source.corpus)
    require_searchable(sets["test"], records["doc_id"].nunique(), data, split["test"] == "official", capped)
    passages = list(dict.fromkeys([*sets["test"]["corpus"].values(), *pairs["positive"]]))
    queries = list(dict.fromkeys(records["anchor"]))
    lengths = resolve_length(
        model.max_seq_length, model.length_coverage, token_lengths(tokenizer, passages),
        token_lengths(tokenizer, queries), limits, model.name,
    )  # fmt: skip
    stats = dataset_stats(records, pairs, len(sets["test"]["corpus"]), tokenizer, lengths["max_seq_length"])
    split.update(shared_test_passages=leaks.shared_test_passages, leaked_queries_dropped=len(leaks.dropped_queries))
    stats.update(split=split, relevance=relevance_stats(records), source=source.notes, lengths=lengths)
    if data.negative_columns:
        stats["negatives"] = negatives
    print("\n".join(data_summary(stats, stage.paths.data_metrics)))

    with stage.track() as run:
        with output_dir(stage.paths.prepared) as out:
            pairs.to_parquet(out / stage.paths.train_file, index=False)
            for name, rs in sets.items():
                (out / getattr(stage.paths, f"{name}_file")).write_text(json.dumps(rs), encoding="utf-8")
            (out / stage.paths.lengths_file).write_text(json.dumps(lengths, indent=2) + "\n", encoding="utf-8")
        write_json(stage.paths.data_metrics, stats)
        run.log_metrics(stats)


if __name__ == "__main__":
    main()
