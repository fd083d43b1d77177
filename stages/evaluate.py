"""Stage `evaluate`: the fine-tuned model on the test retrieval set, beside the base model and the card.

Writes <eval_metrics> = {"base", "finetuned", "change"} (same metrics and dims as `baseline`), and a plot of
NDCG@10 by dimension for the card's base and fine-tuned models and this run's, as DVC plot data
(<plots>/ndcg_by_dim/*.csv) and as an image (<plots>/ndcg_by_dim.png, also logged to MLflow).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from stages import config
from stages.atomic import output_dir, write_json
from stages.config import EvalConfig
from stages.errors import require_input, run_stage
from stages.metric_tables import metric_change
from stages.models import load_model
from stages.retrieval import load_retrieval_set, score_all_dims

NDCG = "cosine_ndcg@10"
LABELS = {
    "card_base": "card: base",
    "card_finetuned": "card: fine-tuned",
    "base": "this run: base",
    "finetuned": "this run: fine-tuned",
}


def ndcg_series(card: dict, base: dict, finetuned: dict) -> dict[str, list[dict]]:
    """NDCG@10 by dimension for each model, the rows of the DVC plot."""
    series = {"card_base": card["base"], "card_finetuned": card["finetuned"], "base": base, "finetuned": finetuned}
    return {
        name: [{"dim": int(dim.removeprefix("dim_")), "ndcg_at_10": values[NDCG]} for dim, values in tables.items()]
        for name, tables in series.items()
    }


def write_plots(folder: Path, series: dict[str, list[dict]]) -> Path:
    """One CSV per series (DVC plots) and a PNG with all four lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data = folder / "ndcg_by_dim"
    data.mkdir()
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, rows in series.items():
        (data / f"{name}.csv").write_text(
            "dim,ndcg_at_10\n" + "".join(f"{r['dim']},{r['ndcg_at_10']:.6f}\n" for r in rows), encoding="utf-8"
        )
        ax.plot([r["dim"] for r in rows], [r["ndcg_at_10"] for r in rows], marker="o", label=LABELS[name])
    ax.set_xscale("log", base=2)
    ax.set_xlabel("embedding dimension")
    ax.set_ylabel("test NDCG@10")
    ax.set_title("NDCG@10 by Matryoshka dimension")
    ax.grid(alpha=0.3)
    ax.legend()
    image = folder / "ndcg_by_dim.png"
    fig.tight_layout()
    fig.savefig(image, dpi=120)
    plt.close(fig)
    return image


def main() -> None:
    ctx = config.stage_context()
    params, model_cfg, paths = ctx.params, ctx.model, ctx.paths
    eval_cfg = config.section(EvalConfig, params, "eval")

    test_set = load_retrieval_set(Path(paths.prepared) / "test.json")
    baseline_file = require_input(paths.baseline_metrics, "baseline")
    base = json.loads(baseline_file.read_text(encoding="utf-8"))["base"]
    card = json.loads(Path(paths.card).read_text(encoding="utf-8"))
    require_input(paths.model, "train", what="fine-tuned model ")
    model = load_model(dataclasses.replace(model_cfg, name=paths.model, embedded_package=None))

    with ctx.track("evaluate", {"model": params["model"], "eval": params["eval"]}) as run:
        finetuned = score_all_dims(model, test_set, model_cfg.dims, eval_cfg)
        metrics = {"base": base, "finetuned": finetuned, "change": metric_change(base, finetuned)}
        for dim in finetuned:
            print(
                f"{dim:>8}  ndcg@10 base {base[dim][NDCG]:.4f}  fine-tuned {finetuned[dim][NDCG]:.4f}"
                f"  change {metrics['change'][dim][NDCG]:+.4f}"
            )
        with output_dir(paths.plots) as out:
            image = write_plots(out, ndcg_series(card, base, finetuned))
            run.log_artifact(image)
        write_json(paths.eval_metrics, metrics)
        run.log_metrics({"finetuned": finetuned, "change": metrics["change"]}, parent=True)


if __name__ == "__main__":
    run_stage(main)
