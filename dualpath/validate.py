"""Checks shared by every input: the one way an input file is read, and field checks for every spec.

Each failure names the source (and the field, the value and the need), in one line.
"""

from __future__ import annotations

import os
from pathlib import Path

from dualpath.errors import InputError, SpecError


def read_text(path: str | os.PathLike[str]) -> str:
    """An input file's text: an unreadable file or one that is not UTF-8 is an `InputError`, not a traceback."""
    try:
        return Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise InputError(str(path), f"cannot read: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise InputError(str(path), f"not UTF-8 text: {exc.reason}") from exc


def positive(source: str, field: str, value: object, integer: bool = False) -> None:
    kind = "a positive integer" if integer else "a positive number"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise SpecError(source, field, value, kind)
    if integer and not isinstance(value, int):
        raise SpecError(source, field, value, kind)
    if not value > 0:
        raise SpecError(source, field, value, kind)


def non_negative(source: str, field: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise SpecError(source, field, value, "a number >= 0")


def fraction(source: str, field: str, value: object, allow_zero: bool = False) -> None:
    ok = (isinstance(value, (int, float)) and not isinstance(value, bool)
          and (0 <= value <= 1 if allow_zero else 0 < value <= 1))
    if not ok:
        raise SpecError(source, field, value, "a fraction in [0, 1]" if allow_zero else "a fraction in (0, 1]")
