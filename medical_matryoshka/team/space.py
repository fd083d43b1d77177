"""The search space of `python -m commands.search`, as conf/search.yaml writes it: the study's name and size,
its objectives, the knobs with their ranges or choices, the sampler and the pruner; checked with one line per
mistake, and the knobs against params.yaml and conf/ (a key no stage reads would rerun nothing)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medical_matryoshka.core.dims import dim_of
from medical_matryoshka.core.errors import PipelineError

SPACE_FILE = "conf/search.yaml"
TYPES = ("float", "int", "categorical")
SAMPLERS = ("tpe", "nsga2", "random")
PRUNERS = ("median", "threshold", "none")


@dataclass(frozen=True)
class Knob:
    name: str  # a `-S` key exactly as `dvc exp run -S` takes it: lr, train.matryoshka_weights, model (a group)
    type: str
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: tuple = ()

    def suggest(self, trial) -> Any:
        if self.type == "float":
            return trial.suggest_float(self.name, self.low, self.high, log=self.log, step=self.step)
        if self.type == "int":
            return trial.suggest_int(self.name, int(self.low), int(self.high), log=self.log, step=int(self.step or 1))
        return trial.suggest_categorical(self.name, list(self.choices))


@dataclass(frozen=True)
class SearchSpace:
    study: str
    trials: int
    objectives: tuple[str, ...]
    knobs: tuple[Knob, ...]
    sampler: Mapping[str, Any] = field(default_factory=dict)
    pruner: Mapping[str, Any] = field(default_factory=dict)
    fixed: tuple[str, ...] = ()  # `-S key=value` every trial takes (e.g. profile=smoke)


def _bad(where: str, what: str) -> PipelineError:
    return PipelineError(f"{where}: {what}")


def parse_space(data: Any, where: str = SPACE_FILE) -> SearchSpace:
    """The search from conf/search.yaml's mapping, checked: one line naming the key for anything wrong."""
    if not isinstance(data, dict):
        raise _bad(where, "must be a mapping with study, trials, objectives and space")
    unknown = sorted(set(data) - {"study", "trials", "objectives", "space", "sampler", "pruner", "fixed"})
    if unknown:
        raise _bad(where, f"unknown key(s) {unknown} (known: study, trials, objectives, space, sampler, pruner, fixed)")
    study = str(data.get("study", ""))
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", study):
        raise _bad(
            where, f"study must be a name of letters, digits, '.', '_' or '-' (it names DVC experiments), got {study!r}"
        )
    trials = data.get("trials")
    if not isinstance(trials, int) or isinstance(trials, bool) or trials < 1:
        raise _bad(where, f"trials must be a positive integer (the study's total over all workers), got {trials!r}")
    objectives = data.get("objectives")
    if isinstance(objectives, str):
        objectives = [objectives]
    if (
        not isinstance(objectives, list)
        or not 1 <= len(objectives) <= 2
        or not all(o in ("full", "smallest") or re.fullmatch(r"d\d{4}", str(o)) for o in objectives)
    ):
        raise _bad(
            where, f"objectives must be one or two of full, smallest or a summary key like d0128, got {objectives!r}"
        )
    if len(set(objectives)) != len(objectives):
        raise _bad(where, f"objectives repeat: {objectives}")
    space = data.get("space")
    if not isinstance(space, dict) or not space:
        raise _bad(where, "space must map each knob (a `dvc exp run -S` key) to its range or choices")
    knobs = tuple(_knob(str(name), spec, f"{where}: space.{name}") for name, spec in space.items())
    sampler = data.get("sampler") or {}
    if not isinstance(sampler, dict) or sampler.get("type", "tpe") not in SAMPLERS:
        raise _bad(where, f"sampler.type must be one of {', '.join(SAMPLERS)}, got {sampler!r}")
    pruner = data.get("pruner") or {}
    if not isinstance(pruner, dict) or pruner.get("type", "none") not in PRUNERS:
        raise _bad(where, f"pruner.type must be one of {', '.join(PRUNERS)}, got {pruner!r}")
    fixed = data.get("fixed") or []
    if not isinstance(fixed, list) or not all(isinstance(f, str) and "=" in f for f in fixed):
        raise _bad(where, f"fixed must be a list of key=value overrides, got {fixed!r}")
    return SearchSpace(study, trials, tuple(objectives), knobs, dict(sampler), dict(pruner), tuple(fixed))


def _knob(name: str, spec: Any, where: str) -> Knob:
    if not isinstance(spec, dict) or spec.get("type") not in TYPES:
        raise PipelineError(f"{where}: needs type: {' | '.join(TYPES)}, got {spec!r}")
    kind = spec["type"]
    extra = sorted(set(spec) - {"type", "low", "high", "log", "step", "choices"})
    if extra:
        raise PipelineError(f"{where}: unknown key(s) {extra}")
    if kind == "categorical":
        choices = spec.get("choices")
        if not isinstance(choices, list) or not choices:
            raise PipelineError(f"{where}: a categorical knob needs a non-empty list of choices")
        # Optuna stores choices as scalars; a list value (matryoshka weights) is written as its -S text
        return Knob(
            name, kind, choices=tuple(c if not isinstance(c, list | dict) else override_text(c) for c in choices)
        )
    low, high = spec.get("low"), spec.get("high")
    number = (int,) if kind == "int" else (int, float)
    if not all(isinstance(v, number) and not isinstance(v, bool) for v in (low, high)) or not low < high:
        raise PipelineError(f"{where}: a {kind} knob needs low < high ({kind} values), got low={low!r} high={high!r}")
    log = bool(spec.get("log", False))
    if log and low <= 0:
        raise PipelineError(f"{where}: a log-uniform range needs low > 0, got {low!r}")
    return Knob(name, kind, float(low), float(high), log, spec.get("step"))


def override_text(value: Any) -> str:
    if isinstance(value, list):
        return "[" + ",".join(override_text(v) for v in value) + "]"
    if value is None:
        return "null"
    return str(value)


def check_knobs(space: SearchSpace, params: Mapping[str, Any], conf: Path, where: str = SPACE_FILE) -> None:
    """Every knob must be a key of params.yaml or a config group of conf/: DVC reruns nothing for a key no stage
    declares, so a typo would give every trial the baseline's numbers."""
    from medical_matryoshka.core.tracking.identity import flatten

    keys = set(flatten(params))
    groups = {p.name: {f.stem for f in p.glob("*.yaml")} for p in conf.iterdir() if p.is_dir()}
    for knob in space.knobs:
        if knob.name in groups:
            unknown = (
                [c for c in knob.choices if str(c) not in groups[knob.name]] if knob.type == "categorical" else ["?"]
            )
            if unknown:
                raise PipelineError(
                    f"{where}: space.{knob.name}: a config group takes categorical choices among "
                    f"{sorted(groups[knob.name])}, got {list(knob.choices) or knob.type}"
                )
        elif knob.name not in keys:
            raise PipelineError(
                f"{where}: space.{knob.name} is not a key of params.yaml nor a config group in {conf}/ "
                "(DVC would rerun nothing and every trial would score the baseline); use a -S key as "
                "`dvc exp run` takes it, e.g. lr or train.matryoshka_weights"
            )


def objective_dim(name: str, dims: list[int]) -> int:
    """The dim an objective names: `full` the largest of `dims`, `smallest` the smallest, dNNNN the dim NNNN."""
    return max(dims) if name == "full" else min(dims) if name == "smallest" else dim_of(name)
