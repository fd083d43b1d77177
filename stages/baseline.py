"""Stage `baseline`: the un-tuned base model on the test retrieval set at every Matryoshka dimension.

Writes {"base": {"dim_<d>": {<15 metrics>}}} to <baseline_metrics>, the schema of metrics/model_card.json, and
{"base": {"d<dim>": {<precision>: <primary metric>}}} to <baseline_frontier> (retrieval/frontier.py), both from
one encoding of the test set; and the primary metric of every test query at every dim to <baseline_queries>
({"dim_<d>": {query_id: value}}), which `evaluate` pairs with the fine-tuned model's for the noise interval.
"""

from __future__ import annotations

import time

from medical_matryoshka.core.atomic import write_json
from medical_matryoshka.core.models import load_model
from medical_matryoshka.core.runtime import stage_main
from medical_matryoshka.core.stage import StageConfig
from medical_matryoshka.reports import base_scores, frontier_table
from medical_matryoshka.retrieval.frontier import score_with_frontier
from medical_matryoshka.retrieval.scoring import load_calibration_texts, load_retrieval_set


@stage_main("baseline")
def main(stage: StageConfig) -> None:
    model_cfg, (eval_cfg, frontier_cfg) = stage.model(), stage.sections("eval", "frontier")

    test_set = load_retrieval_set(stage.paths.prepared_test)
    calibration = load_calibration_texts(stage.paths.prepared_train)
    model = load_model(model_cfg)
    with stage.track() as run:
        start = time.perf_counter()
        scored = score_with_frontier(model, test_set, calibration, model_cfg.dims, eval_cfg, frontier_cfg)
        metrics, base_frontier = {"base": scored.metrics}, {"base": scored.frontier}
        seconds = time.perf_counter() - start
        print(base_scores(metrics["base"], eval_cfg.primary_metric))
        write_json(stage.paths.baseline_metrics, metrics)
        write_json(stage.paths.baseline_frontier, base_frontier)
        write_json(stage.paths.baseline_queries, scored.per_query)
        print(frontier_table(base_frontier["base"], eval_cfg.primary_measure, "base model"))
        # the parent gets base values from evaluate
        run.log_metrics({**metrics, "eval_seconds": seconds, "frontier": base_frontier["base"]})


if __name__ == "__main__":
    main()
