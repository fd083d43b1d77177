"""Stage `evaluate`: the fine-tuned model on the test retrieval set, beside the base model and the card.

Writes <eval_metrics> = {"base", "finetuned", "change"} (same metrics and dims as `baseline`), and the
primary metric by dimension for the card's base and fine-tuned models and this run's, as DVC plot data
(<plots>/ndcg_by_dim/*.csv) and as an image (<plots>/ndcg_by_dim.png, also logged to MLflow).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from medical_matryoshka.atomic import output_dir, write_json
from medical_matryoshka.config.sections import EvalConfig, ModelConfig
from medical_matryoshka.config.stage import StageConfig
from medical_matryoshka.errors import require_input, run_main
from medical_matryoshka.models import load_model
from medical_matryoshka.plots import metric_by_dim, write_plots
from medical_matryoshka.retrieval.scoring import load_retrieval_set, score_all_dims
from medical_matryoshka.retrieval.tables import metric_change
from medical_matryoshka.training.checkpoints import discard_finished


def main() -> None:
    stage = StageConfig.load("evaluate")
    model_cfg, eval_cfg, paths = stage.section(ModelConfig, "model"), stage.section(EvalConfig, "eval"), stage.paths

    test_set = load_retrieval_set(Path(paths.prepared) / "test.json")
    base = json.loads(require_input(paths.baseline_metrics, "baseline").read_text(encoding="utf-8"))["base"]
    card = json.loads(Path(paths.card).read_text(encoding="utf-8"))
    require_input(paths.model, "train", what="fine-tuned model ")
    model = load_model(dataclasses.replace(model_cfg, name=paths.model, embedded_package=None))
    stale = discard_finished(Path(paths.checkpoints), Path(paths.train_metrics), Path(paths.model))
    if stale:
        print(f"removed {stale}: checkpoints of an interrupted run whose model DVC has since put in place")

    with stage.track() as run:
        finetuned = score_all_dims(model, test_set, model_cfg.dims, eval_cfg)
        metrics = {"base": base, "finetuned": finetuned, "change": metric_change(base, finetuned)}
        metric = eval_cfg.primary_metric
        for dim in finetuned:
            print(
                f"{dim:>8}  {metric} base {base[dim][metric]:.4f}  fine-tuned {finetuned[dim][metric]:.4f}"
                f"  change {metrics['change'][dim][metric]:+.4f}"
            )
        tables = {"card_base": card["base"], "card_finetuned": card["finetuned"], "base": base, "finetuned": finetuned}
        with output_dir(paths.plots) as out:
            run.log_artifact(write_plots(out, metric_by_dim(tables, metric), eval_cfg))
        write_json(paths.eval_metrics, metrics)
        run.log_metrics({"finetuned": finetuned, "change": metrics["change"]}, parent=True)


if __name__ == "__main__":
    run_main(main)
