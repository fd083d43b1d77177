"""Test stand-ins for a model."""

from __future__ import annotations

import torch


class FixedEmbeddings:
    """A stand-in model whose embeddings are given, counting how often it is asked to encode."""

    def __init__(self, queries: dict[str, list[float]], corpus: dict[str, list[float]]):
        self.vectors = {**queries, **corpus}
        self.texts = {text: text for text in self.vectors}
        self.calls = 0

    def _encode(self, texts, **kwargs):
        self.calls += 1
        return torch.tensor([self.vectors[t] for t in texts])

    encode_query = encode_document = _encode
