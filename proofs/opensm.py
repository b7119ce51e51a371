"""OpenSM options file (opensm.conf): the QoS keys, read the way OpenSM reads them.

Per port type (`ca`, `sw0`, `swe`, `rtr`) OpenSM takes `qos_<type>_<field>`, else the generic
`qos_<field>`, else its built-in default (osm_qos.c qos_build_config; osm_subnet.c
subn_verify_qos_set): a max_vls of 0, a negative high_limit and a table of `(null)` mean "not set", and
so does a value OpenSM rejects with "Invalid Cached Option ... Using Default". Values are read with
OpenSM's C parsers (proofs/opensm_rules.py), so a short SL2VL list, a VLArb VL of 15 or a weight of
300 become the table OpenSM programs, with OpenSM's warning in the report (file:line). Only what
OpenSM cannot use at all is refused (exit 2): an unreadable file, or a file that is no options file.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from dualpath.errors import InputError, SpecError, shown
from dualpath.proofs.opensm_file import FGETS_CHARS, KNOWN_OPTIONS, OLD_OPTIONS, refuse_if_foreign, split_line
from dualpath.proofs.opensm_rules import (
    build_sl2vl,
    build_vlarb,
    c_strtol,
    c_strtoul,
    number_note,
    read_int32,
    read_uint32,
    sl2vl_notes,
    vlarb_notes,
)
from dualpath.validate import read_text

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
    """A strict integer for our own formats (overrides): C syntax only, no `_`, no non-ASCII digits."""
    number, end, ok = c_strtol(text.strip())
    if not ok or end != len(text.strip()):
        raise InputError(where.file, f"{where.key}: {shown(text)} is not an integer", where.line)
    if not low <= number <= high:
        raise SpecError(where.file, where.key, number, f"an integer in {low}..{high}", where.line)
    return number


def parse_vlarb(text: str, where: Where) -> tuple[tuple[int, int], ...]:
    """Strict `VL:weight` list (overrides files): VL 0..14, weight 0..255, at most 64 entries."""
    entries = []
    for token in (t for t in text.split(",") if t.strip()):
        vl_text, sep, weight_text = token.partition(":")
        if not sep:
            raise InputError(where.file, f"{where.key}: entry {shown(token)} is not VL:weight", where.line)
        entries.append((parse_int(vl_text.strip(), where, 0, 14), parse_int(weight_text.strip(), where, 0, 255)))
    if len(entries) > MAX_VLARB_ENTRIES:
        raise SpecError(where.file, where.key, len(entries), f"at most {MAX_VLARB_ENTRIES} VL:weight entries",
                        where.line)
    return tuple(entries)


def parse_sl2vl(text: str, where: Where) -> tuple[int, ...]:
    """Strict 16-entry SL2VL list (overrides files, which are ours; opensm.conf follows OpenSM)."""
    tokens = [t for t in text.split(",") if t.strip()]
    if len(tokens) != NUM_SLS:
        raise SpecError(where.file, where.key, len(tokens), f"{NUM_SLS} comma-separated VLs (one per SL)",
                        where.line)
    return tuple(parse_int(t.strip(), where, 0, VL15) for t in tokens)


@dataclass(frozen=True)
class OpenSMWarning:
    """What OpenSM would print (or silently do) about one line; `source` is the rule's origin."""

    where: Where
    message: str
    source: str

    def __str__(self) -> str:
        at = f"{self.where.file}:{self.where.line}" if self.where.line is not None else self.where.file
        return f"{at}: {self.where.key}: {self.message} [{self.source}]"


def _builtin(name: str):
    text = BUILTIN[name]
    if name in ("max_vls", "high_limit"):
        return int(text)
    return build_vlarb(text) if name.startswith("vlarb") else build_sl2vl(text)


def _read_field(name: str, where: Where, warn) -> object | None:
    """The value OpenSM keeps for one qos_* line after subn_verify_*, or None (falls back)."""
    text, prefix = where.text, where.key.rsplit("_" + name, 1)[0]
    if name in ("max_vls", "high_limit"):
        number = read_uint32(text) if name == "max_vls" else read_int32(text)
        note = number_note(text, number, "opts_parse_uint32" if name == "max_vls" else "opts_parse_int32")
        if note:
            warn(where, note.message, note.source)
        if name == "max_vls" and number > 15:
            warn(where, f"Invalid Cached Option: {prefix}_max_vls={number}: Using Default",
                 "osm_subnet.c subn_verify_max_vls")
        if name == "high_limit" and number > 255:
            warn(where, f"Invalid Cached Option: {prefix}_high_limit={number}: Using Default",
                 "osm_subnet.c subn_verify_high_limit")
        ok = 0 < number <= 15 if name == "max_vls" else 0 <= number <= 255
        return number if ok else None  # 0 / negative: "not set", silently, as OpenSM
    if text == "(null)":
        return None  # opts_parse_charp: the "(null)" string unsets
    if name == "sl2vl":
        sl2vl = build_sl2vl(text)
        notes = sl2vl_notes(text, sl2vl)
        value: object = sl2vl
    else:
        vlarb = build_vlarb(text)
        notes, value = vlarb_notes(text, vlarb), vlarb
    for note in notes:
        warn(where, note.message, note.source)
    return value


