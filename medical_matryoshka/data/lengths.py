"""How long the texts are in the model's tokens, and the max_seq_length every stage reads them at.

`model.max_seq_length: auto` resolves to the length that covers `model.length_coverage` of the passages (and
of the queries, where they run longer), rounded up to a multiple of 32 and capped at the length the model was
trained at (its own max_seq_length); a fixed value is kept, checked against what the model's position
embeddings take, and said when it cuts more than the coverage allows. `prepare` writes the result to
<prepared>/<lengths_file>, which every later stage loads the model with, so baseline, mining, training,
evaluation, export and the saved model read the same length.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from medical_matryoshka.core.errors import PipelineError
from medical_matryoshka.core.models import ModelLimits

ROUND_TO = 32  # a resolved length is a multiple of this (kernels and padding like round lengths)


def token_lengths(tokenizer, texts: Sequence[str], batch: int = 1000) -> np.ndarray:
    """Tokens per text as the model would see it untruncated (special tokens included)."""
    lengths: list[int] = []
    for start in range(0, len(texts), batch):
        encoded = tokenizer(list(texts[start : start + batch]), truncation=False, verbose=False)["input_ids"]
        lengths.extend(len(ids) for ids in encoded)
    return np.asarray(lengths, dtype=int)


def length_summary(lengths: np.ndarray, cut_at: int) -> dict[str, float]:
    """mean, p50, p95 and max tokens before truncation, and the share of texts longer than `cut_at`."""
    if lengths.size == 0:
        return {"count": 0}
    return {
        "count": int(lengths.size),
        "mean": round(float(lengths.mean()), 1),
        "p50": int(np.percentile(lengths, 50)),
        "p95": int(np.percentile(lengths, 95)),
        "max": int(lengths.max()),
        "share_cut": round(float((lengths > cut_at).mean()), 4),
    }


def covering_length(lengths: np.ndarray, coverage: float) -> int:
    """The fewest tokens that hold `coverage` of the texts whole."""
    if lengths.size == 0:
        return 0
    return int(np.sort(lengths)[max(math.ceil(coverage * lengths.size) - 1, 0)])


def check_fixed_length(setting: int | str, limits: ModelLimits, model_name: str) -> None:
    """A fixed max_seq_length above what the model's position embeddings take: one line, before any work."""
    if setting != "auto" and int(setting) > limits.positions:
        raise PipelineError(
            f"params.yaml: model.max_seq_length {setting} is more than '{model_name}' can read ({limits.positions} "
            f"tokens, its position embeddings); use at most {limits.positions}, or -S model.max_seq_length=auto "
            f"(the length that covers the data, up to the model's own {limits.auto_cap})"
        )


def resolve_length(
    setting: int | str,
    coverage: float,
    passages: np.ndarray,
    queries: np.ndarray,
    limits: ModelLimits,
    model_name: str,
) -> dict:
    """The max_seq_length this run uses, and how it was chosen (written to <lengths_file> and metrics/data.json).

    auto: the covering length of passages and queries, whichever is longer, rounded up to a multiple of 32 and
    capped at the model's own length. A fixed value above what the model's position embeddings take is an
    error (it would fail inside the model, or read positions it never learned)."""
    needed = max(covering_length(passages, coverage), covering_length(queries, coverage))
    auto = min(max(ROUND_TO, math.ceil(needed / ROUND_TO) * ROUND_TO), limits.auto_cap)
    check_fixed_length(setting, limits, model_name)
    length, how = (auto, "auto") if setting == "auto" else (int(setting), "fixed")
    return {
        "max_seq_length": length,
        "setting": how,
        "coverage": coverage,
        "needed_for_coverage": needed,
        "auto_length": auto,
        "model_trained_length": limits.trained,
        "model_position_limit": limits.positions,
        "passages": length_summary(passages, length),
        "queries": length_summary(queries, length),
    }
