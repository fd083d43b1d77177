"""How a params.yaml section is declared and read: a frozen pydantic dataclass per section.

A knob is declared once, as a typed field whose rule sits beside it: `lr: float = knob(gt=0, lt=1, top_level=True)`.
Its value and help text live in conf/ (DVC composes params.yaml from conf/ without importing this code, so the
value must be there, and it is where a user reads and overrides it with `-S`). pydantic converts and checks each
value; `build` turns its first complaint into one line that names the key, the rule and the value given.
Checks across fields sit in the section's `__post_init__`. A `top_level` field is read from the top of
params.yaml (`-S lr=3e-5`) instead of from its section.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any

import pydantic
from annotated_types import Ge, Gt, Le, Lt

from medical_matryoshka.core.errors import PipelineError
from medical_matryoshka.core.params import RECOMPOSE


def section(cls: type) -> type:
    """A params.yaml section: a frozen dataclass whose fields pydantic converts and checks on construction."""
    return pydantic.dataclasses.dataclass(frozen=True, kw_only=True)(cls)


def knob(*, top_level: bool = False, rule: str | None = None, hint: str | None = None, **constraints: Any) -> Any:
    """A required field with its constraints (pydantic's gt, ge, lt, le, min_length). `rule` replaces the
    requirement text errors print (made from the type and constraints otherwise); `hint` follows it."""
    return pydantic.Field(json_schema_extra={"top_level": top_level, "rule": rule, "hint": hint}, **constraints)


def _extra(cls: type, name: str) -> dict[str, Any]:
    return cls.__pydantic_fields__[name].json_schema_extra or {}


def top_level(cls: type) -> tuple[str, ...]:
    """The fields of `cls` read from the top of params.yaml (the sweep knobs: seed, lr, ...)."""
    return tuple(f.name for f in dataclasses.fields(cls) if _extra(cls, f.name).get("top_level"))


def key_of(cls: type, name: str) -> str:
    """How params.yaml and its error lines name field `name` of section `cls`: `lr`, `train.loss`."""
    return name if name in top_level(cls) else f"{cls.KEY}.{name}"


def _number(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else repr(value)


def _bounds(metadata: list[Any]) -> str | None:
    low = next(((m.gt, "(") for m in metadata if isinstance(m, Gt)), None) or next(
        ((m.ge, "[") for m in metadata if isinstance(m, Ge)), None
    )
    high = next(((m.lt, ")") for m in metadata if isinstance(m, Lt)), None) or next(
        ((m.le, "]") for m in metadata if isinstance(m, Le)), None
    )
    if low and high:
        return f"in {low[1]}{_number(low[0])}, {_number(high[0])}{high[1]}"
    if low:
        return f"{'>' if low[1] == '(' else '>='} {_number(low[0])}"
    if high:
        return f"{'<' if high[1] == ')' else '<='} {_number(high[0])}"
    return None


_NAMES = {int: ("an integer", "integers"), float: ("a number", "numbers"), str: ("a string", "strings"),
          bool: ("true or false", "true or false")}  # fmt: skip
_CONSTRAINT_ERRORS = ("greater_than", "less_than", "literal_error", "too_short", "string_too_short", "enum")


def _rule(hint: Any, metadata: list[Any], whole: bool, plural: bool = False) -> str:
    """What a value of type `hint` with `metadata` constraints must be. `whole`: say the type too (the value
    had the wrong type, or it is a collection), not only the bound it broke."""
    if typing.get_origin(hint) is typing.Annotated:
        inner, *more = typing.get_args(hint)
        more = [m for item in more for m in (item.metadata if isinstance(item, pydantic.fields.FieldInfo) else [item])]
        return _rule(inner, [*metadata, *more], whole, plural)
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    non_empty = any(getattr(m, "min_length", None) for m in metadata)
    if origin in (typing.Union, types.UnionType):
        (inner,) = [a for a in args if a is not type(None)]
        return f"null or {_rule(inner, metadata, whole, plural)}"
    if origin is typing.Literal:
        return f"{'values from' if plural else 'one of'} {', '.join(map(str, args))}"
    if origin is tuple:
        return f"a {'non-empty ' if non_empty else ''}list of {_rule(args[0], [], True, plural=True)}"
    if origin is dict and args[1] is Any:
        return "a mapping"
    if origin is dict:
        return f"a mapping from {', '.join(typing.get_args(args[0]))} to {_rule(args[1], [], True, True)}"
    bounds = _bounds(metadata)
    if bounds and not whole:
        return bounds
    one, many = _NAMES.get(hint, (getattr(hint, "__name__", str(hint)),) * 2)
    name = many if plural else ("a non-empty string" if hint is str and non_empty else one)
    return f"{name}{f' {bounds}' if bounds else ''}"


def requirement(cls: type, name: str, type_error: bool = False) -> str:
    """The rule field `name` of `cls` states, as error lines print it."""
    info, extra = cls.__pydantic_fields__[name], _extra(cls, name)
    hint = info.rebuild_annotation()
    collection = typing.get_origin(info.annotation) in (tuple, dict)
    text = extra.get("rule") or _rule(hint, [], whole=type_error or collection)
    return f"{text} {extra['hint']}" if extra.get("hint") else text


def build(cls: type, data: dict[str, Any]) -> Any:
    """The section `cls` from `data` (its fields only; unknown keys are sections.check_known_keys' concern),
    converted and checked by pydantic; the first problem is one line: `params.yaml: lr must be in (0, 1) ...`."""
    names = [f.name for f in dataclasses.fields(cls)]
    for name in names:
        if name not in data:
            raise PipelineError(f"params.yaml: {key_of(cls, name)} is missing; add it to conf/ and {RECOMPOSE}")
    try:
        return cls(**{name: data[name] for name in names})
    except pydantic.ValidationError as err:
        problem = err.errors()[0]
        name = problem["loc"][0]
        type_error = not problem["type"].startswith(_CONSTRAINT_ERRORS)
        raise PipelineError(
            f"params.yaml: {key_of(cls, name)} must be {requirement(cls, name, type_error)}, got {_number(data[name])}"
        ) from None


def fail(cls: type, name: str, message: str) -> None:
    """A check across fields (a section's __post_init__) failed: one line naming the key."""
    raise PipelineError(f"params.yaml: {key_of(cls, name)} {message}")
