"""Read params.yaml and turn its sections into frozen dataclasses, checking every value's type."""

from __future__ import annotations

import dataclasses
import types
import typing
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


def convert(value: Any, hint: Any, where: str) -> Any:
    """Check `value` against a type hint; ints are accepted where floats are expected."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return convert(value, inner, where)
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise PipelineError(f"params.yaml: {where} must be a list, got {value!r}")
        return tuple(convert(v, args[0], f"{where}[{i}]") for i, v in enumerate(value))
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


def build(cls: type, data: dict[str, Any], prefix: str = "") -> Any:
    """The frozen dataclass `cls` from `data`, validated; error messages name keys as `prefix + field`."""
    hints = typing.get_type_hints(cls)
    values = {}
    for field in dataclasses.fields(cls):
        if field.name not in data:
            raise PipelineError(f"params.yaml: {prefix}{field.name} is missing; add it to conf/ and {RECOMPOSE}")
        values[field.name] = convert(data[field.name], hints[field.name], f"{prefix}{field.name}")
    obj = cls(**values)
    obj.validate(prefix)
    return obj


def section(cls: type, params: dict[str, Any], key: str) -> Any:
    """The frozen dataclass `cls` from params[key]."""
    data = params.get(key)
    if not isinstance(data, dict):
        raise PipelineError(f"params.yaml: section '{key}' is missing; {RECOMPOSE}")
    return build(cls, data, f"{key}.")
