"""Checks shared by every input: the one way an input file is read, and field checks for every spec.

Each failure names the source (and the field, the value and the need), in one line. Numbers are
checked with `low <= value <= high` written so that NaN fails it (`value < 0` lets NaN through), every
count and magnitude has an upper bound from `dualpath.limits`, and bool is never taken for an int.
"""

from __future__ import annotations

import math
import os
import re
import stat
from collections.abc import Iterator

from dualpath import limits
from dualpath.errors import InputError, SpecError

_ASCII_INT = re.compile(r"[+-]?[0-9]{1,24}")  # re.fullmatch on str: [0-9], unlike \d, is ASCII only
_KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))


def _open_regular(path: str | os.PathLike[str]):
    """A binary file object for a regular file; a directory, FIFO, device (a link to /dev/zero) or socket is
    refused before it is opened, since reading one blocks forever or never ends."""
    try:
        _refuse_special(path, os.stat(path).st_mode)  # through links
        # O_NONBLOCK: should the path become a FIFO after the check, open() still returns at once,
        # and the second check, on what was opened, refuses it.
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError as exc:
        raise InputError(str(path), f"cannot read: {exc.strerror or exc}") from exc
    try:
        _refuse_special(path, os.fstat(fd).st_mode)
    except BaseException:
        os.close(fd)
        raise
    return os.fdopen(fd, "rb")


def _refuse_special(path: str | os.PathLike[str], mode: int) -> None:
    if not stat.S_ISREG(mode):
        kind = next((name for test, name in _KINDS if test(mode)), "not a regular file")
        raise InputError(str(path), f"cannot read: {kind}, not a regular file")


def _mib(size: int) -> str:
    return f"{size / limits.MIB:g} MiB"


def read_text(path: str | os.PathLike[str], max_bytes: int = limits.MAX_TEXT_FILE_BYTES,
              limit_name: str = "MAX_TEXT_FILE_BYTES") -> str:
    """An input file's text: an unreadable, special, oversized or non-UTF-8 file is an `InputError`."""
    with _open_regular(path) as f:
        try:
            data = f.read(max_bytes + 1)
        except OSError as exc:
            raise InputError(str(path), f"cannot read: {exc.strerror or exc}") from exc
    if len(data) > max_bytes:
        raise InputError(str(path), f"larger than the {_mib(max_bytes)} limit (dualpath.limits.{limit_name})")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise InputError(str(path), f"not UTF-8 text: {exc.reason} at byte {exc.start}", line) from exc


def read_lines(path: str | os.PathLike[str], max_line_bytes: int = limits.MAX_LINE_BYTES) -> Iterator[tuple[int, str]]:
    """(line number, text) of a file read a line at a time, for inputs that may legitimately be large.

    The file is checked and opened now (a missing file fails at the call); each line is bounded by
    `max_line_bytes` and decoded as it is reached.
    """
    source = str(path)
    f = _open_regular(path)

    def lines() -> Iterator[tuple[int, str]]:
        with f:
            number = 0
            while True:
                number += 1
                try:
                    raw = f.readline(max_line_bytes + 1)
                except OSError as exc:
                    raise InputError(source, f"cannot read: {exc.strerror or exc}", number) from exc
                if not raw:
                    return
                if len(raw) > max_line_bytes and not raw.endswith(b"\n"):
                    raise InputError(source, f"line longer than the {_mib(max_line_bytes)} limit "
                                             "(dualpath.limits.MAX_LINE_BYTES)", number)
                try:
                    yield number, raw.decode("utf-8")
                except UnicodeDecodeError as exc:
                    raise InputError(source, f"not UTF-8 text: {exc.reason} at column {exc.start + 1}",
                                     number) from exc

    return lines()


