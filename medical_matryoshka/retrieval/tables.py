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


def parent_summary(
    base: dict, finetuned: dict, metric: str, measure: str, bounds: dict | None = None
) -> dict[str, float]:
    """The pipeline's result in a few dimension-first names, four decimals: per dim the fine-tuned value
    (`d0384.ndcg10`), its base's (`d0384.ndcg10_base`), the change (`d0384.ndcg10_change`) and its 95% interval
    (`..._change_ci_high`, `..._change_ci_low`; `bounds` as retrieval/noise.intervals gives them), which sort
    in that order, and the smallest dimension's share of the full one (how much Matryoshka truncation keeps)."""
    label = measure.replace("@", "")
    tuned, untuned = by_dim(finetuned, metric), by_dim(base, metric) if base else {}
    ranges = {dim_label(d): b for d, b in (bounds or {}).items()}
    summary: dict[str, float] = {}
    for dim, value in tuned.items():
        summary[f"{dim}.{label}"] = round(value, 4)
        if dim in untuned:
            summary[f"{dim}.{label}_base"] = round(untuned[dim], 4)
            summary[f"{dim}.{label}_change"] = round(value - untuned[dim], 4)
        if dim in ranges:
            summary[f"{dim}.{label}_change_ci_high"] = round(ranges[dim]["high"], 4)
            summary[f"{dim}.{label}_change_ci_low"] = round(ranges[dim]["low"], 4)
    small, full = min(tuned), max(tuned)
    summary[f"share.{small}_of_{full}"] = round(tuned[small] / tuned[full], 4) if tuned[full] else 0.0
    return summary


def exp_summary(base: dict, finetuned: dict, metric: str, verdict: str, queries: int) -> dict:
    """metrics/summary.json, what `dvc exp show` prints: the fine-tuned value by dim (`d0384`, the key sweeps
    and searches read), then `base.d0384` and `change.d0384` (fine-tuned - base), how the change compares with
    the test set's noise (`vs_base`, retrieval/noise.py) and the number of test queries; four decimals."""
    tuned, untuned = by_dim(finetuned, metric), by_dim(base, metric)
    return {
        **{dim: round(value, 4) for dim, value in tuned.items()},
        "base": {dim: round(untuned[dim], 4) for dim in tuned if dim in untuned},
        "change": {dim: round(tuned[dim] - untuned[dim], 4) for dim in tuned if dim in untuned},
        "vs_base": verdict,
        "test_queries": queries,
    }
