"""TOML files read with `tomllib`, plus the line of every key so errors can say file:line.

tomllib keeps no positions, so a light line scanner maps key paths (tables, arrays of tables by
index, dotted keys, keys inside one-line inline tables) to the line that defines them. Every error
names the file, that line, the value and what was expected; unparseable TOML raises `InputError`
at its line. Both the model files (models/) and the fabric files (proofs/) read TOML through here.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Collection
from pathlib import Path
from typing import Any

from dualpath import validate
from dualpath.errors import InputError, SpecError
from dualpath.limits import MAX_NESTING_DEPTH
from dualpath.validate import check_depth, read_text

# A key path: table and key names, with an integer index for each [[array]] table entry.
KeyPath = tuple[str | int, ...]

_POSITION = re.compile(r"\s*\(at line (\d+), column (\d+)\)\s*$")
_HEADER = re.compile(r"^\s*(\[\[?)\s*([^\]]+?)\s*\]\]?\s*(#.*)?$")
_KEY = re.compile(r"""^\s*((?:[A-Za-z0-9_\-]+|"[^"]*"|'[^']*')(?:\s*\.\s*(?:[A-Za-z0-9_\-]+|"[^"]*"|'[^']*'))*)\s*=""")
_INLINE_KEY = re.compile(r"""[{,]\s*([A-Za-z0-9_\-]+|"[^"]*")\s*=""")


def _split_key(text: str) -> tuple[str, ...]:
    # findall, not split("."): a quoted key may itself hold dots.
    parts = re.findall(r"""[A-Za-z0-9_\-]+|"[^"]*"|'[^']*'""", text)
    return tuple(p.strip("\"'") for p in parts)


def _bracket_balance(text: str) -> int:
    text = re.sub(r'"[^"]*"|\'[^\']*\'', "", text).split("#", 1)[0]
    return text.count("[") - text.count("]")


class TomlDoc:
    """A parsed TOML file: `data` as tomllib gives it, `line_of(*path)` for error messages."""

    def __init__(self, source: str | Path, text: str):
        self.source = str(source)
        self.text = text
        try:
            self.data: dict[str, Any] = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            message = str(exc)
            match = _POSITION.search(message)
            line = int(match.group(1)) if match else getattr(exc, "lineno", None)
            column = f", column {match.group(2)}" if match else ""
            raise InputError(self.source, f"invalid TOML{column}: {_POSITION.sub('', message)}", line) from exc
        except RecursionError as exc:
            raise InputError(self.source, f"nested more than {MAX_NESTING_DEPTH} levels deep "
                                          "(dualpath.limits.MAX_NESTING_DEPTH)") from exc
        except ValueError as exc:  # tomllib lets int()'s 4,300-digit limit through
            raise InputError(self.source, "invalid TOML: an integer of more than 4,300 digits") from exc
        check_depth(self.source, self.data)
        self._lines: dict[KeyPath, int] | None = None

    @classmethod
    def read(cls, path: str | Path) -> TomlDoc:
        return cls(path, read_text(path))

    def _index(self) -> dict[KeyPath, int]:
        """Full key path -> first line defining it (table headers included)."""
        lines: dict[KeyPath, int] = {}
        counters: dict[KeyPath, int] = {}
        table: KeyPath = ()
        depth = 0  # open brackets of a multi-line array value: its lines are not headers
        for number, line in enumerate(self.text.splitlines(), start=1):
            if depth > 0:
                depth += _bracket_balance(line)
                continue
            header = _HEADER.match(line)
            if header and not _KEY.match(line):
                path = _split_key(header.group(2))
                if header.group(1) == "[[":
                    index = counters.get(path, 0)
                    counters[path] = index + 1
                    table = (*path, index)
                else:
                    table = path
                lines.setdefault(table, number)
                continue
            key = _KEY.match(line)
            if not key:
                continue
            full = table + _split_key(key.group(1))
            lines.setdefault(full, number)
            rest = line[key.end():]
            depth = max(0, _bracket_balance(rest))
            if "{" in rest:
                for inner in _INLINE_KEY.finditer(rest):
                    lines.setdefault((*full, inner.group(1).strip('"')), number)
        return lines

    def line_of(self, *path: str | int) -> int | None:
        """Line defining `path` (e.g. ("node", "snic_gbps")), else of its nearest table, else None."""
        if self._lines is None:
            self._lines = self._index()
        while path:
            if path in self._lines:
                return self._lines[path]
            path = path[:-1]
        return None

    def error(self, path: KeyPath, value: object, expected: str) -> SpecError:
        field = ".".join(str(p) for p in path if not isinstance(p, int)) or "(top level)"
        return SpecError(self.source, field, value, expected, self.line_of(*path))

    def check_keys(self, table: dict, allowed: Collection[str], path: KeyPath = ()) -> None:
        """Unknown keys are errors: a typo must not silently fall back to a default."""
        for key, value in table.items():
            if key not in allowed:
                raise self.error((*path, key), value, "one of the keys " + ", ".join(sorted(allowed)))

    def table(self, *path: str, required: bool = False) -> dict:
        """The sub-table at `path` ({} when absent, an error when `required`); a non-table is an error."""
        data: dict = self.data
        for depth, name in enumerate(path):
            where = path[: depth + 1]
            if name not in data:
                if required:
                    raise self.error(where, None, f"a [{'.'.join(where)}] table")
                return {}
            value = data[name]
            if not isinstance(value, dict):
                raise self.error(where, value, "a table")
            data = value
        return data

    def integer(self, data: dict, key: str, path: KeyPath, low: int, high: int,
                default: int | None = None) -> int:
        value = data.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise self.error((*path, key), value, f"an integer in {low}..{high}")
        return value

    def number(self, data: dict, key: str, path: KeyPath, low: float, high: float,
               default: float | None = None, low_open: bool = False) -> float:
        value = data.get(key, default)
        try:
            return validate.number(self.source, key, value, low, high, low_open)
        except SpecError as exc:
            raise self.error((*path, key), value, exc.expected) from None

    def string(self, data: dict, key: str, path: KeyPath, choices: tuple[str, ...] | None = None,
               default: str | None = None) -> str:
        value = data.get(key, default)
        if not isinstance(value, str) or (choices is not None and value not in choices):
            expected = "one of " + ", ".join(choices) if choices else "a string"
            raise self.error((*path, key), value, expected)
        return value
