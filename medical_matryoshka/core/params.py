"""Read params.yaml, the file DVC composes from conf/ (its sections are read as core/sections.py's dataclasses)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from medical_matryoshka.core.errors import PipelineError

PARAMS_FILE = "params.yaml"
RECOMPOSE = "recompose: python -m commands.compose_params"


def load_params(path: str | Path = PARAMS_FILE) -> dict[str, Any]:
    """Read params.yaml (composed from conf/ by DVC's Hydra integration)."""
    path = Path(path)
    if not path.is_file():
        raise PipelineError(f"{path} not found; compose it from conf/ with `python -m commands.compose_params`")
    try:
        params = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise PipelineError(f"{path} is not valid YAML ({err}); {RECOMPOSE}") from None
    if not isinstance(params, dict):
        raise PipelineError(f"{path} must hold a mapping; {RECOMPOSE}")
    return params
