"""The sections of params.yaml as frozen dataclasses; `validate` turns a bad value into one clear line."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any, Self

from medical_matryoshka.core.errors import PipelineError
from medical_matryoshka.core.params import RECOMPOSE, build

SCORE_FUNCTION = "cosine"  # retrieval ranks by cosine similarity, as the card's evaluator does
PRIMARY_CUTOFF = 10  # runs are compared by NDCG@10, as in the card (dvc.yaml's plot reads column ndcg_at_10)


def _require(checks: list[tuple[bool, str]]) -> None:
    """Raise the first failed check's message."""
    for ok, message in checks:
        if not ok:
            raise PipelineError(f"params.yaml: {message}")


def _one_of(name: str, value: Any, choices: tuple[str, ...]) -> tuple[bool, str]:
    return value in choices, f"{name} must be one of {', '.join(choices)}, got {value!r}"


@dataclasses.dataclass(frozen=True)
class ModelSource:
    """Where the base model comes from and how long its inputs are (all that `prepare` needs of it)."""

    name: str
    embedded_package: str | None  # a Python package holding the weights (the default model)
    install: str | None  # an offline copy installed by `python -m commands.install_model KEY` (model=mpnet)
    max_seq_length: int

    def validate(self, key: str) -> None:
        _require([(self.max_seq_length > 0, f"{key}max_seq_length must be > 0, got {self.max_seq_length}")])

    def at(self, folder: str | Path) -> Self:
        """The same model config loading from a local model folder (a trained model, a test model)."""
        return dataclasses.replace(self, name=str(folder), embedded_package=None, install=None)


@dataclasses.dataclass(frozen=True)
class ModelConfig(ModelSource):
    """The base model and its Matryoshka dimensions, full dimension first."""

    dims: tuple[int, ...]

    def validate(self, key: str) -> None:
        super().validate(key)
        dims = list(self.dims)
        _require(
            [
                (bool(dims) and all(d > 0 for d in dims), f"{key}dims must be positive integers, got {dims}"),
                (
                    all(a > b for a, b in zip(dims, dims[1:], strict=False)),
                    f"{key}dims must be strictly descending (full dimension first), got {dims}",
                ),
            ]
        )


SPLIT_BY = ("auto", "component", "query")
SHARED_PASSAGES = ("auto", "fail", "report")
LEAKED_QUERIES = ("fail", "drop")


@dataclasses.dataclass(frozen=True)
class DataConfig:
    source: str
    path: str
    watch: str  # what DVC hashes for prepare (dvc.yaml): the data itself, so a change reruns the pipeline
    files: dict[str, Any]
    columns: dict[str, Any]
    hf_split: str
    hf_revision: str | None
    dev_fraction: float
    test_fraction: float
    max_docs: int | None
    split_by: str
    shared_passages: str
    leaked_queries: str
    boilerplate_max_words: int

    def validate(self, key: str) -> None:
        # `source` is checked against the loaders registered in data/sources.py when the data is loaded
        negative = self.columns.get("negative")
        _require(
            [
                (self.boilerplate_max_words >= 0, f"{key}boilerplate_max_words must be >= 0"),
                (
                    {"anchor", "positive"} <= set(self.columns) <= {"anchor", "positive", "negative"},
                    f"{key}columns must map 'anchor', 'positive' (and optionally 'negative') to your column names, "
                    f"got {self.columns}",
                ),
                (
                    negative is None
                    or isinstance(negative, str)
                    or (isinstance(negative, list) and bool(negative) and all(isinstance(n, str) for n in negative)),
                    f"{key}columns.negative must be null, a column name or a list of column names, got {negative!r}",
                ),
                (0.0 <= self.dev_fraction < 1.0, f"{key}dev_fraction must be in [0, 1), got {self.dev_fraction}"),
                (0.0 < self.test_fraction < 1.0, f"{key}test_fraction must be in (0, 1), got {self.test_fraction}"),
                (
                    self.dev_fraction + self.test_fraction < 1.0,
                    f"{key}dev_fraction + test_fraction must leave documents to train on, got "
                    f"{self.dev_fraction} + {self.test_fraction}",
                ),
                (
                    self.max_docs is None or self.max_docs > 0,
                    f"{key}max_docs must be a positive integer or null, got {self.max_docs}",
                ),
                _one_of(f"{key}split_by", self.split_by, SPLIT_BY),
                _one_of(f"{key}shared_passages", self.shared_passages, SHARED_PASSAGES),
                _one_of(f"{key}leaked_queries", self.leaked_queries, LEAKED_QUERIES),
            ]
        )

    @property
    def negative_columns(self) -> list[str]:
        """The columns holding given negatives (none by default)."""
        negative = self.columns.get("negative")
        return [] if negative is None else [negative] if isinstance(negative, str) else list(negative)


