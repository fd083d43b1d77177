"""A Matryoshka dimension's names, made and read back here only.

- `dim_384` (dim_key): sentence-transformers' evaluator name, so the key of metrics/*.json tables (the card's
  schema) and the suffix of per-dim values such as `pca_variance_dim_384`;
- `d0384` (dim_label): the name in metrics/summary.json, MLflow metric names and `dvc exp show` columns, which
  sorts by size and tells 32 from 384 in a narrow column.
"""

from __future__ import annotations

import re

_NAME = re.compile(r"(?:.*_)?dim_(\d+)|d(\d{4,})|(\d+)")


def dim_key(dim: int) -> str:
    """384 -> dim_384."""
    return f"dim_{dim}"


def dim_label(dim: int | str) -> str:
    """384 or dim_384 -> d0384."""
    return f"d{dim_of(dim):04d}"


def dim_of(name: int | str) -> int:
    """The dimension a name holds: dim_384, pca_variance_dim_384, d0384 and 384 all give 384."""
    if isinstance(name, int):
        return name
    match = _NAME.fullmatch(name)
    if match is None:
        raise ValueError(f"not a dimension's name: {name!r} (dim_384, d0384)")
    return int(next(g for g in match.groups() if g is not None))


def is_label(name: str) -> bool:
    """Whether `name` is a dim_label (d0384), as metrics/summary.json's keys are."""
    return re.fullmatch(r"d\d{4,}", name) is not None
