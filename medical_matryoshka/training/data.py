"""What the trainer trains on: the mined pairs (checked), optional passage pairs, the rotation's texts."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd

from medical_matryoshka.core.errors import PipelineError, require_input
from medical_matryoshka.core.sections import PathsConfig, TrainConfig
from medical_matryoshka.training.batches import RelevanceGraph


def check_train_pairs(pairs: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """Reject what would break training; drop exact duplicate pairs (reported), before any training starts.

    Anchors repeated with different positives are expected (one claim, several passages): the batch sampler
    keeps them out of each other's batches, where they would be false negatives.
    """
    if list(pairs.columns[:2]) != ["anchor", "positive"]:
        raise PipelineError(f"training data must start with columns anchor, positive; got {list(pairs.columns)}")
    text = pairs.fillna("").astype(str)
    empty = int((text.apply(lambda col: col.str.strip()) == "").any(axis=1).sum())
    if empty:
        raise PipelineError(f"{empty} training row(s) have an empty text; fix the data source and rerun prepare")
    deduped = pairs.drop_duplicates().reset_index(drop=True)
    return deduped, len(pairs) - len(deduped)


def fitting_batch(cfg: TrainConfig, pairs: int) -> TrainConfig:
    """`cfg` with a batch no larger than the training pairs: a batch of 128 over 35 pairs would be one short
    batch an epoch anyway; said in the terminal and metrics/train.json (batch_size_used)."""
    if cfg.batch_size <= pairs:
        return cfg
    if pairs < 2:
        raise PipelineError(
            f"{pairs} training pair(s): in-batch negatives need at least 2; use more data (data.test_fraction, "
            "data.dev_fraction and data.max_docs decide how many claims train)"
        )
    return dataclasses.replace(cfg, batch_size=pairs)


def passage_pairs(prepared: pd.DataFrame, seed: int) -> pd.DataFrame:
    """One (passage, other passage of the same abstract) row per training document with two or more passages.

    The test counts every passage of a claim's abstract as relevant; these rows pull an abstract's passages
    together. One row per document, so no batch holds two passages of one abstract as each other's negatives.
    """
    rng = np.random.default_rng(seed)
    rows = []
    for _, group in prepared.groupby("doc_id", sort=True):
        texts = list(dict.fromkeys(group["positive"]))
        if len(texts) >= 2:
            i, j = rng.choice(len(texts), size=2, replace=False)
            rows.append((texts[i], texts[j]))
    return pd.DataFrame(rows, columns=["anchor", "positive"])


def training_texts(prepared: pd.DataFrame) -> list[str]:
    """The training split's distinct claims and passages, in first-seen order: what the PCA rotation is fitted on."""
    return list(dict.fromkeys([*prepared["anchor"], *prepared["positive"]]))


@dataclasses.dataclass(frozen=True)
class TrainingData:
    """The data sets the trainer batches (name -> rows), and what the optional rotation is fitted on."""

    datasets: dict[str, pd.DataFrame]
    duplicates_dropped: int
    pairs_file: Path  # the mined pairs: part of the checkpoint key
    rotation_texts: list[str]
    graph: RelevanceGraph  # which training passages are relevant to which claims (relevance-aware batches)

    @property
    def pairs(self) -> pd.DataFrame:
        return self.datasets["claims"]

    @property
    def total_rows(self) -> int:
        return sum(map(len, self.datasets.values()))


def read_training_data(paths: PathsConfig, cfg: TrainConfig) -> TrainingData:
    """The mined pairs, the relevance graph of the training split, plus passage pairs and the rotation's texts
    when the profile asks for them."""
    pairs_file = require_input(paths.pairs_train, "mine")
    pairs, dropped = check_train_pairs(pd.read_parquet(pairs_file))
    datasets = {"claims": pairs}
    prepared = pd.read_parquet(require_input(paths.prepared_train, "prepare"))  # (anchor, positive, doc_id)
    if cfg.passage_pairs:
        datasets["passages"] = passage_pairs(prepared, cfg.seed)
    texts = training_texts(prepared) if cfg.pca_rotation else []
    return TrainingData(datasets, dropped, pairs_file, texts, RelevanceGraph.of_pairs(prepared))
