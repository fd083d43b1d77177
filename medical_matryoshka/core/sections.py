"""The sections of params.yaml: one frozen dataclass each, every knob a typed field with its rule beside it
(core/schema.py). The knobs' values and help text live in conf/."""

from __future__ import annotations

import dataclasses
import math
import typing
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, Self

from annotated_types import Ge, Gt, Le

from medical_matryoshka.core.errors import PipelineError
from medical_matryoshka.core.params import RECOMPOSE
from medical_matryoshka.core.schema import build, fail, knob, section, top_level

SCORE_FUNCTION = "cosine"  # retrieval ranks by cosine similarity, as the card's evaluator does
PRIMARY_CUTOFF = 10  # runs are compared by NDCG@10, as in the card (dvc.yaml's plot reads column ndcg_at_10)

Positive = Annotated[int, Gt(0)]
Cutoffs = tuple[Positive, ...]


@section
class ModelSource:
    """Where the base model comes from and how long its inputs are (all that `prepare` needs of it)."""

    KEY: ClassVar[str] = "model"
    name: str
    embedded_package: str | None
    install: str | None
    # auto (prepare resolves it from the data: data/lengths.py) or a fixed number of tokens
    max_seq_length: Positive | Literal["auto"] = knob(rule="auto or an integer > 0")
    length_coverage: float = knob(gt=0, le=1)  # auto: the share of passages (and queries) read whole

    def at(self, folder: str | Path) -> Self:
        """The same model config loading from a local model folder (a trained model, a test model)."""
        return dataclasses.replace(self, name=str(folder), embedded_package=None, install=None)


@section
class ModelConfig(ModelSource):
    """The base model and its Matryoshka dimensions, full dimension first."""

    dims: Cutoffs = knob(min_length=1)

    def __post_init__(self) -> None:
        if any(a <= b for a, b in zip(self.dims, self.dims[1:], strict=False)):
            fail(self, "dims", f"must be strictly descending (full dimension first), got {list(self.dims)}")


SplitBy = Literal["auto", "component", "query"]
SharedPassages = Literal["auto", "fail", "report"]
LeakedQueries = Literal["fail", "drop"]


@section
class DataConfig:
    KEY: ClassVar[str] = "data"
    source: str  # checked against the loaders registered in data/sources.py when the data is loaded
    path: str
    watch: str
    test_path: str | None
    test_watch: str
    files: dict[str, Any]
    columns: dict[str, Any]
    hf_split: str
    hf_revision: str | None
    csv_sep: Literal["auto", ",", ";", "\t", "|"]
    dev_fraction: float = knob(ge=0, lt=1)
    test_fraction: float = knob(gt=0, lt=1)
    max_docs: int | None = knob(gt=0)
    split_by: SplitBy
    shared_passages: SharedPassages
    leaked_queries: LeakedQueries
    boilerplate_max_words: int = knob(ge=0)

    def __post_init__(self) -> None:
        negative = self.columns.get("negative")
        if not {"anchor", "positive"} <= set(self.columns) <= {"anchor", "positive", "negative"}:
            fail(self, "columns", "must map 'anchor', 'positive' (and optionally 'negative') to your column names, "
                 f"got {self.columns}")  # fmt: skip
        if not (
            negative is None
            or isinstance(negative, str)
            or (isinstance(negative, list) and bool(negative) and all(isinstance(n, str) for n in negative))
        ):
            raise PipelineError(
                f"params.yaml: data.columns.negative must be null, a column name or a list of column names, "
                f"got {negative!r}"
            )
        if self.dev_fraction + self.test_fraction >= 1.0:
            fail(self, "dev_fraction", "+ data.test_fraction must leave claims to train on, got "
                 f"{self.dev_fraction} + {self.test_fraction}")  # fmt: skip

    @property
    def negative_columns(self) -> list[str]:
        """The columns holding given negatives (none by default)."""
        negative = self.columns.get("negative")
        return [] if negative is None else [negative] if isinstance(negative, str) else list(negative)


@section
class EvalConfig:
    KEY: ClassVar[str] = "eval"
    batch_size: int = knob(gt=0)
    accuracy_at_k: Cutoffs = knob(min_length=1)
    precision_recall_at_k: Cutoffs = knob(min_length=1)
    ndcg_at_k: Cutoffs = knob(min_length=1)
    mrr_at_k: Cutoffs = knob(min_length=1)
    map_at_k: Cutoffs = knob(min_length=1)

    def __post_init__(self) -> None:
        if max(self.ndcg_at_k) != PRIMARY_CUTOFF:
            fail(self, "ndcg_at_k", f"must have {PRIMARY_CUTOFF} as its largest cut-off, got {list(self.ndcg_at_k)}: "
                 f"NDCG@{PRIMARY_CUTOFF} is the primary metric (the best checkpoint, dvc.yaml's plot, the card's "
                 "table); add other cut-offs below it")  # fmt: skip

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


