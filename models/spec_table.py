"""Frozen specs from TOML tables: each value checked against its field's annotation, at its line.

The model files (cluster, LLM) set spec fields by name; a wrong type, an unknown key, a missing
required field or a value the spec's own validation rejects becomes a `SpecError` naming the file,
the key's line (found by `dualpath.tomldoc.TomlDoc`), the value and what was expected.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from enum import Enum
from typing import Any, Literal, overload

from dualpath.errors import SpecError
from dualpath.tomldoc import TomlDoc


def spec_types(cls: type) -> dict[str, str]:
    """Field name -> annotation text ("int", "float", "str", "bool" or a class name)."""
    return {f.name: f.type if isinstance(f.type, str) else f.type.__name__ for f in dataclasses.fields(cls)}


@overload
def convert(doc: TomlDoc, path: tuple[str, ...], value: object, kind: Literal["bool"],
            enums: Mapping[str, type[Enum]] | None = None) -> bool: ...
@overload
def convert(doc: TomlDoc, path: tuple[str, ...], value: object, kind: Literal["int"],
            enums: Mapping[str, type[Enum]] | None = None) -> int: ...
@overload
def convert(doc: TomlDoc, path: tuple[str, ...], value: object, kind: Literal["float"],
            enums: Mapping[str, type[Enum]] | None = None) -> float: ...
@overload
def convert(doc: TomlDoc, path: tuple[str, ...], value: object, kind: Literal["str"],
            enums: Mapping[str, type[Enum]] | None = None) -> str: ...
@overload
def convert(doc: TomlDoc, path: tuple[str, ...], value: object, kind: str,
            enums: Mapping[str, type[Enum]] | None = None) -> Any: ...
def convert(doc: TomlDoc, path: tuple[str, ...], value: object, kind: str,
            enums: Mapping[str, type[Enum]] | None = None) -> Any:
    """Check one TOML value against a field's annotation; ints given as integral floats are accepted."""
    if kind == "bool":
        if not isinstance(value, bool):
            raise doc.error(path, value, "true or false")
        return value
    if kind == "int":
        if isinstance(value, float) and value.is_integer() and abs(value) <= 2**53:
            value = int(value)  # 80e9 is a float in TOML but an exact byte count here (1e308 stays a float)
        if isinstance(value, bool) or not isinstance(value, int):
            raise doc.error(path, value, "an integer")
        return value
    if kind == "float":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise doc.error(path, value, "a number")
        return float(value)
    if kind == "str":
        if not isinstance(value, str):
            raise doc.error(path, value, "a string")
        return value
    enum = (enums or {}).get(kind)
    if enum is not None:
        choices = [e.value for e in enum]
        if value not in choices:
            raise doc.error(path, value, "one of " + ", ".join(f'"{c}"' for c in choices))
        return enum(value)
    raise doc.error(path, value, f"a {kind} (not settable from TOML)")


def build_spec(doc: TomlDoc, path: tuple[str, ...], cls: type, table: dict, base=None,
               skip: tuple[str, ...] = (), enums: Mapping[str, type[Enum]] | None = None,
               handled: tuple[str, ...] = (), values: dict | None = None):
    """Make a `cls` from `table` (over `base` when given), re-raising validation errors at their line.

    `skip`: fields not settable from this table; `handled`: extra keys the caller reads itself;
    `values`: fields the caller already built (sub-tables such as `[cost]`).
    """
    types = {k: v for k, v in spec_types(cls).items() if k not in skip}
    doc.check_keys(table, set(types) | set(handled), path)
    values = dict(values or {})
    values.update({key: convert(doc, (*path, key), value, types[key], enums)
                   for key, value in table.items() if key in types})
    try:
        if base is not None:
            return dataclasses.replace(base, **values)
        return cls(**values)
    except SpecError as exc:
        raise doc.error((*path, exc.field), exc.value, exc.expected) from exc
    except TypeError as exc:  # a required field is missing
        missing = re.findall(r"'(\w+)'", str(exc))
        field = missing[0] if missing else "?"
        raise SpecError(doc.source, ".".join((*path, field)), None, "a value (required)",
                        doc.line_of(*path)) from exc
