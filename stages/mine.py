"""Stage `mine`: add hard negatives to the training pairs (or pass them through when mining is off).

Writes <pairs>/train.parquet with columns anchor, positive[, negative_1..n], which `train` consumes
directly (MultipleNegativesRankingLoss takes extra columns as negatives), and <mining_metrics>.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from stages import config
from stages.atomic import output_dir, write_json
from stages.errors import require_input, run_stage
from stages.mining import MiningConfig, mine
from stages.models import load_model


def main() -> None:
    ctx = config.stage_context()
    params, model_cfg, paths = ctx.params, ctx.model, ctx.paths
    mining = config.section(MiningConfig, params, "mining")
    seed = config.seed(params)

    source = require_input(Path(paths.prepared) / "train.parquet", "prepare")
    pairs = pd.read_parquet(source)
    model = load_model(model_cfg) if mining.enabled else None
    with ctx.track("mine", {"mining": params["mining"], "seed": seed}) as run:
        if model is not None:
            rows, stats = mine(model, pairs, mining, seed)
        else:
            rows = pairs[["anchor", "positive"]]
            stats = {"rows_in": len(pairs), "rows_out": len(pairs)}
        stats = {"enabled": mining.enabled, **stats}
        print(json.dumps(stats, indent=2))
        with output_dir(paths.pairs) as out:
            rows.to_parquet(out / "train.parquet", index=False)
        write_json(paths.mining_metrics, stats)
        run.log_metrics({k: v for k, v in stats.items() if k != "enabled"})


if __name__ == "__main__":
    run_stage(main)
