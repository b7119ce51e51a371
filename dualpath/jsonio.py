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

from dualpath.errors import InputError
from dualpath.validate import read_text

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


def read_versioned(path: str | os.PathLike, kind: str, version: int) -> dict:
    """Load a JSON document of `kind`, refusing other kinds and newer schema versions."""
    text = read_text(path)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(str(path), f"invalid JSON: {exc.msg}", exc.lineno) from exc
    check_versioned(str(path), data, kind, version)
    return data


def check_versioned(source: str, data: object, kind: str, version: int) -> None:
    if not isinstance(data, dict) or data.get("kind") != kind:
        found = data.get("kind") if isinstance(data, dict) else type(data).__name__
        raise InputError(source, f"expected a dualpath {kind} document, found kind {found!r}")
    found_version = data.get("schema_version")
    if not isinstance(found_version, int) or found_version > version:
        raise InputError(source, f"schema_version {found_version!r} not supported (this build reads <= {version})")
