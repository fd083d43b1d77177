"""Stage `baseline`: the un-tuned base model on the test retrieval set at every Matryoshka dimension.

Writes {"base": {"dim_<d>": {<15 metrics>}}} to <baseline_metrics>, the schema of metrics/model_card.json.
"""

from __future__ import annotations

import time
from pathlib import Path

from medical_matryoshka.atomic import write_json
from medical_matryoshka.config.sections import EvalConfig, ModelConfig
from medical_matryoshka.config.stage import StageConfig
from medical_matryoshka.errors import run_main
from medical_matryoshka.models import load_model
from medical_matryoshka.retrieval.scoring import load_retrieval_set, score_all_dims


def main() -> None:
    stage = StageConfig.load("baseline")
    model_cfg, eval_cfg = stage.section(ModelConfig, "model"), stage.section(EvalConfig, "eval")

    test_set = load_retrieval_set(Path(stage.paths.prepared) / "test.json")
    model = load_model(model_cfg)
    with stage.track() as run:
        start = time.perf_counter()
        metrics = {"base": score_all_dims(model, test_set, model_cfg.dims, eval_cfg)}
        seconds = time.perf_counter() - start
        for dim, values in metrics["base"].items():
            print(f"{dim:>8}  {eval_cfg.primary_metric}={values[eval_cfg.primary_metric]:.4f}")
        write_json(stage.paths.baseline_metrics, metrics)
        run.log_metrics({**metrics, "eval_seconds": seconds})  # the parent gets base values from evaluate


if __name__ == "__main__":
    run_main(main)
