"""Typed, validated views of params.yaml: each stage reads only the sections it declares in dvc.yaml."""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any

import yaml

from stages.errors import PipelineError

PARAMS_FILE = "params.yaml"
SOURCES = ("pubmedqa", "hf", "file")


def load_params(path: str | Path = PARAMS_FILE) -> dict[str, Any]:
    """Read params.yaml (composed from conf/ by DVC's Hydra integration)."""
    path = Path(path)
    if not path.is_file():
        raise PipelineError(f"{path} not found; compose it from conf/ with `python -m stages.compose_params`")
    try:
        params = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise PipelineError(f"{path} is not valid YAML ({err}); recompose: python -m stages.compose_params") from None
    if not isinstance(params, dict):
        raise PipelineError(f"{path} must hold a mapping; recompose it: python -m stages.compose_params")
    return params


def _convert(value: Any, hint: Any, where: str) -> Any:
    """Check `value` against a type hint; ints are accepted where floats are expected."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _convert(value, inner, where)
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise PipelineError(f"params.yaml: {where} must be a list, got {value!r}")
        return tuple(_convert(v, args[0], f"{where}[{i}]") for i, v in enumerate(value))
    if origin is dict:
        if not isinstance(value, dict):
            raise PipelineError(f"params.yaml: {where} must be a mapping, got {value!r}")
        return dict(value)
    if hint is float and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if hint is float and isinstance(value, str):
        try:
            return float(value)  # YAML 1.1 reads "3e-5" (no dot) as a string
        except ValueError:
            pass
    if hint in (int, str, bool) and isinstance(value, hint) and not (hint is int and isinstance(value, bool)):
        return value
    raise PipelineError(f"params.yaml: {where} must be {hint.__name__}, got {value!r}")


def section(cls: type, params: dict[str, Any], key: str) -> Any:
    """Build the frozen dataclass `cls` from params[key], checking every field's type."""
    data = params.get(key)
    if not isinstance(data, dict):
        raise PipelineError(f"params.yaml: section '{key}' is missing; recompose: python -m stages.compose_params")
    return build(cls, data, f"{key}.")


def build(cls: type, data: dict[str, Any], prefix: str = "") -> Any:
    """Build the frozen dataclass `cls` from `data`; error messages name keys as `prefix + field`."""
    hints = typing.get_type_hints(cls)
    values = {}
    for field in dataclasses.fields(cls):
        if field.name not in data:
            raise PipelineError(f"params.yaml: {prefix}{field.name} is missing; add it to conf/ and recompose")
        values[field.name] = _convert(data[field.name], hints[field.name], f"{prefix}{field.name}")
    obj = cls(**values)
    obj.validate(prefix)
    return obj


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    name: str
    embedded_package: str | None
    dims: tuple[int, ...]
    max_seq_length: int

    def validate(self, key: str) -> None:
        dims = list(self.dims)
        if not dims or any(d <= 0 for d in dims):
            raise PipelineError(f"params.yaml: {key}dims must be positive integers, got {dims}")
        if any(a <= b for a, b in zip(dims, dims[1:], strict=False)):
            raise PipelineError(
                f"params.yaml: {key}dims must be strictly descending (full dimension first), got {dims}"
            )
        if self.max_seq_length <= 0:
            raise PipelineError(f"params.yaml: {key}max_seq_length must be > 0, got {self.max_seq_length}")


@dataclasses.dataclass(frozen=True)
class DataConfig:
    source: str
    path: str
    files: dict[str, Any]
    columns: dict[str, Any]
    hf_split: str
    hf_revision: str | None
    dev_fraction: float
    test_fraction: float
    max_docs: int | None
    boilerplate_max_words: int

    def validate(self, key: str) -> None:
        if self.boilerplate_max_words < 0:
            raise PipelineError(f"params.yaml: {key}boilerplate_max_words must be >= 0")
        if self.source not in SOURCES:
            raise PipelineError(f"params.yaml: {key}source must be one of {', '.join(SOURCES)}, got {self.source!r}")
        if set(self.columns) != {"anchor", "positive"}:
            raise PipelineError(
                f"params.yaml: {key}columns must map exactly 'anchor' and 'positive' to your column names, "
                f"got {self.columns}"
            )
        if not 0.0 <= self.dev_fraction < 1.0:
            raise PipelineError(f"params.yaml: {key}dev_fraction must be in [0, 1), got {self.dev_fraction}")
        if not 0.0 < self.test_fraction < 1.0:
            raise PipelineError(f"params.yaml: {key}test_fraction must be in (0, 1), got {self.test_fraction}")
        if self.max_docs is not None and self.max_docs <= 0:
            raise PipelineError(f"params.yaml: {key}max_docs must be a positive integer or null, got {self.max_docs}")


