"""Every file reader, in-process, on generated bad inputs: it returns or raises one `DualpathError` whose
message is one line naming the file; never another exception. Cases marked must-reject (a NaN where a
number belongs, a non-UTF-8 file, a key given twice in TOML) must raise."""

from __future__ import annotations

import math
import random
import signal
import tempfile
import tomllib
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dualpath.errors import DualpathError
from tests.fuzz.cases import FORMATS, READERS, bench

SETTINGS = settings(max_examples=25, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
IN_PROCESS = [f for f in FORMATS if f != "secret-file"] + ["secret-file"]
# Special files are the subprocess suite's (test_special_files.py): /dev/zero would fill this process.
SPECIAL = (bench.FIFO, bench.DEVZERO)


def read(family: str, content: bytes | str, must_reject: bool) -> None:
    fmt = FORMATS[family]

    def hang(*_):
        raise TimeoutError(f"{family}: reader still running after 20 s")

    previous = signal.signal(signal.SIGALRM, hang)
    signal.alarm(20)
    try:
        with tempfile.TemporaryDirectory() as folder:
            bench._materialise(Path(folder), {**fmt.others, fmt.target: content})
            try:
                READERS[family](Path(folder) / fmt.target)
            except DualpathError as err:
                text = str(err)
                assert "\n" not in text and len(text) < 2000, text[:300]
                return
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    assert not must_reject, f"{family}: accepted a must-reject input"


def _whole_file(family: str) -> list[tuple[str, bytes | str, bool]]:
    fmt = FORMATS[family]
    return [c for c in bench.whole_file(fmt.base, random.Random(family), fmt.kind) if c[1] not in SPECIAL]


def _document(family: str):
    fmt = FORMATS[family]
    text = fmt.base.decode()
    if fmt.kind == "toml":
        return tomllib.loads(text), lambda d: bench.toml_text(d).encode()
    if fmt.kind == "json":
        import json

        return json.loads(text), lambda d: bench.json_text(d).encode()
    if fmt.kind == "yaml":  # every document under one list, so a path starts with the document's index
        docs = bench._yaml_docs(fmt.base)
        return (docs, bench.yaml_text) if docs is not None else (None, None)
    return None, None


# Values hypothesis draws for a field, beside the benchmark's named bad values.
VALUES = st.one_of(st.sampled_from([v for _, v in bench.BAD_VALUES if not isinstance(v, str) or len(v) < 100]),
                   st.integers(), st.floats(), st.booleans(), st.text(max_size=12),
                   st.lists(st.integers(), max_size=3))


def _must(base: object, value: object, strict_strings: bool) -> bool:
    if bench.is_number(base):
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            return True
        return not math.isfinite(value) or abs(value) >= 1e300  # 64-bit ids and hashes are fine
    return strict_strings and isinstance(base, str) and not isinstance(value, str)


@pytest.mark.parametrize("family", IN_PROCESS)
def test_whole_file_damage(family):
    for label, content, must in _whole_file(family):
        try:
            read(family, content, must)
        except AssertionError as err:
            raise AssertionError(f"{label}: {err}") from None


@pytest.mark.parametrize("family", IN_PROCESS)
@SETTINGS
@given(data=st.data())
def test_field_values(family, data):
    fmt = FORMATS[family]
    doc, dump = _document(family)
    if doc is None:  # line formats: the benchmark's line edits, picked by hypothesis
        edits = list(bench.line_edits(fmt.base.decode(), random.Random(family), 40, fmt.numeric_lines_must_reject))
        _label, text, must = data.draw(st.sampled_from(edits))
        read(family, text.encode(), must)
        return
    paths = [p for p, _ in bench.leaves(doc)]
    path = data.draw(st.sampled_from(paths))
    value = data.draw(VALUES)
    parent = bench._parent(doc, path)
    base = parent[path[-1]]
    parent[path[-1]] = value
    strict = fmt.strict_strings and path[-1] not in fmt.either
    must = _must(base, value, strict) and fmt.fields_must_reject and str(path[0]) not in fmt.free
    read(family, dump(doc), must)


LINE_FORMATS = [f for f in IN_PROCESS if FORMATS[f].kind in ("text", "csv")]
BAD_NUMBERS = ["nan", "inf", "-1", "1e308", "²٣", "9" * 5000, "abc", ""]


@pytest.mark.parametrize("family", LINE_FORMATS)
def test_every_number_of_every_line(family):
    """Exhaustive, not drawn: each number on each line of a line format replaced by each bad number."""
    import re

    fmt = FORMATS[family]
    lines = fmt.base.decode().splitlines()
    for i, line in enumerate(lines):
        if line.lstrip().startswith("#"):
            continue
        for match in re.finditer(r"[0-9]+", line):
            for bad in BAD_NUMBERS:
                edited = [*lines[:i], line[:match.start()] + bad + line[match.end():], *lines[i + 1:]]
                try:
                    read(family, ("\n".join(edited) + "\n").encode(), False)
                except AssertionError as err:
                    raise AssertionError(f"line {i + 1} {line[:60]!r} with {bad[:12]!r}: {err}") from None


@pytest.mark.parametrize("family", IN_PROCESS)
@SETTINGS
@given(content=st.binary(max_size=400))
def test_arbitrary_bytes(family, content):
    read(family, content, False)
