"""OpenSM options file (opensm.conf): the QoS keys, parsed in OpenSM's own syntax and fallback rules.

One `key value` per line, `#` comments; OpenSM reads only the first token after the key. Per port type
(`ca`, `sw0`, `swe`, `rtr`) OpenSM takes `qos_<type>_<field>`, else the generic `qos_<field>`, else its
built-in default (qos_build_config in osm_qos.c): a max_vls of 0, a high_limit of -1 and a table of
`(null)` mean "not set". Keys that are not QoS options are ignored.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from dualpath.errors import InputError, SpecError

PORT_TYPES = ("ca", "sw0", "swe", "rtr")
FIELDS = ("max_vls", "high_limit", "vlarb_high", "vlarb_low", "sl2vl")
NUM_SLS = 16
VL15 = 15
MAX_VLARB_ENTRIES = 64
UNLIMITED_HIGH_LIMIT = 255
# OSM_DEFAULT_QOS_* in osm_base.h.
BUILTIN = {
    "max_vls": "15",
    "high_limit": "0",
    "vlarb_high": "0:4,1:0,2:0,3:0,4:0,5:0,6:0,7:0,8:0,9:0,10:0,11:0,12:0,13:0,14:0",
    "vlarb_low": "0:0,1:4,2:4,3:4,4:4,5:4,6:4,7:4,8:4,9:4,10:4,11:4,12:4,13:4,14:4",
    "sl2vl": "0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,7",
}
# Upstream OpenSM's OSM_DEFAULT_MAX_OP_VLS (encoded PortInfo:OperVLs, 5 = VL0-14); some vendor builds
# default lower, so shipped configs set max_op_vls explicitly.
DEFAULT_MAX_OP_VLS = 5
OPER_VLS_DATA = {1: 1, 2: 2, 3: 4, 4: 8, 5: 15}  # OperVLs/VLCap encoding -> number of data VLs


@dataclass(frozen=True)
class Where:
    """Where a value came from: a file line, or OpenSM's built-in default (line None)."""

    file: str
    line: int | None
    key: str
    text: str = ""

    def __str__(self) -> str:
        if self.line is None:
            return f"{self.key} (OpenSM built-in default, not set in {self.file})"
        return f"{self.file}:{self.line} {self.key}"

    def fix(self, new_text: str, why: str = "") -> str:
        """The line to write: `key value` in opensm.conf, `name = "value"` in an overrides entry."""
        if self.key.startswith("[[port]]"):
            line = f'{self.key.rsplit(" ", 1)[-1]} = "{new_text}"'
        else:
            line = f"{self.key} {new_text}"
        at = f"{self.file}:{self.line}" if self.line is not None else f"{self.file} (add the line)"
        return f"{at}: {line}" + (f"  # {why}" if why else "")


@dataclass(frozen=True)
class QosTables:
    """One port type's QoS values after OpenSM's fallback rules."""

    max_vls: int
    high_limit: int
    vlarb_high: tuple[tuple[int, int], ...]
    vlarb_low: tuple[tuple[int, int], ...]
    sl2vl: tuple[int, ...]


def parse_int(text: str, where: Where, low: int, high: int) -> int:
    try:
        number = int(text, 0)
    except ValueError:
        raise InputError(where.file, f"{where.key}: {text!r} is not an integer", where.line) from None
    if not low <= number <= high:
        raise SpecError(where.file, where.key, number, f"an integer in {low}..{high}", where.line)
    return number


def parse_vlarb(text: str, where: Where) -> tuple[tuple[int, int], ...]:
    """`VL:weight` pairs, comma-separated; VL 0..14 (VL15 is never arbitrated), weight 0..255."""
    entries = []
    for token in (t for t in text.split(",") if t.strip()):
        vl_text, sep, weight_text = token.partition(":")
        if not sep:
            raise InputError(where.file, f"{where.key}: entry {token!r} is not VL:weight", where.line)
        vl = parse_int(vl_text.strip(), where, 0, 14)
        weight = parse_int(weight_text.strip(), where, 0, 255)
        entries.append((vl, weight))
    if len(entries) > MAX_VLARB_ENTRIES:
        raise SpecError(where.file, where.key, len(entries), f"at most {MAX_VLARB_ENTRIES} VL:weight entries",
                        where.line)
    return tuple(entries)


