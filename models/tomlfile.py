"""TOML spec files: parse with positions, find the line of a key, and build a frozen spec from a table.

tomllib returns plain dicts without positions, so the line of a key is found by scanning the text
(table headers and `key =` lines); every error names the file, that line, the value and the need.
"""

from __future__ import annotations

import dataclasses
import re
import tomllib
from enum import Enum
from pathlib import Path

from dualpath.errors import InputError, SpecError

_POSITION = re.compile(r"\s*\(at line (\d+), column (\d+)\)\s*$")
_HEADER = re.compile(r"^\s*\[\s*([^\[\]]+?)\s*\]\s*(#.*)?$")
_KEY = re.compile(r"""^\s*((?:"[^"]*"|'[^']*'|[A-Za-z0-9_\-]+)(?:\s*\.\s*(?:"[^"]*"|'[^']*'|[A-Za-z0-9_\-]+))*)\s*=""")


def _unquote(part: str) -> str:
    part = part.strip()
    return part[1:-1] if len(part) >= 2 and part[0] == part[-1] and part[0] in "\"'" else part


class TomlDoc:
    """A parsed TOML file that remembers its text so errors can point at lines."""

    def __init__(self, source: str, text: str):
        self.source = source
        self.text = text
        try:
            self.data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            message = str(exc)
            match = _POSITION.search(message)
            line = int(match.group(1)) if match else getattr(exc, "lineno", None)
            column = f", column {match.group(2)}" if match else ""
            raise InputError(source, f"invalid TOML{column}: {_POSITION.sub('', message)}", line) from exc
        self._lines = self._index_keys()

    @classmethod
    def read(cls, path: str | Path) -> TomlDoc:
        try:
            text = Path(path).read_text()
        except OSError as exc:
            raise InputError(str(path), f"cannot read: {exc.strerror or exc}") from exc
        except UnicodeDecodeError as exc:
            raise InputError(str(path), f"not UTF-8 text: {exc.reason}") from exc
        return cls(str(path), text)

    def _index_keys(self) -> dict[tuple[str, ...], int]:
        """Full dotted key path -> first line defining it (table headers included)."""
        out: dict[tuple[str, ...], int] = {}
        table: tuple[str, ...] = ()
        for number, line in enumerate(self.text.splitlines(), start=1):
            header = _HEADER.match(line)
            if header and not line.lstrip().startswith("[["):
                table = tuple(_unquote(p) for p in header.group(1).split("."))
                out.setdefault(table, number)
                continue
            key = _KEY.match(line)
            if key:
                path = table + tuple(_unquote(p) for p in key.group(1).split("."))
                out.setdefault(path, number)
        return out

    def line_of(self, *path: str) -> int | None:
        """Line of the key at `path` (e.g. ("node", "snic_gbps")), else of its table, else None."""
        while path:
            if path in self._lines:
                return self._lines[path]
            path = path[:-1]
        return None

    def error(self, path: tuple[str, ...], value: object, expected: str) -> SpecError:
        return SpecError(self.source, ".".join(path), value, expected, self.line_of(*path))

    def table(self, *path: str) -> dict:
        """The sub-table at `path` ({} when absent); a non-table there is an error."""
        data = self.data
        for depth, name in enumerate(path):
            data = data.get(name, {})
            if not isinstance(data, dict):
                raise self.error(path[: depth + 1], data, "a table")
        return data

    def check_keys(self, path: tuple[str, ...], table: dict, allowed: set[str] | list[str]) -> None:
        """Reject keys not in `allowed`: typos must not pass silently."""
        for key, value in table.items():
            if key not in allowed:
                raise self.error((*path, key), value, "one of the keys " + ", ".join(sorted(allowed)))


def spec_types(cls: type) -> dict[str, str]:
    """Field name -> annotation text ("int", "float", "str", "bool" or a class name)."""
    return {f.name: f.type if isinstance(f.type, str) else f.type.__name__ for f in dataclasses.fields(cls)}


def convert(doc: TomlDoc, path: tuple[str, ...], value: object, kind: str, enums: dict[str, type] | None = None):
    """Check one TOML value against a field's annotation; ints given as integral floats are accepted."""
    if kind == "bool":
        if not isinstance(value, bool):
            raise doc.error(path, value, "true or false")
        return value
    if kind == "int":
        if isinstance(value, float) and value.is_integer():
            value = int(value)  # 80e9 is a float in TOML but an exact byte count here
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
    if enum is not None and issubclass(enum, Enum):
        choices = [e.value for e in enum]
        if value not in choices:
            raise doc.error(path, value, "one of " + ", ".join(f'"{c}"' for c in choices))
        return enum(value)
    raise doc.error(path, value, f"a {kind} (not settable from TOML)")


def build_spec(doc: TomlDoc, path: tuple[str, ...], cls: type, table: dict, base=None,
               skip: tuple[str, ...] = (), enums: dict[str, type] | None = None,
               handled: tuple[str, ...] = (), values: dict | None = None):
    """Make a `cls` from `table` (over `base` when given), re-raising validation errors at their line.

    `skip`: fields not settable from this table; `handled`: extra keys the caller reads itself;
    `values`: fields the caller already built (sub-tables such as `[cost]`).
    """
    types = {k: v for k, v in spec_types(cls).items() if k not in skip}
    doc.check_keys(path, table, set(types) | set(handled))
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
