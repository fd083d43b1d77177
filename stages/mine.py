"""Stage `mine`: add hard negatives to the training pairs (or pass them through when mining is off).

Writes <pairs>/train.parquet with columns anchor, positive[, negative_1..n], which `train` consumes
directly (MultipleNegativesRankingLoss takes extra columns as negatives), and <mining_metrics>. Negatives
given with the data (data.columns.negative) come first; mining fills the rest of each row.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from medical_matryoshka.atomic import output_dir, write_json
from medical_matryoshka.config.sections import MiningConfig, ModelConfig
from medical_matryoshka.config.stage import StageConfig
from medical_matryoshka.errors import require_input, run_main
from medical_matryoshka.lifetime import die_with_parent
from medical_matryoshka.models import load_model
from medical_matryoshka.negatives import mine_hard_negatives, pass_given_negatives


def main() -> None:
    die_with_parent()  # a killed `dvc` leaves no stage behind
    stage = StageConfig.load("mine")
    mining, model_cfg = stage.section(MiningConfig, "mining"), stage.section(ModelConfig, "model")

    pairs = pd.read_parquet(require_input(Path(stage.paths.prepared) / "train.parquet", "prepare"))
    model = load_model(model_cfg) if mining.enabled else None
    with stage.track() as run:
        if model is not None:
            rows, stats = mine_hard_negatives(model, pairs, mining, stage.seed())
        else:
            rows, stats = pass_given_negatives(pairs)
        stats = {"enabled": mining.enabled, **stats}
        if mining.enabled:
            given = f" ({stats['given_negatives_used']} given kept)" if "given_negatives_used" in stats else ""
            mean = stats["negative_score"].get("mean", "-")
            print(
                f"{len(rows.columns) - 2} negative(s) for {stats['rows_out']} of {stats['rows_in']} pairs{given}; mean "
                f"cosine of the mined ones: positive {stats['positive_score']['mean']}, negative {mean}; "
                f"details in {stage.paths.mining_metrics}"
            )
        elif "given_negatives_used" in stats:
            print(
                f"mining off (mining.enabled=false): {len(rows)} pairs go on with {len(rows.columns) - 2} given "
                f"negative(s) each; {stats['given_negatives_unused']} given beyond what every row has are not used "
                "(-S mining.enabled=true mines the rest for every row instead)"
            )
        else:
            print(f"mining off (mining.enabled=false): {len(rows)} pairs go on without negatives")
        with output_dir(stage.paths.pairs) as out:
            rows.to_parquet(out / "train.parquet", index=False)
        write_json(stage.paths.mining_metrics, stats)
        run.log_metrics({k: v for k, v in stats.items() if k != "enabled"})


if __name__ == "__main__":
    run_main(main)
