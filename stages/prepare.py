"""Stage `prepare`: raw records -> train pairs, dev and test retrieval sets, dataset statistics.

Outputs (paths from params.yaml `paths`): <prepared>/<train_file> (anchor, positive, doc_id[, negatives]),
<prepared>/<dev_file> and <test_file> (queries, corpus, relevant[, grades]), <data_metrics>.
"""

from __future__ import annotations

import json

from medical_matryoshka.core.atomic import output_dir, write_json
from medical_matryoshka.core.models import load_tokenizer
from medical_matryoshka.core.runtime import stage_main
from medical_matryoshka.core.sections import ModelSource
from medical_matryoshka.core.stage import StageConfig
from medical_matryoshka.data.leakage import check_leakage, clean_negatives, shared_passage_rule
from medical_matryoshka.data.sources import load_source, require_tracked
from medical_matryoshka.data.splits import assign_splits, require_searchable, retrieval_set, train_pairs
from medical_matryoshka.data.stats import dataset_stats, relevance_stats
from medical_matryoshka.reports import data_summary


@stage_main("prepare")
def main(stage: StageConfig) -> None:
    data, model = stage.section("data"), stage.section("model", ModelSource)  # prepare reads no model.dims

    require_tracked(data, stage.paths.raw)
    source = load_source(data)
    records, split = assign_splits(
        source.records, data.dev_fraction, data.test_fraction, stage.seed(), data.max_docs, data.split_by,
        data.boilerplate_max_words,
    )  # fmt: skip
    split["shared_passages"] = shared_passage_rule(data.shared_passages, split)
    leaks = check_leakage(records, data.boilerplate_max_words, split["shared_passages"], data.leaked_queries)
    records = records[~records["doc_id"].isin(leaks.dropped_queries)]
    records, negatives = clean_negatives(records, keep_test_passages=split["shared_passages"] == "report")
    pairs = train_pairs(records, exclude=leaks.exclude)
    sets = {"dev": retrieval_set(records, "dev", ("train", "dev"))}
    sets["test"] = retrieval_set(records, "test", ("train", "dev", "test"), source.corpus)
    require_searchable(sets["test"])
    stats = dataset_stats(records, pairs, len(sets["test"]["corpus"]), load_tokenizer(model), model.max_seq_length)
    split.update(shared_test_passages=leaks.shared_test_passages, leaked_queries_dropped=len(leaks.dropped_queries))
    stats.update(split=split, relevance=relevance_stats(records), source=source.notes)
    if data.negative_columns:
        stats["negatives"] = negatives
    print("\n".join(data_summary(stats, model.max_seq_length, stage.paths.data_metrics)))

    with stage.track() as run:
        with output_dir(stage.paths.prepared) as out:
            pairs.to_parquet(out / stage.paths.train_file, index=False)
            for name, rs in sets.items():
                (out / getattr(stage.paths, f"{name}_file")).write_text(json.dumps(rs), encoding="utf-8")
        write_json(stage.paths.data_metrics, stats)
        run.log_metrics(stats)


if __name__ == "__main__":
    main()
