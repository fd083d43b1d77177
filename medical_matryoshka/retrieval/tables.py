"""The metrics-file schema shared by baseline, evaluate and the model card: {part: {"dim_<d>": {metric: value}}}."""

from __future__ import annotations

from medical_matryoshka.core.dims import dim_label, dim_of


def metric_change(base: dict, finetuned: dict) -> dict:
    """finetuned - base for every dimension and metric both have."""
    return {
        dim: {m: finetuned[dim][m] - base[dim][m] for m in finetuned[dim] if m in base.get(dim, {})}
        for dim in finetuned
        if dim in base
    }


def by_dim(table: dict, metric: str) -> dict[str, float]:
    """{d0384: value} of one metric, smallest dimension first."""
    dims = sorted(table, key=dim_of)
    return {dim_label(dim): table[dim][metric] for dim in dims}


def parent_summary(base: dict, finetuned: dict, metric: str, measure: str) -> dict[str, float]:
    """The pipeline's result in a few dimension-first names: per dim the fine-tuned value, the base value and
    the gain, and the smallest dimension's share of the full one (how much Matryoshka truncation keeps)."""
    label = measure.replace("@", "")
    tuned, untuned = by_dim(finetuned, metric), by_dim(base, metric) if base else {}
    summary: dict[str, float] = {}
    for dim, value in tuned.items():
        summary[f"{dim}.{label}"] = value
        if dim in untuned:
            summary[f"{dim}.base"] = untuned[dim]
            summary[f"{dim}.gain"] = value - untuned[dim]
    small, full = min(tuned), max(tuned)
    summary[f"share.{small}_of_{full}"] = tuned[small] / tuned[full] if tuned[full] else 0.0
    return summary
