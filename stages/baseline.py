"""Stage `baseline`: the un-tuned base model on the test retrieval set at every Matryoshka dimension.

Writes {"base": {"dim_<d>": {<15 metrics>}}} to <baseline_metrics>, the schema of metrics/model_card.json.
"""

from __future__ import annotations

import time
from pathlib import Path

from stages import config
from stages.atomic import write_json
from stages.config import EvalConfig
from stages.errors import run_stage
from stages.models import load_model
from stages.retrieval import load_retrieval_set, score_all_dims


def main() -> None:
    ctx = config.stage_context()
    params, model_cfg, paths = ctx.params, ctx.model, ctx.paths
    eval_cfg = config.section(EvalConfig, params, "eval")

    test_set = load_retrieval_set(Path(paths.prepared) / "test.json")
    model = load_model(model_cfg)
    with ctx.track("baseline", {"model": params["model"], "eval": params["eval"]}) as run:
        start = time.perf_counter()
        metrics = {"base": score_all_dims(model, test_set, model_cfg.dims, eval_cfg)}
        seconds = time.perf_counter() - start
        for dim, values in metrics["base"].items():
            print(f"{dim:>8}  ndcg@10={values.get('cosine_ndcg@10', float('nan')):.4f}")
        write_json(paths.baseline_metrics, metrics)
        run.log_metrics(metrics, parent=True)
        run.log_metrics({"eval_seconds": seconds})


if __name__ == "__main__":
    run_stage(main)
