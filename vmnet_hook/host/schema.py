"""Strict decoding of JSON into frozen dataclasses, for state files (``host.state``): every
field present and of its JSON type, none unknown. Fields may be absent only where the
caller allows it (files written before fields had versions) and they have a default."""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, TypeVar

T = TypeVar("T")


class SchemaError(ValueError):
    """The JSON does not have the dataclass's shape; ``str()`` says where and how."""


def decode(kind: type[T], raw: object, *, lax: bool = False, where: str = "") -> T:
    """``kind`` built from ``raw``; ``lax``: a field with a default may be absent."""
    if not isinstance(raw, dict):
        raise SchemaError(f"{where or 'the top level'} is {_json_type(raw)}, not an object")
    fields = {spec.name: spec for spec in dataclasses.fields(kind)}  # type: ignore[arg-type]
    hints = _hints(typing.cast(type[Any], kind))
    unknown = [key for key in raw if key not in fields]
    if unknown:
        raise SchemaError(f"unexpected field {_at(where, unknown[0])}")
    values: dict[str, object] = {}
    for name, spec in fields.items():
        if name in raw:
            values[name] = _value(hints[name], raw[name], _at(where, name), lax)
        elif not (lax and _has_default(spec)):
            raise SchemaError(f"missing field {_at(where, name)}")
    return kind(**values)


def _value(hint: Any, value: object, where: str, lax: bool) -> object:
    args = typing.get_args(hint)
    if dataclasses.is_dataclass(hint):
        return decode(typing.cast(type[Any], hint), value, lax=lax, where=where)
    if typing.get_origin(hint) is tuple and len(args) == 2 and args[1] is Ellipsis:
        if not isinstance(value, list):
            raise SchemaError(f"{where} is {_json_type(value)}, not an array")
        return tuple(_value(args[0], item, f"{where}[{i}]", lax) for i, item in enumerate(value))
    if isinstance(hint, types.UnionType) and type(None) in args:
        if value is None:
            return None
        (inner,) = [arg for arg in args if arg is not type(None)]
        return _value(inner, value, where, lax)
    if hint is float and type(value) is int:
        return float(value)
    if hint in (str, int, float, bool) and type(value) is hint:
        return value
    raise SchemaError(f"{where} is {_json_type(value)}, not {_json_name(hint)}")


_HINTS: dict[type[Any], dict[str, Any]] = {}


def _hints(kind: type[Any]) -> dict[str, Any]:
    if kind not in _HINTS:
        _HINTS[kind] = typing.get_type_hints(kind)
    return _HINTS[kind]


def _has_default(spec: dataclasses.Field[Any]) -> bool:
    missing = dataclasses.MISSING
    return spec.default is not missing or spec.default_factory is not missing


def _at(where: str, key: str) -> str:
    shown = key if key.isidentifier() else repr(key)
    return f"{where}.{shown}" if where else shown


def _json_type(value: object) -> str:
    names = {type(None): "null", bool: "a boolean", int: "a number", float: "a number",
             str: "a string", list: "an array", dict: "an object"}  # fmt: skip
    return names.get(type(value), type(value).__name__)


def _json_name(hint: Any) -> str:
    names = {str: "a string", int: "an integer", float: "a number", bool: "a boolean"}
    return names.get(hint, str(hint))


def is_link_name(name: str) -> bool:
    """What the kernel takes as an interface name (dev_valid_name): 1-15 bytes, not '.'
    or '..', no '/', ':' or whitespace; and no control characters."""
    size = len(name.encode("utf-8", "surrogateescape"))
    bad = any(char in "/:" or char.isspace() or not char.isprintable() for char in name)
    return 0 < size <= 15 and name not in (".", "..") and not bad


def is_mac(text: str) -> bool:
    """Six two-digit hex bytes, colon-separated, lower case: as the hook writes a MAC."""
    parts = text.split(":")
    return len(parts) == 6 and all(
        len(part) == 2 and all(c in "0123456789abcdef" for c in part) for part in parts
    )
