"""Inputs that hang or exhaust a process, through the installed command in a subprocess under a timeout
and an address-space cap (the benchmark's runner): a FIFO, a link to /dev/zero, 50,000-deep nesting and
a 2 MB line as each format's file. Default: one of the four per format, in turn; `slow`: all four."""

from __future__ import annotations

import random
import shutil
import sys
from pathlib import Path

import pytest

from tests.fuzz.cases import FORMATS, bench

DUALPATH = shutil.which("dualpath", path=str(Path(sys.executable).parent)) or "dualpath"
SPECIALS = ("FIFO", "link to /dev/zero", "50k-deep nesting", "2 MB line")
FAMILIES = sorted(FORMATS)


def special_case(family: str, label: str):  # -> bench.Case
    fmt = FORMATS[family]
    content, must = next((c, m) for lbl, c, m in bench.whole_file(fmt.base, random.Random(0), fmt.kind) if lbl == label)
    return bench.Case(family, label, list(fmt.argv), {**fmt.others, fmt.target: content}, must, fmt.target,
                      fmt.sentinel)


def check(family: str, label: str) -> None:
    result = bench.run_case(special_case(family, label), DUALPATH, timeout_s=60.0, mem_bytes=4 << 30)
    assert result.outcome in ("rejected", "accepted"), f"{family} {label}: {result.outcome}\n{result.stderr_tail}"


@pytest.mark.parametrize("family", FAMILIES)
def test_one_special_file_per_format(family):
    check(family, SPECIALS[FAMILIES.index(family) % len(SPECIALS)])


@pytest.mark.slow
@pytest.mark.parametrize("label", SPECIALS)
@pytest.mark.parametrize("family", FAMILIES)
def test_every_special_file_per_format(family, label):
    check(family, label)
