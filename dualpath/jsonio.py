"""JSON files with a schema version: one loader for plans, traces and reports."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from dualpath.errors import InputError


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Write via a temp file and rename so a crash never leaves half a file behind."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    except OSError as exc:
        raise InputError(str(path), f"cannot write: {exc.strerror}") from exc
    try:
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
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise InputError(str(path), f"cannot read: {exc.strerror}") from exc
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
