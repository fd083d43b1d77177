"""Stage `export`: the fine-tuned model for a CPU runtime, kept only when it encodes as torch does.

Writes <exported> (serving/export.py: the whole model in one OpenVINO or ONNX graph, its tokenizer and
export.json; load it with serving.encoder.ExportedEncoder) and <export_metrics> = {"model_mb", "agreement"
(serving/verify.py: largest 1 - cos against torch float32 on real texts, alone vs batched, padded lengths),
"exported" / "torch" / "change": test NDCG@10 by dim and stored precision, the exported encoder's beside
evaluate's (metrics/frontier.json)}. A route outside export.max_cosine_distance or export.max_ndcg_loss stops
the stage with one line and leaves no folder.
"""

from __future__ import annotations

import json

from medical_matryoshka.core.atomic import output_dir, write_json
from medical_matryoshka.core.errors import PipelineError, require_input
from medical_matryoshka.core.models import load_model, weights_digest
from medical_matryoshka.core.runtime import stage_main
from medical_matryoshka.core.sections import ExportConfig
from medical_matryoshka.core.stage import StageConfig
from medical_matryoshka.reports import export_summary, frontier_table, worst_change
from medical_matryoshka.retrieval.frontier import score_with_frontier
from medical_matryoshka.retrieval.scoring import RetrievalSet, load_calibration_texts, load_retrieval_set
from medical_matryoshka.retrieval.tables import metric_change
from medical_matryoshka.serving.encoder import ExportedEncoder
from medical_matryoshka.serving.export import export_model, model_bytes
from medical_matryoshka.serving.verify import agreement


def verify_sample(rs: RetrievalSet, n: int) -> list[str]:
    """n real texts, half claims and half passages, the first by id (the same sample on every run)."""
    queries = [rs.queries[k] for k in sorted(rs.queries)][: n // 2]
    passages = [rs.corpus[k] for k in sorted(rs.corpus)][: n - len(queries)]
    return queries + passages


def check(cfg: ExportConfig, measured: dict[str, float], change: dict[str, dict[str, float]], queries: int) -> None:
    route = f"{cfg.runtime} {cfg.weights}"
    worst = max(("max_cosine_distance", "alone_vs_batched_max_cosine_distance", "padded_max_cosine_distance"),
                key=measured.__getitem__)  # fmt: skip
    if measured[worst] > cfg.tolerance:
        hint = " or -S export.inference_precision=f32" if cfg.runtime == "openvino" else ""
        raise PipelineError(
            f"export: the {route} model is {measured[worst]:.4f} (1 - cos, {worst}) from torch float32, over "
            f"export.max_cosine_distance.{cfg.weights} = {cfg.tolerance}; try the other runtime or weights{hint}"
        )
    losses = {dim: -row["float32"] for dim, row in change.items() if "float32" in row}
    dim = max(losses, key=losses.__getitem__)
    if losses[dim] > cfg.max_ndcg_loss:
        if cfg.weights == "int8":
            fix = "-S export.weights=float"
        elif cfg.runtime == "openvino" and cfg.inference_precision != "f32":
            fix = "-S export.inference_precision=f32 (float32 arithmetic: torch's ranking, torch's speed)"
        else:
            fix = "the other runtime"
        raise PipelineError(
            f"export: the {route} model's test NDCG@10 at {dim} is {losses[dim]:.4f} below torch's, over "
            f"export.max_ndcg_loss = {cfg.max_ndcg_loss} (on {queries} test queries one reordered pair moves it by up "
            f"to {1 / queries:.3f}); use {fix}, or raise export.max_ndcg_loss if that loss is fine"
        )


@stage_main("export")
def main(stage: StageConfig) -> None:
    model_cfg, (eval_cfg, frontier_cfg, cfg) = stage.model(), stage.sections("eval", "frontier", "export")
    paths = stage.paths

    test_set = load_retrieval_set(paths.prepared_test)
    calibration = load_calibration_texts(paths.prepared_train)
    frontier_file = require_input(paths.frontier_metrics, "evaluate")
    torch_frontier = json.loads(frontier_file.read_text(encoding="utf-8"))["finetuned"]
    require_input(paths.model, "train", what="fine-tuned model ")
    model = load_model(model_cfg.at(paths.model))

    with stage.track() as run:
        with output_dir(paths.exported) as out:
            source = {"model": str(paths.model), "sha256": weights_digest(paths.model)}
            export_model(model, out, cfg.runtime, cfg.weights, cfg.inference_precision, model_cfg.dims, source)
            encoder = ExportedEncoder(out)
            measured = agreement(model, encoder, verify_sample(test_set, cfg.verify_texts), eval_cfg.batch_size)
            scored = score_with_frontier(encoder, test_set, calibration, model_cfg.dims, eval_cfg, frontier_cfg)
            exported = scored.frontier
            change = metric_change(torch_frontier, exported)
            check(cfg, measured, change, len(test_set.queries))
            size = model_bytes(out)
        metrics = {
            "model_mb": round(size / 2**20, 1),
            "agreement": measured,
            "exported": exported,
            "torch": torch_frontier,
            "change": change,
        }
        write_json(paths.export_metrics, metrics)
        run.log_metrics({k: v for k, v in metrics.items() if k != "torch"})
        run.set_tag("export.inference_precision", encoder.runtime_precision)
        print(export_summary(paths.exported, cfg.runtime, cfg.weights, encoder.runtime_precision, metrics))
        print(frontier_table(exported, eval_cfg.primary_measure, f"exported ({cfg.runtime} {cfg.weights})"))
        print(worst_change(change))


if __name__ == "__main__":
    main()
