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

from dualpath.errors import InputError, SpecError, shown
from dualpath.limits import MAX_SECONDS, MAX_TOKENS
from dualpath.llm import CostModel, LLMSpec
from dualpath.tomldoc import TomlDoc
from dualpath.validate import integer, number, read_text

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
    return _from_csv(str(path), read_text(path))


def _row(source: str, line: int | None, values: dict, prefix: str = "") -> ProfileRow:
    return ProfileRow(integer(source, prefix + "cached_tokens", values.get("cached_tokens"), 0, MAX_TOKENS, line),
                      integer(source, prefix + "new_tokens", values.get("new_tokens"), 1, MAX_TOKENS, line),
                      number(source, prefix + "seconds", values.get("seconds"), 0, MAX_SECONDS, True, line))


_INT = re.compile(r"[+-]?[0-9]{1,30}")
_FLOAT = re.compile(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]{1,4})?")


def _number(text: str) -> int | float | str:
    """A cell as a number when it is one in ASCII (`int()` and `float()` also take '٣', '1_0' and 'nan')."""
    text = text.strip()
    if _INT.fullmatch(text):
        return int(text)
    if _FLOAT.fullmatch(text):
        return float(text)
    return text


MAX_ROW_CHARS = 4096  # a row is three numbers: anything longer is not a profile


def _cells(source: str, line: str, number: int) -> list[str]:
    if len(line) > MAX_ROW_CHARS:
        raise InputError(source, f"a line of {len(line):,} characters: a profile row has three numbers "
                                 f"(at most {MAX_ROW_CHARS:,} characters)", number)
    try:
        return next(csv.reader([line]))
    except csv.Error as exc:
        raise InputError(source, f"invalid CSV: {exc}", number) from exc


def _from_csv(source: str, text: str) -> list[ProfileRow]:
    lines = [(n, line) for n, line in enumerate(text.splitlines(), start=1)
             if line.strip() and not line.lstrip().startswith("#")]
    if not lines:
        raise InputError(source, "empty profile: expected a header " + ",".join(COLUMNS) + " and rows")
    header_line, header = lines[0]
    names = [c.strip() for c in _cells(source, header, header_line)]
    if sorted(names) != sorted(COLUMNS):
        raise InputError(source, f"header {shown(names)} must name exactly the columns {', '.join(COLUMNS)}",
                         header_line)
    rows = []
    for line_number, line in lines[1:]:
        cells = _cells(source, line, line_number)
        if len(cells) != len(names):
            raise InputError(source, f"{len(cells)} cells, expected {len(names)} ({','.join(names)})", line_number)
        rows.append(_row(source, line_number, {n: _number(c) for n, c in zip(names, cells)}))
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
    # The fit sets prefill MFU and overhead for the base's peak: the three belong together.
    pinned = set(llm.cost_pinned) | {"peak_tflops", "prefill_mfu", "prefill_overhead_s"}
    return dataclasses.replace(llm, cost=cost, cost_pinned=tuple(sorted(pinned)))
