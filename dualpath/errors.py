"""Typed errors: every user mistake becomes one line that names where, what and what was expected.

The CLI catches `DualpathError` and prints `str(err)` then exits 2; anything else is a bug and keeps
its traceback.
"""

from __future__ import annotations

import reprlib

from dualpath.limits import MAX_SHOWN_CHARS

_REPR = reprlib.Repr()
_REPR.maxlevel = 3
_REPR.maxstring = _REPR.maxother = _REPR.maxlong = MAX_SHOWN_CHARS
_MAX_MESSAGE_CHARS = 600
_HUGE_INT_BITS = 4096  # repr() of a longer int is slow or (past 4,300 digits) raises ValueError


def shown(value: object, limit: int = MAX_SHOWN_CHARS) -> str:
    """`repr(value)` for an error line, cut to `limit` characters plus "…(N chars)" with N the full length.

    Safe on anything a parser hands back: a 2 MB string, a 5,000-digit integer, a 50k-deep list.
    """
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > _HUGE_INT_BITS:
        return f"<an integer of {value.bit_length():,} bits>"
    if isinstance(value, (list, tuple, dict, set, frozenset)):
        text = _REPR.repr(value)  # nested levels and long members already abbreviated with "..."
        return text if len(text) <= limit else f"{text[:limit]}…({len(value):,} items)"
    if isinstance(value, str):
        text, size = repr(value[: limit + 1]), len(value) + 2  # quotes included, as repr shows them
    else:
        text = repr(value)
        size = len(text)
    if len(text) <= limit and size <= limit:
        return text
    return f"{text[:limit]}…({size:,} chars)"


def _cut(name: object, limit: int = 200) -> str:
    """A name built from input (a file path, `request <id>`, a key) cut short for an error line."""
    text = str(name)
    return text if len(text) <= limit else f"{text[:limit]}…({len(text):,} chars)"


def _where(source: str, line: int | None) -> str:
    return f"{_cut(source)}:{line}" if line is not None else _cut(source)


class DualpathError(Exception):
    """Base class of errors caused by user input or environment, never by a bug."""

    exit_code = 2


class SpecError(DualpathError, ValueError):
    """A field of a spec or a file has a bad value.

    `source` is a file path, a preset name or a dataclass name; `line` is 1-based when known.
    """

    def __init__(self, source: str, field: str, value: object, expected: str, line: int | None = None):
        self.source = source
        self.field = field
        self.value = value
        self.expected = expected
        self.line = line
        super().__init__(f"{_where(source, line)}: {_cut(field)} = {shown(value)}: expected {expected}")


class InputError(DualpathError, ValueError):
    """A file cannot be read or parsed; the message already names the file and line."""

    def __init__(self, source: str, message: str, line: int | None = None):
        self.source = source
        self.line = line
        where = _where(source, line)
        # The last guard of the one-line promise: a parser's multi-line message, or a value a reader
        # forgot to pass through `shown`, still makes one short line.
        message = " ".join(message.split()) if "\n" in message else message
        if len(message) > _MAX_MESSAGE_CHARS:
            message = f"{message[:_MAX_MESSAGE_CHARS]}…({len(message):,} chars)"
        super().__init__(f"{where}: {message}")


class UnknownNameError(SpecError):
    """A preset, policy or solver name that does not exist; lists the valid ones."""

    def __init__(self, kind: str, name: str, valid: list[str] | tuple[str, ...]):
        super().__init__(kind, "name", name, "one of " + ", ".join(sorted(valid)))


class InfeasibleError(DualpathError):
    """An instance no plan can satisfy; names the request and the constraint."""

    def __init__(self, request: str, constraint: str, detail: str = ""):
        self.request = request
        self.constraint = constraint
        msg = f"request {request} is infeasible: {constraint}"
        super().__init__(msg + (f" ({detail})" if detail else ""))


class MissingExtraError(DualpathError, ImportError):
    """An optional dependency is missing; says which extra installs it."""

    def __init__(self, module: str, extra: str):
        self.module = module
        self.extra = extra
        super().__init__(
            f"{module} is not installed: install the '{extra}' extra "
            f"(pip install 'dualpath[{extra}]', or run make test)"
        )


def require(module: str, extra: str):
    """Import an optional dependency or raise `MissingExtraError` naming the extra."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingExtraError(module, extra) from exc
