"""Stage `baseline`: the un-tuned base model on the test retrieval set at every Matryoshka dimension.

Writes {"base": {"dim_<d>": {<15 metrics>}}} to <baseline_metrics>, the schema of metrics/model_card.json, and
{"base": {"d<dim>": {<precision>: <primary metric>}}} to <baseline_frontier> (retrieval/frontier.py), both from
one encoding of the test set.
"""

from __future__ import annotations

import time
from pathlib import Path

from medical_matryoshka.atomic import write_json
from medical_matryoshka.config.sections import EvalConfig, FrontierConfig, ModelConfig
from medical_matryoshka.config.stage import StageConfig
from medical_matryoshka.errors import run_main
from medical_matryoshka.lifetime import die_with_parent
from medical_matryoshka.models import load_model
from medical_matryoshka.retrieval.frontier import frontier_table, score_with_frontier
from medical_matryoshka.retrieval.scoring import load_retrieval_set


def main() -> None:
    die_with_parent()  # a killed `dvc` leaves no stage behind
    stage = StageConfig.load("baseline")
    model_cfg, eval_cfg = stage.section(ModelConfig, "model"), stage.section(EvalConfig, "eval")
    frontier_cfg = stage.section(FrontierConfig, "frontier")

    test_set = load_retrieval_set(Path(stage.paths.prepared) / "test.json")
    model = load_model(model_cfg)
    with stage.track() as run:
        start = time.perf_counter()
        train_file = Path(stage.paths.prepared) / "train.parquet"
        scores, scored = score_with_frontier(model, test_set, train_file, model_cfg.dims, eval_cfg, frontier_cfg)
        metrics, base_frontier = {"base": scores}, {"base": scored}
        seconds = time.perf_counter() - start
        for dim, values in metrics["base"].items():
            print(f"{dim:>8}  {eval_cfg.primary_metric}={values[eval_cfg.primary_metric]:.4f}")
        write_json(stage.paths.baseline_metrics, metrics)
        write_json(stage.paths.baseline_frontier, base_frontier)
        print(frontier_table(base_frontier["base"], eval_cfg.primary_measure, "base model"))
        # the parent gets base values from evaluate
        run.log_metrics({**metrics, "eval_seconds": seconds, "frontier": base_frontier["base"]})


if __name__ == "__main__":
    run_main(main)
