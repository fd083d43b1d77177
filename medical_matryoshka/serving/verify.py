"""Does the exported model encode as the torch model does? Measured, on real texts and on the inputs that broke.

- agreement: the largest cosine distance (1 - cos) between the exported encoder's unit vectors and
  `SentenceTransformer.encode(..., normalize_embeddings=True)` in float32, on a sample of real texts;
- batch independence: each text encoded alone against the same text in a batch (padding must not matter);
- padded lengths: texts of exactly 31, 32 and 33 tokens, alone and as the longest of a batch that pads shorter
  texts to them (an OpenVINO 2026.4 int8 model compiled for bf16 was seen to corrupt inputs padded to 32).
"""

from __future__ import annotations

import numpy as np

PADDED_LENGTHS = (31, 32, 33)
FILLER = (
    "Low-dose aspirin lowered the rate of recurrent myocardial infarction in older adults with diabetes, "
    "while gastrointestinal bleeding was more frequent than with placebo over five years of follow-up."
)
SHORT = ["Aspirin and stroke.", "Metformin lowers HbA1c."]


def cosine_distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """1 - cos of matching rows (both unit rows), rounding below 0 taken as 0."""
    cos = np.sum(np.asarray(a, dtype=np.float64) * np.asarray(b, dtype=np.float64), axis=1)
    return np.maximum(1.0 - cos, 0.0)


def text_of_tokens(tokenizer, n: int) -> str:
    """A medical text that tokenizes to exactly n tokens, the special tokens included."""
    special = len(tokenizer("")["input_ids"])
    ids = tokenizer(" ".join([FILLER] * (1 + n // 10)), add_special_tokens=False, verbose=False)["input_ids"]
    for cut in range(n - special, 0, -1):  # decode -> encode may merge pieces: take the longest that fits
        text = tokenizer.decode(ids[:cut])
        if len(tokenizer(text)["input_ids"]) == n:
            return text
    raise ValueError(f"no text of exactly {n} tokens")


def padded_batches(tokenizer, max_seq_length: int) -> list[list[str]]:
    """For each padded length that fits: the text alone, and as the longest of a batch of shorter texts."""
    batches = []
    for n in PADDED_LENGTHS:
        if n <= max_seq_length:
            text = text_of_tokens(tokenizer, n)
            batches += [[text], [*SHORT, text]]
    return batches


def agreement(reference, encoder, texts: list[str], batch_size: int) -> dict[str, float]:
    """The three measures (module docstring) of `encoder` against the torch `reference` on `texts`."""
    ref = reference.encode(texts, batch_size=batch_size, normalize_embeddings=True, convert_to_numpy=True)
    batched = encoder.encode(texts, batch_size=batch_size)
    alone = np.stack([encoder.encode([text])[0] for text in texts])
    padded = 0.0
    for batch in padded_batches(encoder.tokenizer, encoder.max_seq_length):
        expected = reference.encode(batch, normalize_embeddings=True, convert_to_numpy=True)
        padded = max(padded, float(cosine_distance(encoder.encode(batch, batch_size=len(batch)), expected).max()))
    return {
        "max_cosine_distance": float(cosine_distance(batched, ref).max()),
        "alone_vs_batched_max_cosine_distance": float(cosine_distance(alone, batched).max()),
        "padded_max_cosine_distance": padded,
        "texts": len(texts),
    }