@section
class MiningConfig:
    KEY: ClassVar[str] = "mining"
    enabled: bool
    num_negatives: int = knob(ge=1)
    range_min: int = knob(ge=0)
    range_max: int
    absolute_margin: float | None = knob(ge=0)
    relative_margin: float | None = knob(ge=0)
    sampling_strategy: Literal["top", "random"]
    batch_size: int = knob(ge=1)

    def __post_init__(self) -> None:
        if self.range_min >= self.range_max:
            fail(self, "range_min", f"must be below mining.range_max (range_min < range_max), got "
                 f"{self.range_min}/{self.range_max}")  # fmt: skip
        if self.range_max - self.range_min < self.num_negatives:
            fail(self, "range_max", "- mining.range_min must leave room for num_negatives")


Loss = Literal["mnrl", "cached_mnrl"]
Precision = Literal["auto", "fp32", "bf16", "fp16"]
Direction = Literal["query_to_doc", "doc_to_query", "query_to_query", "doc_to_doc"]
HardnessMode = Literal["in_batch_negatives", "hard_negatives", "all_negatives"]
BatchSampler = Literal["relevance_aware", "no_duplicates", "batch_sampler"]
SelectBy = Literal["mean", "full", "smallest"]
Scheduler = Literal["cosine", "linear", "constant", "constant_with_warmup"]


@section
class TrainConfig:
    """The training profile (params.train) plus the top-level sweep knobs (`-S lr=3e-5`)."""

    KEY: ClassVar[str] = "train"
    profile: str
    seed: int = knob(top_level=True, ge=0, lt=2**32, rule="in [0, 2**32)")
    lr: float = knob(top_level=True, gt=0, lt=1, hint="(fine-tuning uses about 1e-5 to 1e-4)")
    epochs: float = knob(top_level=True, gt=0)
    batch_size: int = knob(top_level=True, ge=2, hint="(in-batch negatives)")
    grad_accum: int = knob(top_level=True, ge=1)
    warmup_ratio: float = knob(top_level=True, ge=0, lt=1)
    scheduler: Scheduler = knob(top_level=True)
    loss: Loss
    mini_batch_size: int = knob(ge=1)
    length_grouped_chunks: bool
    batch_sampler: BatchSampler
    evals_per_epoch: int = knob(ge=1)
    patience: int | None = knob(ge=1)
    select_by: SelectBy | Positive = knob(rule="mean, full, smallest or one of model.dims")
    logging_steps: int = knob(ge=1)
    matryoshka_weights: tuple[Annotated[float, Ge(0)], ...] | None
    directions: tuple[Direction, ...]
    scale: float = knob(gt=0)
    hardness_mode: HardnessMode | None
    hardness_strength: float = knob(ge=0)
    passage_pairs: bool
    pca_rotation: bool
    precision: Precision
    tf32: bool
    nproc: int = knob(ge=1)

    def __post_init__(self) -> None:
        if self.matryoshka_weights is not None and sum(self.matryoshka_weights) <= 0:
            fail(self, "matryoshka_weights", f"must not be all 0 (null: all 1), got {list(self.matryoshka_weights)}")
        if "query_to_doc" not in self.directions:
            fail(self, "directions", f"must include query_to_doc, got {list(self.directions)}")


# Embedding precisions of the size/quality frontier, and the bits each stores per dimension.
PRECISION_BITS = {"float32": 32, "int8": 8, "binary": 1, "binary_rescore": 1}


def bytes_per_vector(dim: int, precision: str) -> int:
    """What one stored vector costs: 4 bytes a component in float32, 1 in int8, 1 bit (packed) in binary."""
    return math.ceil(dim * PRECISION_BITS[precision] / 8)


@section
class FrontierConfig:
    """What `baseline` and `evaluate` score beside float32: quantized copies of the same embeddings.

    int8 is calibrated on the training split's embeddings; binary ranks by Hamming distance; binary_rescore
    re-ranks binary's top rescore_multiplier x top-k candidates by the float query (the stored vectors stay
    binary), as sentence-transformers' quantized semantic search does.
    """

    KEY: ClassVar[str] = "frontier"
    precisions: tuple[Literal[tuple(PRECISION_BITS)], ...] = knob(min_length=1)
    rescore_multiplier: int = knob(ge=1)

    def __post_init__(self) -> None:
        if len(set(self.precisions)) != len(self.precisions):
            fail(self, "precisions", f"lists a precision twice: {list(self.precisions)}")


