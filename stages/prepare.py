"""Stage `prepare`: raw records -> train pairs, dev and test retrieval sets, dataset statistics.

Outputs (paths from params.yaml `paths`): <prepared>/train.parquet (anchor, positive, doc_id),
<prepared>/dev.json and <prepared>/test.json (queries, corpus, relevant), <data_metrics>.
"""

from __future__ import annotations

import json

from medical_matryoshka.atomic import output_dir, write_json
from medical_matryoshka.config.sections import DataConfig, ModelSource
from medical_matryoshka.config.stage import StageConfig
from medical_matryoshka.data.leakage import check_leakage
from medical_matryoshka.data.sources import load_records, require_tracked
from medical_matryoshka.data.splits import assign_splits, retrieval_set, train_pairs
from medical_matryoshka.data.stats import dataset_stats
from medical_matryoshka.errors import run_main
from medical_matryoshka.lifetime import die_with_parent
from medical_matryoshka.models import load_tokenizer


def main() -> None:
    die_with_parent()  # a killed `dvc` leaves no stage behind
    stage = StageConfig.load("prepare")
    data, model = stage.section(DataConfig, "data"), stage.section(ModelSource, "model")

    require_tracked(data, stage.paths.raw)
    records = assign_splits(load_records(data), data.dev_fraction, data.test_fraction, stage.seed(), data.max_docs)
    pairs = train_pairs(records, exclude=check_leakage(records, data.boilerplate_max_words))
    stats = dataset_stats(records, pairs, load_tokenizer(model), model.max_seq_length)
    rows, tokens = stats["rows"], stats["tokens"]
    print(
        f"{rows['train_pairs']} training pairs from {rows['train_docs']} documents; dev {rows['dev_docs']} and "
        f"test {rows['test_docs']} documents over {rows['corpus_passages']} corpus passages"
    )
    print(
        f"tokens per text (max {model.max_seq_length}): anchor mean {tokens['anchor']['mean']}, positive mean "
        f"{tokens['positive']['mean']}; details in {stage.paths.data_metrics}"
    )

    with stage.track() as run:
        with output_dir(stage.paths.prepared) as out:
            pairs.to_parquet(out / "train.parquet", index=False)
            for split, corpus_splits in (("dev", ("train", "dev")), ("test", ("train", "dev", "test"))):
                rs = retrieval_set(records, split, corpus_splits)
                (out / f"{split}.json").write_text(json.dumps(rs), encoding="utf-8")
        write_json(stage.paths.data_metrics, stats)
        run.log_metrics(stats)


if __name__ == "__main__":
    run_main(main)