@dataclasses.dataclass(frozen=True)
class EvalConfig:
    batch_size: int
    accuracy_at_k: tuple[int, ...]
    precision_recall_at_k: tuple[int, ...]
    ndcg_at_k: tuple[int, ...]
    mrr_at_k: tuple[int, ...]
    map_at_k: tuple[int, ...]

    def validate(self, key: str) -> None:
        _require([(self.batch_size > 0, f"{key}batch_size must be > 0, got {self.batch_size}")])
        for name in ("accuracy_at_k", "precision_recall_at_k", "ndcg_at_k", "mrr_at_k", "map_at_k"):
            ks = getattr(self, name)
            _require([(bool(ks) and all(k > 0 for k in ks), f"{key}{name} must be a non-empty list of positive ints")])
        _require(
            [
                (
                    max(self.ndcg_at_k) == PRIMARY_CUTOFF,
                    f"{key}ndcg_at_k must have {PRIMARY_CUTOFF} as its largest cut-off, got {list(self.ndcg_at_k)}: "
                    f"NDCG@{PRIMARY_CUTOFF} is the primary metric (the best checkpoint, dvc.yaml's plot, the card's "
                    f"table); add other cut-offs below it",
                )
            ]
        )

    @property
    def primary_metric(self) -> str:
        """The metric runs are compared by: NDCG at the largest cut-off, InformationRetrievalEvaluator's rule."""
        return f"{SCORE_FUNCTION}_{self.primary_measure}"

    @property
    def primary_measure(self) -> str:
        """The primary metric without its score function (ndcg@10): how train.json and the plot name it."""
        return f"ndcg@{max(self.ndcg_at_k)}"

    @property
    def top_k(self) -> int:
        """How many hits per query the metrics need."""
        return max(
            max(ks)
            for ks in (self.accuracy_at_k, self.precision_recall_at_k, self.ndcg_at_k, self.mrr_at_k, self.map_at_k)
        )


@dataclasses.dataclass(frozen=True)
class MiningConfig:
    enabled: bool
    num_negatives: int
    range_min: int
    range_max: int
    absolute_margin: float | None
    relative_margin: float | None
    sampling_strategy: str
    batch_size: int

    def validate(self, key: str) -> None:
        margins = {"absolute_margin": self.absolute_margin, "relative_margin": self.relative_margin}
        _require(
            [
                (self.num_negatives >= 1, f"{key}num_negatives must be >= 1, got {self.num_negatives}"),
                (
                    0 <= self.range_min < self.range_max,
                    f"{key}range_min/range_max must satisfy 0 <= range_min < range_max, "
                    f"got {self.range_min}/{self.range_max}",
                ),
                (
                    self.range_max - self.range_min >= self.num_negatives,
                    f"{key}range_max - range_min must leave room for num_negatives",
                ),
                (self.sampling_strategy in ("top", "random"), f"{key}sampling_strategy must be top or random"),
                *(
                    (value is None or value >= 0, f"{key}{name} must be >= 0 or null, got {value}")
                    for name, value in margins.items()
                ),
                (self.batch_size >= 1, f"{key}batch_size must be >= 1, got {self.batch_size}"),
            ]
        )


