"""JSON files with a schema version: one loader for plans, traces and reports, one writer for all outputs.

Every document a command writes carries `kind` and `schema_version` (see `versioned`). The path `-`
means stdout; a path that exists and is not a regular file (a FIFO, `/dev/stdout`) is written in place,
since renaming a temp file over it would replace the device or pipe with a plain file.
"""

from __future__ import annotations

import json
import os
import stat
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager, redirect_stdout
from pathlib import Path
from typing import Any, TextIO

from dualpath.errors import InputError, shown
from dualpath.limits import MAX_DOCUMENT_BYTES, MAX_NESTING_DEPTH
from dualpath.validate import check_depth, read_text

STDOUT = "-"
_STDOUT_NAMES = (STDOUT, "/dev/stdout")  # both mean this process's stdout: written through sys.stdout, in order
_json_stdouts: list[TextIO] = []  # the real stdout while `json_owns_stdout` sends other output to stderr


@contextmanager
def json_owns_stdout(path: str | os.PathLike | None) -> Iterator[None]:
    """With `--json -` stdout must carry only the JSON: tables and progress lines go to stderr meanwhile."""
    if path is None or str(path) not in _STDOUT_NAMES:
        yield
        return
    _json_stdouts.append(sys.stdout)
    try:
        with redirect_stdout(sys.stderr):
            yield
    finally:
        _json_stdouts.pop()


def versioned(kind: str, payload: dict[str, Any], version: int = 1) -> dict[str, Any]:
    """`payload` with `kind` and `schema_version` first, as `read_versioned` expects them."""
    return {"kind": kind, "schema_version": version, **payload}


def _umask() -> int:
    try:  # Linux reports it without changing it, which matters while engine threads create files
        with open("/proc/self/status") as f:
            return next(int(line.split()[1], 8) for line in f if line.startswith("Umask:"))
    except (OSError, StopIteration, ValueError, IndexError):
        pass
    mask = os.umask(0o022)  # elsewhere it can only be read by setting it: set it back at once
    os.umask(mask)
    return mask


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Write via a temp file and rename so a crash never leaves half a file behind; `-` is stdout."""
    if str(path) in _STDOUT_NAMES:
        out = _json_stdouts[-1] if _json_stdouts else sys.stdout
        out.write(text)
        out.flush()
        return
    try:
        mode: int | None = os.stat(path).st_mode  # through symlinks: /dev/stdout is one
    except OSError:
        mode = None
    if mode is not None and not stat.S_ISREG(mode):
        try:
            with open(path, "w") as f:
                f.write(text)
        except OSError as exc:
            raise InputError(str(path), f"cannot write: {exc.strerror}") from exc
        return
    path = Path(os.path.realpath(path))  # the rename replaces a link's target, not the link
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    except OSError as exc:
        raise InputError(str(path), f"cannot write: {exc.strerror}") from exc
    try:
        # mkstemp makes 0600; a replaced file keeps its mode, a new one gets what open() would give it.
        os.fchmod(fd, stat.S_IMODE(mode) if mode is not None else 0o666 & ~_umask())
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json_atomic(path: str | os.PathLike, payload: dict | list) -> None:
    write_text_atomic(path, json.dumps(payload, indent=1) + "\n")


def parse_json(source: str, text: str, line: int | None = None) -> Any:
    """JSON text as Python values, every failure an `InputError` naming `source` (and `line`, for JSONL).

    Refused beyond what `json` refuses: integers of more than 4,300 digits (Python's int conversion
    limit) and nesting deeper than `MAX_NESTING_DEPTH`. NaN and Infinity literals parse (our own traces
    write NaN for an empty statistic); the field checks refuse them where a number must be finite.
    """
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        where = f" (column {exc.colno})" if line is not None else ""
        raise InputError(source, f"invalid JSON: {exc.msg}{where}", exc.lineno if line is None else line) from exc
    except RecursionError as exc:
        raise InputError(source, f"nested more than {MAX_NESTING_DEPTH} levels deep "
                                 "(dualpath.limits.MAX_NESTING_DEPTH)", line) from exc
    except ValueError as exc:  # int()'s 4,300-digit limit, raised through the decoder
        raise InputError(source, "invalid JSON: an integer of more than 4,300 digits", line) from exc
    check_depth(source if line is None else f"{source}:{line}", data)
    return data


def read_json(path: str | os.PathLike, max_bytes: int = MAX_DOCUMENT_BYTES) -> Any:
    """A JSON file's value, read and parsed by the shared rules (`read_text`, `parse_json`)."""
    return parse_json(str(path), read_text(path, max_bytes, "MAX_DOCUMENT_BYTES"))


def read_versioned(path: str | os.PathLike, kind: str, version: int) -> dict:
    """Load a JSON document of `kind`, refusing other kinds and newer schema versions."""
    data = read_json(path)
    check_versioned(str(path), data, kind, version)
    return data


def check_versioned(source: str, data: object, kind: str, version: int) -> None:
    if not isinstance(data, dict) or data.get("kind") != kind:
        found = data.get("kind") if isinstance(data, dict) else type(data).__name__
        raise InputError(source, f"expected a dualpath {kind} document, found kind {shown(found)}")
    found_version = data.get("schema_version")
    if isinstance(found_version, bool) or not isinstance(found_version, int) or not 1 <= found_version <= version:
        raise InputError(source, f"schema_version {shown(found_version)} not supported "
                                 f"(this build reads 1..{version})")
