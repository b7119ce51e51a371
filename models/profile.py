"""Profile tables: measured prefill times that calibrate a model's cost model via `CostModel.fit`.

CSV, a header naming the three columns, one profiled prefill per row (`#` starts a comment line):

    cached_tokens,new_tokens,seconds
    0,512,0.061
    16384,512,0.094

or TOML, one `[[row]]` table per profiled prefill with the same three keys.
"""

from __future__ import annotations

import csv
import dataclasses
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dualpath.errors import InputError, SpecError
from dualpath.llm import CostModel, LLMSpec
from dualpath.tomldoc import TomlDoc

COLUMNS = ("cached_tokens", "new_tokens", "seconds")


@dataclass(frozen=True)
class ProfileRow:
    cached_tokens: int
    new_tokens: int
    seconds: float


def load_profile(path: str | Path) -> list[ProfileRow]:
    path = Path(path)
    if path.suffix.lower() == ".toml":
        return _from_toml(TomlDoc.read(path))
    try:
        text = path.read_text()
    except OSError as exc:
        raise InputError(str(path), f"cannot read: {exc.strerror or exc}") from exc
    return _from_csv(str(path), text)


def _row(source: str, line: int | None, values: dict, prefix: str = "") -> ProfileRow:
    # Any: the values come straight from a file; the checks below are what makes them typed.
    cached: Any = values.get("cached_tokens")
    new: Any = values.get("new_tokens")
    seconds: Any = values.get("seconds")
    for name, value, ok, expected in (
        ("cached_tokens", cached, isinstance(cached, int) and cached >= 0, "an integer >= 0"),
        ("new_tokens", new, isinstance(new, int) and new >= 1, "an integer >= 1"),
        ("seconds", seconds, isinstance(seconds, (int, float)) and seconds > 0, "a positive number"),
    ):
        if isinstance(value, bool) or not ok:
            raise SpecError(source, prefix + name, value, expected, line)
    return ProfileRow(cached, new, float(seconds))


def _number(text: str):
    text = text.strip()
    try:
        return int(text)
    except ValueError:
        try:
            return float(text)
        except ValueError:
            return text


def _from_csv(source: str, text: str) -> list[ProfileRow]:
    lines = [(n, line) for n, line in enumerate(text.splitlines(), start=1)
             if line.strip() and not line.lstrip().startswith("#")]
    if not lines:
        raise InputError(source, "empty profile: expected a header " + ",".join(COLUMNS) + " and rows")
    header_line, header = lines[0]
    names = [c.strip() for c in next(csv.reader([header]))]
    if sorted(names) != sorted(COLUMNS):
        raise InputError(source, f"header {names} must name exactly the columns {', '.join(COLUMNS)}",
                         header_line)
    rows = []
    for number, line in lines[1:]:
        cells = next(csv.reader([line]))
        if len(cells) != len(names):
            raise InputError(source, f"{len(cells)} cells, expected {len(names)} ({','.join(names)})", number)
        rows.append(_row(source, number, {n: _number(c) for n, c in zip(names, cells)}))
    return rows


def _from_toml(doc: TomlDoc) -> list[ProfileRow]:
    doc.check_keys(doc.data, {"row"})
    table = doc.data.get("row")
    if not isinstance(table, list) or not table:
        raise doc.error(("row",), table, "one or more [[row]] tables")
    headers = [n for n, line in enumerate(doc.text.splitlines(), start=1) if re.match(r"^\s*\[\[\s*row\s*\]\]", line)]
    rows = []
    for index, values in enumerate(table):
        line = headers[index] if index < len(headers) else None
        if not isinstance(values, dict):
            raise SpecError(doc.source, f"row[{index}]", values, "a table with " + ", ".join(COLUMNS), line)
        for key in values:
            if key not in COLUMNS:
                raise SpecError(doc.source, f"row[{index}].{key}", values[key], "one of " + ", ".join(COLUMNS), line)
        rows.append(_row(doc.source, line, values, prefix=f"row[{index}]."))
    return rows


def calibrate(llm: LLMSpec, rows: list[ProfileRow]) -> LLMSpec:
    """`llm` with prefill MFU and per-batch overhead fitted to the measured rows (least squares)."""
    per_gpu = [(llm.prefill_flops(r.cached_tokens, r.new_tokens) / llm.gpus_per_engine, r.seconds) for r in rows]
    cost: CostModel = CostModel.fit(per_gpu, base=llm.cost)
    return dataclasses.replace(llm, cost=cost)
