"""Stage `prepare`: raw records -> train pairs, dev and test retrieval sets, dataset statistics.

Outputs (paths from params.yaml `paths`): <prepared>/train.parquet (anchor, positive),
<prepared>/dev.json and <prepared>/test.json (queries, corpus, relevant), <data_metrics>.
"""

from __future__ import annotations

import json

from stages import config
from stages.atomic import output_dir, write_json
from stages.config import DataConfig
from stages.data_sources import load_records
from stages.errors import run_stage
from stages.models import load_tokenizer
from stages.splits import assign_splits, check_leakage, dataset_stats, retrieval_set, train_pairs


def main() -> None:
    ctx = config.stage_context()
    params, model, paths = ctx.params, ctx.model, ctx.paths
    data = config.section(DataConfig, params, "data")
    seed = config.seed(params)

    records = assign_splits(load_records(data), data.dev_fraction, data.test_fraction, seed, data.max_docs)
    pairs = train_pairs(records, exclude=check_leakage(records, data.boilerplate_max_words))
    stats = dataset_stats(records, pairs, load_tokenizer(model), model.max_seq_length)
    print(json.dumps(stats, indent=2))

    stage_params = {
        "data": params["data"],
        "seed": seed,
        "model.name": model.name,
        "model.max_seq_length": model.max_seq_length,
    }
    with ctx.track("prepare", stage_params) as run:
        with output_dir(paths.prepared) as out:
            pairs.to_parquet(out / "train.parquet", index=False)
            (out / "dev.json").write_text(json.dumps(retrieval_set(records, "dev", ("train", "dev"))), encoding="utf-8")
            (out / "test.json").write_text(
                json.dumps(retrieval_set(records, "test", ("train", "dev", "test"))), encoding="utf-8"
            )
        write_json(paths.data_metrics, stats)
        run.log_metrics(stats)


if __name__ == "__main__":
    run_stage(main)
