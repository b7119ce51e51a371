"""JSON objects read back into dataclasses: every field checked against its annotation, in one line.

Plans and traces are JSON documents a user may edit or hand over; `Assignment(**row)` would take
`pe_read_bytes: "abc"` or `meta: "x"` and fail later, far from the file. `fields_of` checks each key
against the dataclass's annotations (str, int, float, bool, dict, each optionally `| None`): unknown
and missing keys, wrong types, NaN/±inf and out-of-range numbers become a `SpecError` naming the
file, the field's path (`assignments[3].pe_read_bytes`), the value and what was expected.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Mapping
from typing import Any

from dualpath.errors import SpecError
from dualpath.limits import MAX_BYTES
from dualpath.validate import integer, number

# Ranges when a caller names none: the integers a JSON number carries exactly (RFC 8259), and times or
# quantities that are finite and non-negative (a plan's or trace's seconds, bytes and tokens).
INT_RANGE = (-(2**53 - 1), 2**53 - 1)
FLOAT_RANGE = (0.0, float(MAX_BYTES))
SIGNED_RANGE = (-float(MAX_BYTES), float(MAX_BYTES))  # times relative to an origin a run chose


def _typed(source: str, field: str, kind: str, value: object, bounds: tuple[float, float] | None,
           float_range: tuple[float, float]) -> Any:
    if kind.endswith(" | None"):
        if value is None:
            return None
        kind = kind[: -len(" | None")]
    if kind == "str":
        if not isinstance(value, str):
            raise SpecError(source, field, value, "a string")
        return value
    if kind == "bool":
        if not isinstance(value, bool):
            raise SpecError(source, field, value, "true or false")
        return value
    if kind == "int":
        low, high = bounds or INT_RANGE
        return integer(source, field, value, int(low), int(high))
    if kind == "float":
        low, high = bounds or float_range
        return number(source, field, value, low, high)
    if kind == "dict":
        if not isinstance(value, dict):
            raise SpecError(source, field, value, "a JSON object")
        return value
    raise TypeError(f"{field}: annotation {kind!r} is not checked by fields_of (pass it in `handled`)")


def fields_of(source: str, where: str, cls: type, row: object, *,
              bounds: Mapping[str, tuple[float, float]] | None = None,
              handled: Collection[str] = (), ignored: Collection[str] = (),
              float_range: tuple[float, float] = FLOAT_RANGE) -> dict[str, Any]:
    """Keyword arguments for dataclass `cls` from the JSON object `row`, each value checked.

    `where` prefixes field names in messages ("assignments[3]"); `bounds`: per-field (low, high);
    `handled`: fields the caller converts itself (left out of the result, but not unknown);
    `ignored`: keys the document may carry that are no field (derived values such as a plan's `gap`);
    `float_range`: the bounds of float fields `bounds` does not name.
    """
    prefix = f"{where}." if where else ""
    if not isinstance(row, dict):
        raise SpecError(source, where or "(top level)", row, f"a JSON object ({cls.__name__})")
    known = {f.name: f for f in dataclasses.fields(cls)}
    out: dict[str, Any] = {}
    for key, value in row.items():
        spec = known.get(key)
        if spec is None:
            if key in ignored:
                continue
            raise SpecError(source, f"{prefix}{key}", value, "one of the keys " + ", ".join(known))
        if key not in handled:
            kind = spec.type if isinstance(spec.type, str) else spec.type.__name__
            out[key] = _typed(source, f"{prefix}{key}", kind, value, (bounds or {}).get(key), float_range)
    for name, spec in known.items():
        required = spec.default is dataclasses.MISSING and spec.default_factory is dataclasses.MISSING
        if required and name not in row:
            raise SpecError(source, f"{prefix}{name}", None, "a value (required)")
    return out


def list_of(source: str, field: str, value: object) -> list:
    """A JSON array, else a `SpecError`."""
    if not isinstance(value, list):
        raise SpecError(source, field, value, "a JSON array")
    return value
