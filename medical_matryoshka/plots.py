"""The primary metric by Matryoshka dimension for the card's models and this run's: DVC plot data and a PNG."""

from __future__ import annotations

from pathlib import Path

from medical_matryoshka.core.dims import dim_of
from medical_matryoshka.core.sections import EvalConfig

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
        name: [{"dim": dim_of(dim), metric: values[metric]} for dim, values in table.items()]
        for name, table in tables.items()
        if all(metric in values for values in table.values())
    }


STYLE = {  # colour-blind-safe (Okabe-Ito) pairs: the card's models dashed, this run's solid
    "card_base": {"color": "#999999", "marker": "s", "linestyle": "--"},
    "card_finetuned": {"color": "#E69F00", "marker": "D", "linestyle": "--"},
    "base": {"color": "#56B4E9", "marker": "o", "linestyle": "-"},
    "finetuned": {"color": "#0072B2", "marker": "^", "linestyle": "-"},
}
GAINS = {"card_finetuned": "card_base", "finetuned": "base"}  # each fine-tuned model against its own base


def fit_title(title: str, width: int = 110) -> str:
    """A run's name as a figure title: a sweep's long override list is cut to one line (the run's description
    in MLflow has it whole)."""
    return title if len(title) <= width else title[: width - 1] + "…"


def write_plots(folder: Path, series: dict[str, list[dict]], eval_cfg: EvalConfig, title: str = "") -> Path:
    """One CSV per series (DVC plots: x = dim, y = plot_column) and the PNG of `draw`; returns the PNG."""
    import matplotlib.pyplot as plt

    metric = eval_cfg.primary_metric
    data = folder / "ndcg_by_dim"
    data.mkdir()
    for name, rows in series.items():
        (data / f"{name}.csv").write_text(
            f"dim,{plot_column(eval_cfg)}\n" + "".join(f"{r['dim']},{r[metric]:.6f}\n" for r in rows), encoding="utf-8"
        )
    fig = draw(series, eval_cfg, title)
    image = folder / "ndcg_by_dim.png"
    fig.savefig(image, dpi=120)
    plt.close(fig)
    return image


def draw(series: dict[str, list[dict]], eval_cfg: EvalConfig, title: str = ""):
    """Two panels: the metric by dimension for every series, and each fine-tuned model's change against its
    base (where the runs of a sweep differ). The models' real dims are the x ticks; `title` names the run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullLocator

    metric = eval_cfg.primary_metric
    fig, (ax, gain_ax) = plt.subplots(1, 2, figsize=(11, 4.2))
    dims = sorted({r["dim"] for rows in series.values() for r in rows})
    for name, rows in series.items():
        ax.plot([r["dim"] for r in rows], [r[metric] for r in rows], label=LABELS[name], **STYLE[name])
    for tuned, base in GAINS.items():
        if tuned in series and base in series:
            base_values = {r["dim"]: r[metric] for r in series[base]}
            rows = [r for r in series[tuned] if r["dim"] in base_values]
            gains = [r[metric] - base_values[r["dim"]] for r in rows]
            gain_ax.plot([r["dim"] for r in rows], gains, label=f"{LABELS[tuned]} - base", **STYLE[tuned])
    for axis in (ax, gain_ax):
        axis.set_xscale("log", base=2)
        axis.set_xticks(dims, [str(d) for d in dims])  # the models' real dims, not powers of 2
        axis.xaxis.set_minor_locator(NullLocator())
        axis.set_xlabel("embedding dimension (Matryoshka truncation)")
        axis.grid(alpha=0.3)
    ax.set_ylabel(f"test {eval_cfg.primary_measure}")
    ax.set_title(f"test {eval_cfg.primary_measure} by dimension")
    ax.legend(fontsize=8)
    gain_ax.axhline(0, color="black", linewidth=0.8)
    gain_ax.set_ylabel(f"change in {eval_cfg.primary_measure}")
    gain_ax.set_title("fine-tuned minus its base model")
    gain_ax.legend(fontsize=8)
    if title:
        fig.suptitle(fit_title(title), fontsize=10)
    fig.tight_layout()
    return fig


PRECISION_STYLE = {  # Okabe-Ito, one colour and marker per precision
    "float32": {"color": "#0072B2", "marker": "o"},
    "int8": {"color": "#009E73", "marker": "s"},
    "binary": {"color": "#D55E00", "marker": "v"},
    "binary_rescore": {"color": "#CC79A7", "marker": "^"},
}


def write_frontier_plot(folder: Path, frontier: dict, measure: str, title: str = "") -> Path:
    """<folder>/frontier.png of `draw_frontier`; returns its path."""
    import matplotlib.pyplot as plt

    fig = draw_frontier(frontier, measure, title)
    image = folder / "frontier.png"
    fig.savefig(image, dpi=120)
    plt.close(fig)
    return image


def draw_frontier(frontier: dict, measure: str, title: str = ""):
    """Bytes per vector (log scale) against the metric: a colour per precision, the fine-tuned model filled and
    joined across dims, the base model hollow and dotted at the same sizes; each fine-tuned point is labelled
    with its dim. `frontier`: {"bytes": {d: {precision: n}}, "base": {d: {precision: v}}, "finetuned": ...}."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullLocator

    sizes = frontier["bytes"]
    fig, ax = plt.subplots(figsize=(10, 5.5))
    ticks = set()
    for model, filled, line in (("base", False, ":"), ("finetuned", True, "-")):
        if model not in frontier:
            continue
        table = frontier[model]
        for precision, style in PRECISION_STYLE.items():
            dims = [d for d in table if precision in table[d]]
            if not dims:
                continue
            xs, ys = [sizes[d][precision] for d in dims], [table[d][precision] for d in dims]
            ticks.update(xs)
            label = f"{'fine-tuned' if filled else 'base'}: {precision}"
            face = style["color"] if filled else "white"
            ax.plot(
                xs,
                ys,
                linestyle=line,
                color=style["color"],
                marker=style["marker"],
                markerfacecolor=face,
                alpha=1.0 if filled else 0.7,
                label=label,
            )
            if filled:
                for d, x, y in zip(dims, xs, ys, strict=True):
                    ax.annotate(
                        str(dim_of(d)),
                        (x, y),
                        textcoords="offset points",
                        xytext=(4, 4),
                        fontsize=7,
                        color=style["color"],
                    )
    ax.set_xscale("log", base=2)
    ticks = sorted(ticks)
    ax.set_xticks(ticks, [str(t) for t in ticks], fontsize=7, rotation=45)
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xlabel("bytes per vector (log scale); labels: Matryoshka dimension")
    ax.set_ylabel(f"test {measure}")
    ax.set_title(f"size / quality frontier: test {measure} by bytes per stored vector")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, ncol=2, loc="lower right")
    if title:
        fig.suptitle(fit_title(title), fontsize=10)
    fig.tight_layout()
    return fig