@dataclasses.dataclass(frozen=True)
class EvalConfig:
    batch_size: int
    accuracy_at_k: tuple[int, ...]
    precision_recall_at_k: tuple[int, ...]
    ndcg_at_k: tuple[int, ...]
    mrr_at_k: tuple[int, ...]
    map_at_k: tuple[int, ...]

    def validate(self, key: str) -> None:
        if self.batch_size <= 0:
            raise PipelineError(f"params.yaml: {key}batch_size must be > 0, got {self.batch_size}")
        for name in ("accuracy_at_k", "precision_recall_at_k", "ndcg_at_k", "mrr_at_k", "map_at_k"):
            ks = getattr(self, name)
            if not ks or any(k <= 0 for k in ks):
                raise PipelineError(f"params.yaml: {key}{name} must be a non-empty list of positive ints")


@dataclasses.dataclass(frozen=True)
class PathsConfig:
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
    card: str
    plots: str

    def validate(self, key: str) -> None:
        pass


@dataclasses.dataclass(frozen=True)
class TrackingConfig:
    experiment: str

    def validate(self, key: str) -> None:
        if not self.experiment.strip():
            raise PipelineError(f"params.yaml: {key}experiment must not be empty")


def seed(params: dict[str, Any]) -> int:
    """The top-level seed knob."""
    return _convert(params.get("seed"), int, "seed")


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
        checks = [
            (self.lr > 0, f"lr must be > 0, got {self.lr}"),
            (self.epochs > 0, f"epochs must be > 0, got {self.epochs}"),
            (self.batch_size >= 2, f"batch_size must be >= 2 (in-batch negatives), got {self.batch_size}"),
            (self.grad_accum >= 1, f"grad_accum must be >= 1, got {self.grad_accum}"),
            (0 <= self.warmup_ratio < 1, f"warmup_ratio must be in [0, 1), got {self.warmup_ratio}"),
            (self.scheduler in SCHEDULERS, f"scheduler must be one of {', '.join(SCHEDULERS)}, got {self.scheduler!r}"),
            (self.loss in LOSSES, f"train.loss must be one of {', '.join(LOSSES)}, got {self.loss!r}"),
            (self.mini_batch_size >= 1, f"train.mini_batch_size must be >= 1, got {self.mini_batch_size}"),
            (
                self.batch_sampler in BATCH_SAMPLERS,
                f"train.batch_sampler must be one of {', '.join(BATCH_SAMPLERS)}, got {self.batch_sampler!r}",
            ),
            (self.logging_steps >= 1, f"train.logging_steps must be >= 1, got {self.logging_steps}"),
            (
                self.precision in PRECISIONS,
                f"train.precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}",
            ),
            (self.scale > 0, f"train.scale must be > 0, got {self.scale}"),
            (
                self.hardness_mode is None or self.hardness_mode in HARDNESS_MODES,
                f"train.hardness_mode must be null or one of {', '.join(HARDNESS_MODES)}, got {self.hardness_mode!r}",
            ),
            (self.hardness_strength >= 0, f"train.hardness_strength must be >= 0, got {self.hardness_strength}"),
            (self.nproc >= 1, f"train.nproc must be >= 1, got {self.nproc}"),
            (
                bool(self.directions) and "query_to_doc" in self.directions and set(self.directions) <= set(DIRECTIONS),
                f"train.directions must include query_to_doc and come from {', '.join(DIRECTIONS)}, "
                f"got {list(self.directions)}",
            ),
        ]
        for ok, message in checks:
            if not ok:
                raise PipelineError(f"params.yaml: {message}")


def train_config(params: dict[str, Any]) -> TrainConfig:
    """The training profile (params.train) plus the top-level sweep knobs."""
    if not isinstance(params.get("train"), dict):
        raise PipelineError("params.yaml: section 'train' is missing; recompose: python -m stages.compose_params")
    return build(TrainConfig, {**params["train"], **{k: params.get(k) for k in TRAIN_KNOBS if k in params}})


@dataclasses.dataclass(frozen=True)
class StageContext:
    """What every stage reads: the whole params (for the MLflow parent run), the model, paths, tracking."""

    params: dict[str, Any]
    model: ModelConfig
    paths: PathsConfig
    tracking: TrackingConfig

    def track(self, stage: str, stage_params: dict[str, Any]):
        """The stage's MLflow run, nested under this pipeline execution's parent run."""
        from stages.tracking import stage_run

        return stage_run(stage, stage_params, self.tracking.experiment, self.params)


def stage_context(path: str | Path = PARAMS_FILE) -> StageContext:
    params = load_params(path)
    return StageContext(
        params,
        section(ModelConfig, params, "model"),
        section(PathsConfig, params, "paths"),
        section(TrackingConfig, params, "tracking"),
    )