@dataclass(frozen=True)
class OpenSMOptions:
    path: str
    qos: bool
    qos_where: Where
    max_op_vls: int
    max_op_vls_where: Where
    # "qos_ca_max_vls" -> (value OpenSM keeps, where); only keys present in the file and set.
    settings: dict = field(default_factory=dict)
    warnings: tuple[OpenSMWarning, ...] = ()

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
                values[name] = _builtin(name)
                sources[name] = Where(self.path, None, f"qos_{name}", BUILTIN[name])
        return QosTables(**values), sources


QOS_KEYS = frozenset(f"qos_{t}_{f}" for t in PORT_TYPES for f in FIELDS) | {f"qos_{f}" for f in FIELDS}


def _unknown_key_warning(key: str, where: Where, warn) -> None:
    """OpenSM skips a key that is no option without a word; for QoS-looking keys we say so."""
    name = key.split("=", 1)[0]
    if key in OLD_OPTIONS:
        meant = "QoS on" if where.text == "FALSE" else "QoS off"
        warn(where, f"no_qos is an OpenSM 3.0 option (`no_qos {where.text}` meant {meant}); current OpenSM ignores "
                    "the line: QoS is on only with `qos TRUE`", "osm_subnet.c opt_tbl has `qos`, no `no_qos`")
    elif "=" in key and (name in QOS_KEYS or name in KNOWN_OPTIONS):
        warn(where, f"OpenSM reads the key {shown(key)}, which is no option, and ignores the line: write "
                    f"`{name} {key.split('=', 1)[1] or where.text}`", "osm_subn_parse_conf_file: key ends at a blank")
    elif key.startswith("qos") and key not in KNOWN_OPTIONS:
        warn(where, "not an OpenSM option: OpenSM ignores this line", "osm_subnet.c opt_tbl")


def load_opensm(path: str | Path) -> OpenSMOptions:
    path = str(path)
    text = read_text(path)
    refuse_if_foreign(path, text)
    warnings: list[OpenSMWarning] = []

    def warn(where: Where, message: str, source: str) -> None:
        warnings.append(OpenSMWarning(where, message, source))

    raw: dict[str, Where] = {}  # last line per key wins, as each opts_parse_* overwrites the field
    for number, line in enumerate(text.splitlines(), start=1):
        parsed = split_line(line)
        if parsed is None or parsed[0].startswith("#"):
            continue
        key, value = parsed
        where = Where(path, number, key, value)
        if len(line) > FGETS_CHARS:
            warn(where, f"line longer than {FGETS_CHARS} characters: OpenSM's fgets reads the rest as a new line",
                 "osm_subn_parse_conf_file fgets(line, 1023)")
        if key in QOS_KEYS or key in ("qos", "max_op_vls"):
            if key in raw and raw[key].text != value:
                warn(raw[key], f"set again at line {number}: OpenSM keeps the last value", "opts_parse_*")
            raw[key] = where
        else:
            _unknown_key_warning(key, where, warn)
    qos, qos_where = False, raw.get("qos", Where(path, None, "qos", "FALSE"))
    if "qos" in raw:
        qos = qos_where.text == "TRUE"  # opts_parse_boolean: strcmp("TRUE", value)
        if qos_where.text not in ("TRUE", "FALSE"):
            warn(qos_where, f"{shown(qos_where.text)} is not TRUE: OpenSM reads FALSE and QoS stays off",
                 "osm_subnet.c opts_parse_boolean (exact, case-sensitive TRUE)")
    max_op_vls, op_where = DEFAULT_MAX_OP_VLS, Where(path, None, "max_op_vls", str(DEFAULT_MAX_OP_VLS))
    if "max_op_vls" in raw:
        op_where = raw["max_op_vls"]
        max_op_vls = c_strtoul(op_where.text)[0] & 0xFF  # opts_parse_uint8
        note = number_note(op_where.text, max_op_vls, "opts_parse_uint8")
        if note:
            warn(op_where, note.message, note.source)
        if not 1 <= max_op_vls <= 5:
            raise SpecError(path, "max_op_vls", max_op_vls, "1..5 (PortInfo:OperVLs code; dualpath does not model "
                                                            "what OpenSM programs for other values)", op_where.line)
    settings: dict = {}
    for key, where in raw.items():
        if key in QOS_KEYS:
            name = next(f for f in FIELDS if key.endswith("_" + f))
            kept = _read_field(name, where, warn)
            if kept is not None:
                settings[key] = (kept, where)
    warnings.sort(key=lambda w: w.where.line or 0)
    return OpenSMOptions(path, qos, qos_where, max_op_vls, op_where, settings, tuple(warnings))
