"""Typed errors: every user mistake becomes one line that names where, what and what was expected.

The CLI catches `DualpathError` and prints `str(err)` then exits 2; anything else is a bug and keeps
its traceback.
"""

from __future__ import annotations


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
        where = f"{source}:{line}" if line is not None else source
        super().__init__(f"{where}: {field} = {value!r}: expected {expected}")


class InputError(DualpathError, ValueError):
    """A file cannot be read or parsed; the message already names the file and line."""

    def __init__(self, source: str, message: str, line: int | None = None):
        self.source = source
        self.line = line
        where = f"{source}:{line}" if line is not None else source
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