LOSSES = ("mnrl", "cached_mnrl")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
DIRECTIONS = ("query_to_doc", "doc_to_query", "query_to_query", "doc_to_doc")
HARDNESS_MODES = ("in_batch_negatives", "hard_negatives", "all_negatives")
BATCH_SAMPLERS = ("no_duplicates", "batch_sampler")
SCHEDULERS = ("cosine", "linear", "constant", "constant_with_warmup")
# Top-level sweep knobs (dvc exp run -S lr=3e-5) that the training stage reads beside params.train.
TRAIN_KNOBS = ("seed", "lr", "epochs", "batch_size", "grad_accum", "warmup_ratio", "scheduler")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """The training profile (params.train) plus the top-level sweep knobs."""

    profile: str
    seed: int
    lr: float
    epochs: float
    batch_size: int
    grad_accum: int
    warmup_ratio: float
    scheduler: str
    loss: str
    mini_batch_size: int
    length_grouped_chunks: bool
    batch_sampler: str
    logging_steps: int
    matryoshka_weights: tuple[float, ...] | None
    directions: tuple[str, ...]
    scale: float
    hardness_mode: str | None
    hardness_strength: float
    passage_pairs: bool
    pca_rotation: bool
    precision: str
    tf32: bool
    nproc: int

    def validate(self, key: str) -> None:
        directions_ok = "query_to_doc" in self.directions and set(self.directions) <= set(DIRECTIONS)
        _require(
            [
                (0 <= self.seed < 2**32, f"seed must be in [0, 2**32), got {self.seed}"),
                (0 < self.lr < 1, f"lr must be in (0, 1) (fine-tuning uses about 1e-5 to 1e-4), got {self.lr:g}"),
                (self.epochs > 0, f"epochs must be > 0, got {self.epochs}"),
                (self.batch_size >= 2, f"batch_size must be >= 2 (in-batch negatives), got {self.batch_size}"),
                (self.grad_accum >= 1, f"grad_accum must be >= 1, got {self.grad_accum}"),
                (0 <= self.warmup_ratio < 1, f"warmup_ratio must be in [0, 1), got {self.warmup_ratio}"),
                _one_of("scheduler", self.scheduler, SCHEDULERS),
                _one_of("train.loss", self.loss, LOSSES),
                (self.mini_batch_size >= 1, f"train.mini_batch_size must be >= 1, got {self.mini_batch_size}"),
                _one_of("train.batch_sampler", self.batch_sampler, BATCH_SAMPLERS),
                (self.logging_steps >= 1, f"train.logging_steps must be >= 1, got {self.logging_steps}"),
                _one_of("train.precision", self.precision, PRECISIONS),
                (self.scale > 0, f"train.scale must be > 0, got {self.scale}"),
                (
                    self.matryoshka_weights is None
                    or (min(self.matryoshka_weights) >= 0 and sum(self.matryoshka_weights) > 0),
                    f"train.matryoshka_weights must be >= 0, not all 0 (null: all 1), got {self.matryoshka_weights}",
                ),
                (
                    self.hardness_mode is None or self.hardness_mode in HARDNESS_MODES,
                    f"train.hardness_mode must be null or one of {', '.join(HARDNESS_MODES)}, "
                    f"got {self.hardness_mode!r}",
                ),
                (self.hardness_strength >= 0, f"train.hardness_strength must be >= 0, got {self.hardness_strength}"),
                (self.nproc >= 1, f"train.nproc must be >= 1, got {self.nproc}"),
                (
                    directions_ok,
                    f"train.directions must include query_to_doc and come from {', '.join(DIRECTIONS)}, "
                    f"got {list(self.directions)}",
                ),
            ]
        )


def train_config(params: dict[str, Any]) -> TrainConfig:
    """The training profile (params.train) merged with the top-level sweep knobs."""
    if not isinstance(params.get("train"), dict):
        raise PipelineError(f"params.yaml: section 'train' is missing; {RECOMPOSE}")
    return build(TrainConfig, {**params["train"], **{k: params.get(k) for k in TRAIN_KNOBS if k in params}})


# Embedding precisions of the size/quality frontier, and the bits each stores per dimension.
PRECISION_BITS = {"float32": 32, "int8": 8, "binary": 1, "binary_rescore": 1}


def bytes_per_vector(dim: int, precision: str) -> int:
    """What one stored vector costs: 4 bytes a component in float32, 1 in int8, 1 bit (packed) in binary."""
    return math.ceil(dim * PRECISION_BITS[precision] / 8)


@dataclasses.dataclass(frozen=True)
class FrontierConfig:
    """What `baseline` and `evaluate` score beside float32: quantized copies of the same embeddings.

    int8 is calibrated on the training split's embeddings; binary ranks by Hamming distance; binary_rescore
    re-ranks binary's top rescore_multiplier x top-k candidates by the float query (the stored vectors stay
    binary), as sentence-transformers' quantized semantic search does.
    """

    precisions: tuple[str, ...]
    rescore_multiplier: int

    def validate(self, key: str) -> None:
        known = tuple(PRECISION_BITS)
        unknown = [p for p in self.precisions if p not in known]
        _require(
            [
                (bool(self.precisions), f"{key}precisions must list at least one of {', '.join(known)}"),
                (not unknown, f"{key}precisions: unknown precision {unknown[:1]} (known: {', '.join(known)})"),
                (
                    len(set(self.precisions)) == len(self.precisions),
                    f"{key}precisions lists a precision twice: {list(self.precisions)}",
                ),
                (self.rescore_multiplier >= 1, f"{key}rescore_multiplier must be >= 1, got {self.rescore_multiplier}"),
            ]
        )


EXPORT_RUNTIMES = ("openvino", "onnx")
EXPORT_WEIGHTS = ("float", "int8")
EXPORT_PRECISIONS = ("auto", "bf16", "f32")


