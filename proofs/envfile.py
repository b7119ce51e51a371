"""`KEY=VALUE` environment files (what a launcher sources): values with the line they came from.

An `EnvSource` is one process environment (an env file, or one container of a Kubernetes pod spec);
the library checks run once per source, since each process reads only its own.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from dualpath.errors import InputError, shown
from dualpath.validate import read_text

_LINE = re.compile(r"^\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_.]*)\s*=\s*(.*?)\s*$")


@dataclass(frozen=True)
class EnvValue:
    value: str | None  # None: set from somewhere we cannot read (a pod's valueFrom)
    file: str
    line: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}"


@dataclass(frozen=True)
class EnvSource:
    """One process environment: a label for reports, its values, and the file to edit."""

    label: str
    values: dict
    file: str

    def assignment(self, key: str, value) -> str:
        """How to write `key=value` in this source: a KEY=VALUE line, or a pod spec env entry."""
        if self.label == self.file:
            return f"{key}={value}"
        return f'{{name: {key}, value: "{value}"}}  # env of {self.label.removeprefix(self.file).strip()}'


def _unquote(text: str, path: str, number: int) -> str:
    if text[:1] in ("'", '"'):
        if len(text) < 2 or text[-1] != text[0]:
            raise InputError(path, f"unterminated quote in {shown(text)}", number)
        return text[1:-1]
    return text.split(" #", 1)[0].strip()


def load_env(path: str | Path) -> dict[str, EnvValue]:
    """Later lines win, as in a shell. Blank lines and `#` comments are skipped."""
    path = str(path)
    text = read_text(path)
    values: dict[str, EnvValue] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        match = _LINE.match(line)
        if not match:
            raise InputError(path, f"expected KEY=VALUE, got {shown(line.strip())}", number)
        values[match.group(1)] = EnvValue(_unquote(match.group(2), path, number), path, number)
    return values


def env_source(path: str | Path) -> EnvSource:
    return EnvSource(str(path), load_env(path), str(path))
