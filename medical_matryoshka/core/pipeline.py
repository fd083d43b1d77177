"""The pipeline's shape, read from dvc.yaml: each stage's declared params, its outputs, the final stages."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from medical_matryoshka.core.errors import PipelineError
from medical_matryoshka.core.params import PARAMS_FILE

PIPELINE_FILE = "dvc.yaml"


def _stages(pipeline_file: str | Path) -> dict[str, Any]:
    return yaml.safe_load(Path(pipeline_file).read_text(encoding="utf-8")).get("stages", {})


def _paths(entries: list) -> list[str]:
    """Paths of a deps/outs/metrics list, whose entries are `path` or `{path: options}`."""
    return [e if isinstance(e, str) else next(iter(e)) for e in entries]


def final_stages(pipeline_file: str | Path = PIPELINE_FILE) -> set[str]:
    """The stages whose outputs no other stage reads: the pipeline is done when they are."""
    stages = _stages(pipeline_file)
    read = [dep for spec in stages.values() for dep in _paths(spec.get("deps", []))]
    return {
        name
        for name, spec in stages.items()
        if not any(
            dep == out or dep.startswith(out.rstrip("/") + "/")
            for out in _paths(spec.get("outs", []) + spec.get("metrics", []))
            for dep in read
        )
    }


def declared_params(stage: str, pipeline_file: str | Path = PIPELINE_FILE) -> list[str]:
    """The params keys dvc.yaml lists for `stage` (dotted, as DVC reads them)."""
    spec = _stages(pipeline_file).get(stage)
    if spec is None:
        raise PipelineError(f"{pipeline_file} has no stage '{stage}'")
    keys = spec.get("params", [])
    if not all(isinstance(k, str) for k in keys):
        raise PipelineError(f"{pipeline_file}: stage '{stage}' params must be keys of {PARAMS_FILE}, one per line")
    return keys


def stage_outputs(stage: str, params: dict[str, Any], pipeline_file: str | Path = PIPELINE_FILE) -> list[Path]:
    """`stage`'s outs and metrics as dvc.yaml lists them, `${paths.*}` filled in from `params`."""
    spec = _stages(pipeline_file).get(stage, {})

    def fill(match: re.Match) -> str:
        value: Any = params
        for part in match.group(1).split("."):
            value = value[part]
        return str(value)

    return [Path(re.sub(r"\$\{([\w.]+)\}", fill, p)) for p in _paths(spec.get("outs", []) + spec.get("metrics", []))]