@dataclasses.dataclass(frozen=True)
class ExportConfig:
    """The `export` stage: the fine-tuned model for a CPU runtime, checked against torch before it is kept.

    runtime: openvino | onnx (onnxruntime); weights: float | int8 (weights only, activations float);
    inference_precision (OpenVINO): auto = the CPU's own (bf16 with AMX / AVX-512 BF16, else f32) | bf16 | f32.
    The stage fails when, on verify_texts real test texts (half queries, half passages), the exported vectors
    are further than max_cosine_distance[weights] (1 - cos) from torch float32's, alone or batched or padded to
    31/32/33 tokens, or when its test NDCG@10 at any dim (float32 vectors) is more than max_ndcg_loss below
    torch's (metrics/frontier.json).
    """

    runtime: str
    weights: str
    inference_precision: str
    verify_texts: int
    max_cosine_distance: dict[str, float]
    max_ndcg_loss: float

    def validate(self, key: str) -> None:
        limits = self.max_cosine_distance
        _require(
            [
                _one_of(f"{key}runtime", self.runtime, EXPORT_RUNTIMES),
                _one_of(f"{key}weights", self.weights, EXPORT_WEIGHTS),
                _one_of(f"{key}inference_precision", self.inference_precision, EXPORT_PRECISIONS),
                (self.verify_texts >= 2, f"{key}verify_texts must be >= 2, got {self.verify_texts}"),
                (
                    sorted(limits) == sorted(EXPORT_WEIGHTS)
                    and all(isinstance(v, int | float) and 0 < v <= 2 for v in limits.values()),
                    f"{key}max_cosine_distance must map {' and '.join(EXPORT_WEIGHTS)} to a number in (0, 2], "
                    f"got {limits}",
                ),
                (0 <= self.max_ndcg_loss <= 1, f"{key}max_ndcg_loss must be in [0, 1], got {self.max_ndcg_loss}"),
            ]
        )

    @property
    def tolerance(self) -> float:
        return float(self.max_cosine_distance[self.weights])


@dataclasses.dataclass(frozen=True)
class PathsConfig:
    """Where stages read and write; dvc.yaml interpolates the same keys, so paths live in one place."""

    raw: str
    prepared: str
    data_metrics: str
    baseline_metrics: str
    pairs: str
    mining_metrics: str
    model: str
    train_metrics: str
    checkpoints: str
    eval_metrics: str
    summary_metrics: str
    baseline_frontier: str
    frontier_metrics: str
    card: str
    plots: str
    exported: str
    export_metrics: str

    def validate(self, key: str) -> None:
        pass


@dataclasses.dataclass(frozen=True)
class TrackingConfig:
    experiment: str
    unreachable: str  # a remote tracking server that does not answer: fail (stop at once) | skip (run untracked)

    def validate(self, key: str) -> None:
        _require(
            [
                (bool(self.experiment.strip()), f"{key}experiment must not be empty"),
                (
                    self.unreachable in ("fail", "skip"),
                    f"{key}unreachable must be fail or skip, got {self.unreachable!r}",
                ),
            ]
        )


# params.yaml's sections and the dataclass each is read as.
SECTIONS = {
    "data": DataConfig,
    "eval": EvalConfig,
    "export": ExportConfig,
    "frontier": FrontierConfig,
    "mining": MiningConfig,
    "model": ModelConfig,
    "train": TrainConfig,
    "paths": PathsConfig,
    "tracking": TrackingConfig,
}


def check_known_keys(params: dict[str, Any]) -> None:
    """Every key of params.yaml is one the pipeline reads: a typo or `-S +lrr=1` would otherwise be ignored."""
    known = set(SECTIONS) | set(TRAIN_KNOBS)
    fix = f"remove it from conf/ or from the -S overrides; {RECOMPOSE}"
    for key, value in params.items():
        if key not in known:
            raise PipelineError(f"params.yaml: unknown key '{key}' (known: {', '.join(sorted(known))}); {fix}")
        if key in SECTIONS and isinstance(value, dict):
            fields = {f.name for f in dataclasses.fields(SECTIONS[key])} - (
                set(TRAIN_KNOBS) if key == "train" else set()
            )
            unknown = sorted(set(value) - fields)
            if unknown:
                raise PipelineError(
                    f"params.yaml: unknown key '{key}.{unknown[0]}' (known: {', '.join(sorted(fields))}); {fix}"
                )


def check_params(params: dict[str, Any]) -> dict[str, Any]:
    """All of params.yaml, whichever stage reads it: no unknown key, every section valid; returns the sections
    as their dataclasses. A stage that reruns thus stops on a bad knob it does not read itself (`lr` at
    `prepare` after `-S lr=1e10 -S seed=1`)."""
    check_known_keys(params)
    sections = {}
    for key, cls in SECTIONS.items():
        if key == "train":
            sections[key] = train_config(params)
        elif not isinstance(params.get(key), dict):
            raise PipelineError(f"params.yaml: section '{key}' is missing; {RECOMPOSE}")
        else:
            sections[key] = build(cls, params[key], f"{key}.")
    return sections
