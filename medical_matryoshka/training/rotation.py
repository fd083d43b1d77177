"""Model surgery: an orthogonal PCA layer on top of the base model, so truncations keep the most variance."""

from __future__ import annotations

import torch

from medical_matryoshka.core.dims import dim_key
from medical_matryoshka.core.models import encode


def add_pca_rotation(model, texts: list[str], dims: tuple[int, ...], batch_size: int) -> dict[str, float]:
    """Append an orthogonal linear layer whose rows are the principal axes of the model's embeddings of `texts`.

    A rotation leaves every full-dimension cosine similarity unchanged, so training starts from exactly the
    base model's full-dimension ranking, while truncating to the first d components now keeps the d directions
    of largest variance instead of d arbitrary coordinates (the dimensionality-reduction recipe of the
    sentence-transformers examples, without the reduction), then a Normalize. Fine-tuning trains the layer with
    the rest.
    Returns the share of the variance the first d components hold, for every Matryoshka dim.
    """
    from sentence_transformers.base.modules import Dense, Normalize

    options = {"batch_size": batch_size, "convert_to_tensor": True, "normalize_embeddings": True}
    emb = encode(model, texts, f"PCA rotation: training texts ({len(texts)})", **options)
    emb = emb.double().cpu()
    centered = emb - emb.mean(dim=0)
    values, vectors = torch.linalg.eigh(centered.T @ centered)
    order = torch.argsort(values, descending=True)
    rotation = vectors[:, order].T.contiguous().float()
    width = emb.shape[1]
    model.append(Dense(width, width, bias=False, activation_function=None, init_weight=rotation))
    model.append(Normalize())  # training moves the layer off orthogonal: keep unit-length outputs (dot = cosine)
    share = values[order].clamp(min=0).cumsum(0) / values.clamp(min=0).sum()
    return {f"pca_variance_{dim_key(d)}": round(float(share[d - 1]), 4) for d in dims}