def check_depth(source: str, data: object, limit: int = limits.MAX_NESTING_DEPTH) -> None:
    """Refuse containers nested deeper than `limit` (walked without recursion, containers only)."""
    stack: list[tuple[object, int]] = [(data, 1)]
    while stack:
        value, depth = stack.pop()
        children = value.values() if isinstance(value, dict) else value if isinstance(value, list) else None
        if children is None:
            continue
        if depth > limit:
            raise InputError(source, f"nested more than {limit} levels deep (dualpath.limits.MAX_NESTING_DEPTH)")
        stack.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))


def is_ascii_int(text: str) -> bool:
    """True for "0".."9" digits only: `str.isdigit` also takes '²' and Arabic digits, which `int()` refuses
    or reads as other numbers."""
    return bool(text) and len(text) <= 24 and text.isascii() and text.isdigit()  # int() refuses > 4,300 digits


def ascii_integer(source: str, field: str, value: object, low: int, high: int, line: int | None = None) -> int:
    """An int, or a string of ASCII digits (an optional sign, surrounding blanks), in low..high.

    For formats that write numbers as text (config_db.json values, env files, OpenSM keys): `int()`
    alone would take '٣' or '1_0' and give a traceback on '²'.
    """
    if isinstance(value, str) and _ASCII_INT.fullmatch(value.strip()):
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise SpecError(source, field, value, f"an integer in {low:,}..{high:,}", line)
    return value


def is_number(value: object) -> bool:
    """An int or float, not a bool (TOML and JSON give bools that Python would count as 0 and 1)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _bound(value: float) -> str:
    return f"{value:,}" if isinstance(value, int) else f"{value:g}"


def _span(low: float, high: float, low_open: bool = False) -> str:
    return f"{'(' if low_open else '['}{_bound(low)}, {_bound(high)}]"


def _capped(expected: str, cap: str | None) -> str:
    return f"{expected} (dualpath.limits.{cap})" if cap else expected


def integer(source: str, field: str, value: object, low: int, high: int, line: int | None = None,
            cap: str | None = None) -> int:
    """`value` as an int in low..high, else a `SpecError` naming the range (and `cap`, the limit behind `high`)."""
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise SpecError(source, field, value, _capped(f"an integer in {low:,}..{high:,}", cap), line)
    return value


def number(source: str, field: str, value: object, low: float, high: float, low_open: bool = False,
           line: int | None = None, cap: str | None = None) -> float:
    """`value` as a finite float in [low, high] (or (low, high]); NaN and ±inf are refused."""
    if is_number(value):
        assert isinstance(value, (int, float))
        if (low < value if low_open else low <= value) and value <= high and math.isfinite(value):
            return float(value)
    raise SpecError(source, field, value, _capped(f"a number in {_span(low, high, low_open)}", cap), line)


def positive(source: str, field: str, value: object, integer: bool = False, cap: str = "MAX_BYTES") -> None:
    """A positive number (or integer) at most the named limit `cap` of `dualpath.limits`."""
    top = getattr(limits, cap)
    kind = "a positive integer" if integer else "a positive number"
    ok = is_number(value) and (isinstance(value, int) or not integer)
    if not ok or not 0 < value <= top or not math.isfinite(value):  # type: ignore[operator, arg-type]
        raise SpecError(source, field, value, _capped(f"{kind} <= {_bound(top)}", cap))


def non_negative(source: str, field: str, value: object, cap: str = "MAX_SECONDS") -> None:
    number(source, field, value, 0, getattr(limits, cap), cap=cap)


def fraction(source: str, field: str, value: object, allow_zero: bool = False) -> None:
    ok = is_number(value) and (0 <= value <= 1 if allow_zero else 0 < value <= 1)  # type: ignore[operator]
    if not ok:
        raise SpecError(source, field, value, "a fraction in [0, 1]" if allow_zero else "a fraction in (0, 1]")


__all__ = ["ascii_integer", "check_depth", "fraction", "integer", "is_ascii_int", "is_number", "non_negative", "number",
           "positive", "read_lines", "read_text"]
