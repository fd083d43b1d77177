"""The primary metric by Matryoshka dimension for the card's models and this run's: DVC plot data and a PNG."""

from __future__ import annotations

from pathlib import Path

from medical_matryoshka.config.sections import EvalConfig

LABELS = {
    "card_base": "card: base",
    "card_finetuned": "card: fine-tuned",
    "base": "this run: base",
    "finetuned": "this run: fine-tuned",
}


def plot_column(eval_cfg: EvalConfig) -> str:
    """The plot data's column for the primary metric: ndcg_at_10 (dvc.yaml's `plots` names it)."""
    return eval_cfg.primary_measure.replace("@", "_at_")


def metric_by_dim(tables: dict[str, dict], metric: str) -> dict[str, list[dict]]:
    """{series: [{"dim": d, metric: value}, ...]} for each metrics table that has `metric` (the card may not)."""
    return {
        name: [{"dim": int(dim.removeprefix("dim_")), metric: values[metric]} for dim, values in table.items()]
        for name, table in tables.items()
        if all(metric in values for values in table.values())
    }


def write_plots(folder: Path, series: dict[str, list[dict]], eval_cfg: EvalConfig) -> Path:
    """One CSV per series (DVC plots: x = dim, y = plot_column) and a PNG with every line; returns the PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metric = eval_cfg.primary_metric
    data = folder / "ndcg_by_dim"
    data.mkdir()
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, rows in series.items():
        (data / f"{name}.csv").write_text(
            f"dim,{plot_column(eval_cfg)}\n" + "".join(f"{r['dim']},{r[metric]:.6f}\n" for r in rows), encoding="utf-8"
        )
        ax.plot([r["dim"] for r in rows], [r[metric] for r in rows], marker="o", label=LABELS[name])
    ax.set_xscale("log", base=2)
    ax.set_xlabel("embedding dimension")
    ax.set_ylabel(f"test {metric}")
    ax.set_title(f"{metric} by Matryoshka dimension")
    ax.grid(alpha=0.3)
    ax.legend()
    image = folder / "ndcg_by_dim.png"
    fig.tight_layout()
    fig.savefig(image, dpi=120)
    plt.close(fig)
    return image
