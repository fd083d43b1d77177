"""The training loss: MatryoshkaLoss over (Cached)MultipleNegativesRankingLoss at every configured dimension."""

from __future__ import annotations

import torch
from sentence_transformers.sentence_transformer.losses import (
    CachedMultipleNegativesRankingLoss,
    MatryoshkaLoss,
    MultipleNegativesRankingLoss,
)

from medical_matryoshka.core.errors import PipelineError
from medical_matryoshka.core.sections import TrainConfig
from medical_matryoshka.training.runtime import world_size


class LengthGroupedCachedMNRL(CachedMultipleNegativesRankingLoss):
    """CachedMultipleNegativesRankingLoss whose embedding chunks hold texts of similar length.

    The stock loss embeds each column in chunks of mini_batch_size rows in batch order, each padded to its
    longest text. Here each column's rows are ordered by token count before chunking (so a chunk's padding
    is small) and the embeddings are put back in batch order before the loss: the batch, its in-batch
    negatives and the scores are the same, so the loss and its gradient are the same up to rounding; only
    the dropout masks, drawn per chunk, fall on other rows.
    """

    def forward(self, sentence_features, labels=None):
        features, self._restore = [], []
        for feature in sentence_features:
            lengths = feature["attention_mask"].sum(dim=1)
            order = torch.sort(lengths, descending=True, stable=True).indices
            rows = len(lengths)
            features.append(
                {k: v[order] if torch.is_tensor(v) and v.ndim and v.shape[0] == rows else v for k, v in feature.items()}
            )
            self._restore.append(torch.argsort(order))
        return super().forward(features, labels)

    def calculate_loss(self, reps, labels=None, *, with_backward: bool = False):
        # batch order again; under with_backward the stock loss back-propagates chunk by chunk, so it gets
        # leaves and their gradients are pushed through the reordering once afterwards
        restored = [torch.cat(column)[order] for column, order in zip(reps, self._restore, strict=True)]
        if not with_backward:
            return super().calculate_loss([[r] for r in restored], labels)
        leaves = [r.detach().requires_grad_() for r in restored]
        loss = super().calculate_loss([[leaf] for leaf in leaves], labels, with_backward=True)
        for r, leaf in zip(restored, leaves, strict=True):
            r.backward(leaf.grad)
        return loss


def build_loss(model, cfg: TrainConfig, dims: tuple[int, ...]):
    """MatryoshkaLoss over the configured ranking loss, with the profile's weights per dimension.

    The ranking-loss options (directions, scale, hardness) are passed to the library as they are. Under DDP
    every process's batch is gathered, so each query sees the whole global batch as negatives, as in a
    single-process run with nproc x batch_size.
    """
    common = {
        "scale": cfg.scale,
        "directions": cfg.directions,
        "hardness_mode": cfg.hardness_mode,
        "hardness_strength": cfg.hardness_strength,
        "gather_across_devices": world_size() > 1,
    }
    if cfg.loss == "cached_mnrl":
        cls = LengthGroupedCachedMNRL if cfg.length_grouped_chunks else CachedMultipleNegativesRankingLoss
        inner = cls(model, mini_batch_size=cfg.mini_batch_size, **common)
    else:
        inner = MultipleNegativesRankingLoss(model, **common)
    weights = check_weights(cfg, dims)
    return MatryoshkaLoss(model, inner, matryoshka_dims=list(dims), matryoshka_weights=weights)


def check_weights(cfg: TrainConfig, dims: tuple[int, ...]) -> list[float] | None:
    """One Matryoshka weight per model.dims entry (None: all 1); checked before the model is loaded."""
    weights = list(cfg.matryoshka_weights) if cfg.matryoshka_weights else None
    if weights is not None and len(weights) != len(dims):
        raise PipelineError(
            f"train.matryoshka_weights has {len(weights)} values for {len(dims)} dims {list(dims)}; give one per "
            "dim (-S 'train.matryoshka_weights=[...]') or null for all 1"
        )
    return weights
