"""Stage `evaluate`: the fine-tuned model on the test retrieval set, beside the base model and the card.

Writes <eval_metrics> = {"base", "finetuned", "change"} (same metrics and dims as `baseline`; logged to the
stage's MLflow run) and "noise": the 95% paired-bootstrap interval of the primary metric's change at every dim
over the test queries (retrieval/noise.py, paired with baseline's <baseline_queries>); <summary_metrics> = the
fine-tuned primary metric by dimension with its base, the change and the verdict against noise (`dvc exp
show`'s columns; the parent run gets the same by dim), and the
primary metric by dimension for the card's base and fine-tuned models and this run's, as DVC plot data
(<plots>/ndcg_by_dim/*.csv) and as an image (<plots>/ndcg_by_dim.png, also logged to MLflow).
The size / quality frontier (retrieval/frontier.py), scored from the same encoding: <frontier_metrics> =
{"bytes", "base" (from baseline), "finetuned"}: {"d<dim>": {<precision>: ...}}, drawn in <plots>/frontier.png.
"""

from __future__ import annotations

import json
from pathlib import Path

from medical_matryoshka.core.atomic import output_dir, write_json
from medical_matryoshka.core.errors import require_input
from medical_matryoshka.core.models import MODEL_TAG, load_model, weights_digest
from medical_matryoshka.core.runtime import stage_main
from medical_matryoshka.core.stage import StageConfig
from medical_matryoshka.plots import metric_by_dim, write_frontier_plot, write_plots
from medical_matryoshka.reports import change_table, frontier_table
from medical_matryoshka.retrieval.frontier import score_with_frontier, vector_bytes
from medical_matryoshka.retrieval.noise import RESAMPLES, intervals, noise_line, verdict
from medical_matryoshka.retrieval.scoring import load_calibration_texts, load_retrieval_set
from medical_matryoshka.retrieval.tables import exp_summary, metric_change, parent_summary
from medical_matryoshka.training.checkpoints import discard_finished


@stage_main("evaluate")
def main(stage: StageConfig) -> None:
    model_cfg, (eval_cfg, frontier_cfg) = stage.model(), stage.sections("eval", "frontier")
    paths = stage.paths

    test_set = load_retrieval_set(paths.prepared_test)
    calibration = load_calibration_texts(paths.prepared_train)
    base = json.loads(require_input(paths.baseline_metrics, "baseline").read_text(encoding="utf-8"))["base"]
    base_frontier = json.loads(require_input(paths.baseline_frontier, "baseline").read_text(encoding="utf-8"))["base"]
    base_queries = json.loads(require_input(paths.baseline_queries, "baseline").read_text(encoding="utf-8"))
    card = json.loads(Path(paths.card).read_text(encoding="utf-8"))
    require_input(paths.model, "train", what="fine-tuned model ")
    model = load_model(model_cfg.at(paths.model))
    stale = discard_finished(Path(paths.checkpoints), Path(paths.model))
    if stale:
        print(f"removed {stale}: checkpoints of an interrupted run whose model DVC has since put in place")

    with stage.track() as run:
        dims = model_cfg.dims
        scored = score_with_frontier(model, test_set, calibration, dims, eval_cfg, frontier_cfg)
        finetuned, tuned_frontier = scored.metrics, scored.frontier
        sizes = vector_bytes(model_cfg.dims, frontier_cfg.precisions)
        frontiers = {"bytes": sizes, "base": base_frontier, "finetuned": tuned_frontier}
        bounds = intervals(base_queries, scored.per_query)
        noise = {"test_queries": len(test_set.queries), "resamples": RESAMPLES, "change_95": bounds}
        metrics = {"base": base, "finetuned": finetuned, "change": metric_change(base, finetuned), "noise": noise}
        metric = eval_cfg.primary_metric
        tables = {"card_base": card["base"], "card_finetuned": card["finetuned"], "base": base, "finetuned": finetuned}
        with output_dir(paths.plots) as out:
            run.log_artifact(write_plots(out, metric_by_dim(tables, metric), eval_cfg, title=run.parent_name))
            run.log_artifact(write_frontier_plot(out, frontiers, eval_cfg.primary_measure, title=run.parent_name))
        write_json(paths.eval_metrics, metrics)
        write_json(paths.frontier_metrics, frontiers)
        run.log_metrics({"frontier": {"finetuned": tuned_frontier, "base": base_frontier}})
        run.set_tag(MODEL_TAG, weights_digest(paths.model), parent=True)  # `commands.register` finds the run by it
        summary = exp_summary(base, finetuned, metric, verdict(bounds), len(test_set.queries))
        write_json(paths.summary_metrics, summary)
        run.log_metrics(metrics)  # the full table, once, on this stage's run
        run.log_metrics(parent_summary(base, finetuned, metric, eval_cfg.primary_measure, bounds), parent=True)
        print(change_table(metrics, metric, eval_cfg.primary_measure))
        print(noise_line(len(test_set.queries), bounds, eval_cfg.primary_measure))
        print(frontier_table(tuned_frontier, eval_cfg.primary_measure, "fine-tuned"))
        if link := run.parent_link():
            print(f"MLflow run: {link}")
            print(f"MLflow runs table (model training, summary columns): {run.runs_table_link()}")


if __name__ == "__main__":
    main()