ExportRuntime = Literal["openvino", "onnx"]
ExportWeights = Literal["float", "int8"]
EXPORT_RUNTIMES = typing.get_args(ExportRuntime)
EXPORT_WEIGHTS = typing.get_args(ExportWeights)


@section
class ExportConfig:
    """The `export` stage: the fine-tuned model for a CPU runtime, checked against torch before it is kept.

    The stage fails when, on verify_texts real test texts (half queries, half passages), the exported vectors
    are further than max_cosine_distance[weights] (1 - cos) from torch float32's, alone or batched or padded to
    31/32/33 tokens, or when its test NDCG@10 at any dim (float32 vectors) is more than max_ndcg_loss below
    torch's (metrics/frontier.json).
    """

    KEY: ClassVar[str] = "export"
    runtime: ExportRuntime
    weights: ExportWeights
    inference_precision: Literal["auto", "bf16", "f32"]
    verify_texts: int = knob(ge=2)
    max_cosine_distance: dict[ExportWeights, Annotated[float, Gt(0), Le(2)]]
    max_ndcg_loss: float = knob(ge=0, le=1)

    def __post_init__(self) -> None:
        if sorted(self.max_cosine_distance) != sorted(EXPORT_WEIGHTS):
            fail(self, "max_cosine_distance", f"must map {' and '.join(EXPORT_WEIGHTS)} to a number in (0, 2], "
                 f"got {self.max_cosine_distance}")  # fmt: skip

    @property
    def tolerance(self) -> float:
        return float(self.max_cosine_distance[self.weights])


@section
class PathsConfig:
    """Where stages read and write; dvc.yaml interpolates the same keys, so paths live in one place."""

    KEY: ClassVar[str] = "paths"
    raw: str
    prepared: str
    train_file: str
    dev_file: str
    test_file: str
    lengths_file: str
    data_metrics: str
    baseline_metrics: str
    baseline_queries: str
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

    def __post_init__(self) -> None:
        for name in ("train_file", "dev_file", "test_file", "lengths_file"):
            if not getattr(self, name) or Path(getattr(self, name)).name != getattr(self, name):
                fail(self, name, f"must be a file name inside the folder (no '/'), got {getattr(self, name)!r}")

    @property
    def prepared_train(self) -> Path:
        return Path(self.prepared) / self.train_file

    @property
    def prepared_dev(self) -> Path:
        return Path(self.prepared) / self.dev_file

    @property
    def prepared_test(self) -> Path:
        return Path(self.prepared) / self.test_file

    @property
    def prepared_lengths(self) -> Path:
        return Path(self.prepared) / self.lengths_file

    @property
    def pairs_train(self) -> Path:
        return Path(self.pairs) / self.train_file


@section
class TrackingConfig:
    KEY: ClassVar[str] = "tracking"
    experiment: str = knob(min_length=1)
    unreachable: Literal["fail", "skip"]


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


def top_level_knobs() -> tuple[str, ...]:
    """The knobs read from the top of params.yaml (`-S lr=3e-5`), whichever section declares them."""
    return tuple(name for cls in SECTIONS.values() for name in top_level(cls))


def section_data(cls: type, params: dict[str, Any], key: str | None = None) -> dict[str, Any]:
    """What section `cls` is built from: params[key] plus its top-level knobs, where params holds them."""
    key = key or cls.KEY
    if not isinstance(params.get(key), dict):
        raise PipelineError(f"params.yaml: section '{key}' is missing; {RECOMPOSE}")
    return {**params[key], **{name: params[name] for name in top_level(cls) if name in params}}


def read_section(cls: type, params: dict[str, Any], key: str | None = None) -> Any:
    """Section `cls` of params (params[cls.KEY] unless `key`), with its top-level knobs, checked."""
    return build(cls, section_data(cls, params, key))


def check_known_keys(params: dict[str, Any]) -> None:
    """Every key of params.yaml is one the pipeline reads: a typo or `-S +lrr=1` would otherwise be ignored."""
    known = set(SECTIONS) | set(top_level_knobs())
    fix = f"remove it from conf/ or from the -S overrides; {RECOMPOSE}"
    for key, value in params.items():
        if key not in known:
            raise PipelineError(f"params.yaml: unknown key '{key}' (known: {', '.join(sorted(known))}); {fix}")
        if key in SECTIONS and isinstance(value, dict):
            cls = SECTIONS[key]
            fields = {f.name for f in dataclasses.fields(cls)} - set(top_level(cls))
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
    return {key: read_section(cls, params) for key, cls in SECTIONS.items()}
