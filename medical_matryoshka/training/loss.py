"""The training loss: MatryoshkaLoss over (Cached)MultipleNegativesRankingLoss at every configured dimension."""

from __future__ import annotations

from medical_matryoshka.config.sections import TrainConfig
from medical_matryoshka.errors import PipelineError
from medical_matryoshka.training.runtime import world_size


def build_loss(model, cfg: TrainConfig, dims: tuple[int, ...]):
    """MatryoshkaLoss over the configured ranking loss, with the profile's weights per dimension.

    The ranking-loss options (directions, scale, hardness) are passed to the library as they are. Under DDP
    every process's batch is gathered, so each query sees the whole global batch as negatives, as in a
    single-process run with nproc x batch_size.
    """
    from sentence_transformers.sentence_transformer.losses import (
        CachedMultipleNegativesRankingLoss,
        MatryoshkaLoss,
        MultipleNegativesRankingLoss,
    )

    common = {
        "scale": cfg.scale,
        "directions": cfg.directions,
        "hardness_mode": cfg.hardness_mode,
        "hardness_strength": cfg.hardness_strength,
        "gather_across_devices": world_size() > 1,
    }
    if cfg.loss == "cached_mnrl":
        inner = CachedMultipleNegativesRankingLoss(model, mini_batch_size=cfg.mini_batch_size, **common)
    else:
        inner = MultipleNegativesRankingLoss(model, **common)
    weights = list(cfg.matryoshka_weights) if cfg.matryoshka_weights else None
    if weights is not None and len(weights) != len(dims):
        raise PipelineError(f"train.matryoshka_weights has {len(weights)} values for {len(dims)} dims {list(dims)}")
    return MatryoshkaLoss(model, inner, matryoshka_dims=list(dims), matryoshka_weights=weights)
