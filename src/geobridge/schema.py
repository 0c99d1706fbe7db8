"""One validator for every configuration: types from a dataclass's annotations, ranges and names from rules.

``build(cls, data, rules=..., where=...)`` turns a JSON-like mapping into the dataclass ``cls`` (nested dataclasses
included), or raises a ``ConfigError`` whose message starts with the dotted key of the first bad value, e.g.
``model.embed_dim: expected an int >= 1, got 'large'``. ``rules`` maps dotted keys (relative to ``cls``) to a
``Range``, a ``Choice`` or a callable ``rule(value, key)`` that raises ``ConfigError``; a key ending in ``.*``
applies to every value of a dict field. The training config, the model configs and a checkpoint's
``config.json`` all go through here.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Union

from geobridge.errors import ConfigError


@dataclass(frozen=True)
class Range:
    """A closed or half-open numeric interval; ``None`` leaves a side open."""

    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    hi_open: bool = False

    def contains(self, value: float) -> bool:
        if self.lo is not None and (value <= self.lo if self.lo_open else value < self.lo):
            return False
        return not (self.hi is not None and (value >= self.hi if self.hi_open else value > self.hi))

    def describe(self) -> str:
        if self.lo is not None and self.hi is not None:
            return f"in {'(' if self.lo_open else '['}{self.lo:g}, {self.hi:g}{')' if self.hi_open else ']'}"
        if self.lo is not None:
            return f"{'>' if self.lo_open else '>='} {self.lo:g}"
        if self.hi is not None:
            return f"{'<' if self.hi_open else '<='} {self.hi:g}"
        return ""


@dataclass(frozen=True)
class Choice:
    """One of a fixed set of names."""

    names: tuple[str, ...]


Rule = Union[Range, Choice, Callable[[Any, str], None]]  # noqa: UP007 (a runtime alias)
Rules = Mapping[str, Rule]
_NUMBER_TYPES = (int, float)


def build(cls: type, data: Any, *, rules: Rules, where: str = "") -> Any:
    """The dataclass ``cls`` built from the mapping ``data``, every field type-checked and every rule applied."""
    return _build(cls, data, rules=rules, where=where, prefix="")


def check(obj: Any, *, rules: Rules, where: str = "") -> None:
    """Validate an existing dataclass instance (e.g. one changed after it was built) with the same rules."""
    build(type(obj), dataclasses.asdict(obj), rules=rules, where=where)


def numeric_fields(cls: type, prefix: str = "") -> list[str]:
    """Dotted keys of every int or float field of ``cls`` and its nested dataclasses (bools excluded)."""
    out = []
    for f, tp in _fields(cls):
        key = f"{prefix}{f.name}"
        inner = _strip_optional(tp)
        if dataclasses.is_dataclass(inner):
            out.extend(numeric_fields(inner, prefix=f"{key}."))  # type: ignore[arg-type]
        elif inner in _NUMBER_TYPES:
            out.append(key)
        elif typing.get_origin(inner) in (list, dict) and typing.get_args(inner)[-1] in _NUMBER_TYPES:
            out.append(f"{key}.*")  # every item of a list or dict of numbers
    return out


def join(where: str, key: str) -> str:
    return f"{where}.{key}" if where and key else where or key


# ---------------------------------------------------------------------------------------------------------------------


def _fields(cls: type) -> list[tuple[dataclasses.Field, Any]]:
    hints = typing.get_type_hints(cls)
    return [(f, hints[f.name]) for f in dataclasses.fields(cls)]


def _strip_optional(tp: Any) -> Any:
    args = typing.get_args(tp)
    if _is_union(tp) and type(None) in args and len(args) == 2:
        return next(a for a in args if a is not type(None))
    return tp


def _is_union(tp: Any) -> bool:
    return typing.get_origin(tp) is Union or isinstance(tp, types.UnionType)


def _build(cls: type, data: Any, *, rules: Rules, where: str, prefix: str) -> Any:
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where or 'config'}: expected a mapping of keys, got {_show(data)}")
    fields = _fields(cls)
    names = [f.name for f, _ in fields]
    unknown = sorted(str(k) for k in data if k not in names)
    if unknown:
        raise ConfigError(
            f"{join(where, unknown[0])}: unknown key (unknown keys {unknown}); valid keys are {sorted(names)}"
        )
    values = {}
    for f, tp in fields:
        if f.name not in data:
            continue
        values[f.name] = _value(data[f.name], tp, rules=rules, where=join(where, f.name), rel=prefix + f.name)
    return cls(**values)


def _value(value: Any, tp: Any, *, rules: Rules, where: str, rel: str) -> Any:
    rule = rules.get(rel)
    if _is_union(tp):
        if value is None and type(None) in typing.get_args(tp):
            return None
        tp = _strip_optional(tp)
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, rules=rules, where=where, prefix=f"{rel}.")  # type: ignore[arg-type]
    origin = typing.get_origin(tp)
    if origin is list:
        (item_tp,) = typing.get_args(tp)
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {_show(value)}")
        out: Any = [_scalar(v, item_tp, rules.get(f"{rel}.*"), where=f"{where}[{i}]") for i, v in enumerate(value)]
    elif origin is dict:
        key_tp, item_tp = typing.get_args(tp)
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: expected a mapping, got {_show(value)}")
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise ConfigError(f"{where}: keys must be strings, got {_show(k)}")
            if typing.get_origin(item_tp) is list:
                out[k] = _value(v, item_tp, rules={}, where=f"{where}.{k}", rel="")
            else:
                out[k] = _scalar(v, item_tp, rules.get(f"{rel}.*"), where=f"{where}.{k}")
    else:
        return _scalar(value, tp, rule, where=where)
    if callable(rule) and not isinstance(rule, (Range, Choice)):
        rule(out, where)
    return out


def _scalar(value: Any, tp: Any, rule: Rule | None, *, where: str) -> Any:
    optional = _is_union(tp) and type(None) in typing.get_args(tp)
    if optional and value is None:
        return None
    tp = _strip_optional(tp)
    bounds = f" {rule.describe()}" if isinstance(rule, Range) else ""
    if tp is Any:
        value = _json_like(value, where=where)
    elif tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {_show(value)}")
    elif tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an int{bounds}, got {_show(value)}")
    elif tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ConfigError(f"{where}: expected a finite number{bounds}, got {_show(value)}")
        value = float(value)
    elif tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {_show(value)}")
    else:  # pragma: no cover - a schema this module does not know
        raise TypeError(f"{where}: unsupported config field type {tp!r}")
    if isinstance(rule, Range) and not rule.contains(value):
        raise ConfigError(f"{where}: expected {'an int' if tp is int else 'a number'}{bounds}, got {_show(value)}")
    if isinstance(rule, Choice) and value not in rule.names:
        raise ConfigError(f"{where}: expected one of {', '.join(rule.names)}, got {_show(value)}")
    if callable(rule) and not isinstance(rule, (Range, Choice)):
        rule(value, where)
    return value


def _json_like(value: Any, *, where: str, depth: int = 0) -> Any:
    """Plain JSON values only (no nesting beyond a few levels): what a config may pass through to a library."""
    if depth > 4:
        raise ConfigError(f"{where}: nested too deeply")
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, (int, float)):
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"{where}: expected a finite number, got {value}")
        return value
    if isinstance(value, (list, tuple)):
        return [_json_like(v, where=f"{where}[{i}]", depth=depth + 1) for i, v in enumerate(value)]
    if isinstance(value, Mapping) and all(isinstance(k, str) for k in value):
        return {k: _json_like(v, where=f"{where}.{k}", depth=depth + 1) for k, v in value.items()}
    raise ConfigError(f"{where}: expected a JSON value, got {_show(value)}")


def _show(value: Any) -> str:
    text = repr(value) if isinstance(value, (str, int, float, bool, type(None))) else type(value).__name__
    return text if len(text) <= 60 else text[:57] + "..."
