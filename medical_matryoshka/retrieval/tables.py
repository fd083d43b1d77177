"""The metrics-file schema shared by baseline, evaluate and the model card: {part: {"dim_<d>": {metric: value}}}."""

from __future__ import annotations


def metric_change(base: dict, finetuned: dict) -> dict:
    """finetuned - base for every dimension and metric both have."""
    return {
        dim: {m: finetuned[dim][m] - base[dim][m] for m in finetuned[dim] if m in base.get(dim, {})}
        for dim in finetuned
        if dim in base
    }
