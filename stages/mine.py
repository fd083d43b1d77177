"""Stage `mine`: add hard negatives to the training pairs (or pass them through when mining is off).

Writes <pairs>/<train_file> with columns anchor, positive[, negative_1..n], which `train` consumes
directly (MultipleNegativesRankingLoss takes extra columns as negatives), and <mining_metrics>. Negatives
given with the data (data.columns.negative) come first; mining fills the rest of each row.
"""

from __future__ import annotations

import pandas as pd

from medical_matryoshka.core.atomic import output_dir, write_json
from medical_matryoshka.core.errors import require_input
from medical_matryoshka.core.models import load_model
from medical_matryoshka.core.runtime import stage_main
from medical_matryoshka.core.stage import StageConfig
from medical_matryoshka.negatives import mine_hard_negatives, pass_given_negatives
from medical_matryoshka.reports import mining_summary


@stage_main("mine")
def main(stage: StageConfig) -> None:
    mining, model_cfg = stage.section("mining"), stage.model()

    pairs = pd.read_parquet(require_input(stage.paths.prepared_train, "prepare"))
    model = load_model(model_cfg) if mining.enabled else None
    with stage.track() as run:
        if model is not None:
            rows, stats = mine_hard_negatives(model, pairs, mining, stage.seed())
        else:
            rows, stats = pass_given_negatives(pairs)
        stats = {"enabled": mining.enabled, **stats}
        print(mining_summary(stats, len(rows.columns) - 2, len(rows), stage.paths.mining_metrics))
        with output_dir(stage.paths.pairs) as out:
            rows.to_parquet(out / stage.paths.train_file, index=False)
        write_json(stage.paths.mining_metrics, stats)
        run.log_metrics({k: v for k, v in stats.items() if k != "enabled"})


if __name__ == "__main__":
    main()
