"""TOML files read with `tomllib`, plus the line of every key so errors can say file:line.

tomllib keeps no positions, so a light line scanner maps key paths (tables, arrays of tables by
index, dotted keys, keys inside one-line inline tables) to the line that defines them.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from dualpath.errors import InputError, SpecError

_HEADER = re.compile(r"^\s*(\[\[?)\s*([^\]]+?)\s*\]\]?\s*(#.*)?$")
_KEY = re.compile(r"""^\s*((?:[A-Za-z0-9_\-]+|"[^"]*"|'[^']*')(?:\s*\.\s*(?:[A-Za-z0-9_\-]+|"[^"]*"|'[^']*'))*)\s*=""")
_INLINE_KEY = re.compile(r"""[{,]\s*([A-Za-z0-9_\-]+|"[^"]*")\s*=""")
_AT_LINE = re.compile(r"at line (\d+)")


def _split_key(text: str) -> tuple[str, ...]:
    parts = re.findall(r"""[A-Za-z0-9_\-]+|"[^"]*"|'[^']*'""", text)
    return tuple(p.strip("\"'") for p in parts)


def _bracket_balance(text: str) -> int:
    text = re.sub(r'"[^"]*"|\'[^\']*\'', "", text).split("#", 1)[0]
    return text.count("[") - text.count("]")


class TomlDoc:
    """A parsed TOML file: `data` as tomllib gives it, `line_of(*path)` for error messages."""

    def __init__(self, path: str | Path, text: str | None = None):
        self.path = str(path)
        if text is None:
            try:
                text = Path(path).read_text()
            except OSError as exc:
                raise InputError(self.path, f"cannot read: {exc.strerror}") from exc
        self.text = text
        try:
            self.data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            match = _AT_LINE.search(str(exc))
            message = _AT_LINE.sub("", str(exc)).replace("()", "").strip(" ,")
            raise InputError(self.path, f"invalid TOML: {message}",
                             int(match.group(1)) if match else None) from exc
        self._lines: dict[tuple, int] | None = None

    def _index(self) -> dict[tuple, int]:
        lines: dict[tuple, int] = {}
        counters: dict[tuple, int] = {}
        table: tuple = ()
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
            path = table + _split_key(key.group(1))
            lines.setdefault(path, number)
            rest = line[key.end():]
            depth = max(0, _bracket_balance(rest))
            if "{" in rest:
                for inner in _INLINE_KEY.finditer(rest):
                    lines.setdefault((*path, inner.group(1).strip('"')), number)
        return lines

    def line_of(self, *path) -> int | None:
        """Line defining `path` (or its nearest enclosing table), None if unknown."""
        if self._lines is None:
            self._lines = self._index()
        path = tuple(path)
        while path:
            if path in self._lines:
                return self._lines[path]
            path = path[:-1]
        return None

    def error(self, path: tuple, value: object, expected: str) -> SpecError:
        field = ".".join(str(p) for p in path if not isinstance(p, int)) or "(top level)"
        return SpecError(self.path, field, value, expected, self.line_of(*path))

    def check_keys(self, table: dict, allowed: set[str] | frozenset[str], path: tuple = ()) -> None:
        """Unknown keys are errors: a typo must not silently fall back to a default."""
        for key, value in table.items():
            if key not in allowed:
                raise self.error((*path, key), value, "one of " + ", ".join(sorted(allowed)))

    def table(self, data: dict, key: str, path: tuple = (), required: bool = False) -> dict:
        value = data.get(key)
        if value is None:
            if required:
                raise self.error((*path, key), None, f"a [{'.'.join(map(str, (*path, key)))}] table")
            return {}
        if not isinstance(value, dict):
            raise self.error((*path, key), value, "a table")
        return value

    def integer(self, data: dict, key: str, path: tuple, low: int, high: int,
                default: int | None = None) -> int:
        value = data.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise self.error((*path, key), value, f"an integer in {low}..{high}")
        return value

    def number(self, data: dict, key: str, path: tuple, low: float, high: float,
               default: float | None = None, low_open: bool = False) -> float:
        value = data.get(key, default)
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        ok = ok and (low < value if low_open else low <= value) and value <= high
        if not ok:
            bound = "(" if low_open else "["
            raise self.error((*path, key), value, f"a number in {bound}{low}, {high}]")
        return float(value)

    def string(self, data: dict, key: str, path: tuple, choices: tuple[str, ...] | None = None,
               default: str | None = None) -> str:
        value = data.get(key, default)
        if not isinstance(value, str) or (choices is not None and value not in choices):
            expected = "one of " + ", ".join(choices) if choices else "a string"
            raise self.error((*path, key), value, expected)
        return value