def parse_sl2vl(text: str, where: Where) -> tuple[int, ...]:
    """Exactly 16 VLs, one per SL (OpenSM maps missing SLs to VL0 with only a warning)."""
    tokens = [t for t in text.split(",") if t.strip()]
    if len(tokens) != NUM_SLS:
        raise SpecError(where.file, where.key, len(tokens), f"{NUM_SLS} comma-separated VLs (one per SL)",
                        where.line)
    return tuple(parse_int(t.strip(), where, 0, VL15) for t in tokens)


def _parse_field(name: str, text: str, where: Where):
    if name == "max_vls":
        return parse_int(text, where, 0, 15) or None  # 0 = not set
    if name == "high_limit":
        value = parse_int(text, where, -1, 255)
        return None if value < 0 else value
    if text == "(null)":
        return None
    return parse_vlarb(text, where) if name.startswith("vlarb") else parse_sl2vl(text, where)


def _parse_bool(text: str, where: Where) -> bool:
    if text.upper() in ("TRUE", "FALSE"):
        return text.upper() == "TRUE"
    raise InputError(where.file, f"{where.key}: {text!r} is not TRUE or FALSE", where.line)


@dataclass(frozen=True)
class OpenSMOptions:
    path: str
    qos: bool
    qos_where: Where
    max_op_vls: int
    max_op_vls_where: Where
    # "qos_ca_max_vls" -> (parsed value, where); only keys present in the file and set.
    settings: dict = field(default_factory=dict)

    def resolve(self, port_type: str) -> tuple[QosTables, dict[str, Where]]:
        """The values OpenSM programs on ports of `port_type`, and where each one came from."""
        if port_type not in PORT_TYPES:
            raise SpecError(self.path, "port type", port_type, "one of " + ", ".join(PORT_TYPES))
        values, sources = {}, {}
        for name in FIELDS:
            for key in (f"qos_{port_type}_{name}", f"qos_{name}"):
                if key in self.settings:
                    values[name], sources[name] = self.settings[key]
                    break
            else:
                where = Where(self.path, None, f"qos_{name}", BUILTIN[name])
                values[name], sources[name] = _parse_field(name, BUILTIN[name], where), where
        return QosTables(**values), sources


def load_opensm(path: str | Path) -> OpenSMOptions:
    path = str(path)
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise InputError(path, f"cannot read: {exc.strerror}") from exc
    qos, qos_where = False, Where(path, None, "qos", "FALSE")
    max_op_vls, op_where = DEFAULT_MAX_OP_VLS, Where(path, None, "max_op_vls", str(DEFAULT_MAX_OP_VLS))
    known = {f"qos_{t}_{f}" for t in PORT_TYPES for f in FIELDS} | {f"qos_{f}" for f in FIELDS}
    settings: dict = {}
    for number, line in enumerate(text.splitlines(), start=1):
        tokens = line.split()
        if not tokens or tokens[0].startswith("#"):
            continue
        key = tokens[0]
        if key not in known and key not in ("qos", "max_op_vls"):
            continue  # not a QoS option: OpenSM's other keys are none of our business
        if len(tokens) < 2 or tokens[1].startswith("#"):
            raise InputError(path, f"{key} has no value", number)
        if len(tokens) > 2 and not tokens[2].startswith("#"):
            raise InputError(path, f"{key}: OpenSM reads only the first token, {' '.join(tokens[1:])!r} has "
                                   "spaces (write the value without spaces)", number)
        where = Where(path, number, key, tokens[1])
        if key == "qos":
            qos, qos_where = _parse_bool(tokens[1], where), where
        elif key == "max_op_vls":
            max_op_vls, op_where = parse_int(tokens[1], where, 1, 5), where
        else:
            name = next(f for f in FIELDS if key.endswith("_" + f))
            parsed = _parse_field(name, tokens[1], where)
            if parsed is None:
                settings.pop(key, None)  # a later "(null)" or 0 line unsets an earlier one, as in OpenSM
            else:
                settings[key] = (parsed, where)
    return OpenSMOptions(path, qos, qos_where, max_op_vls, op_where, settings)
