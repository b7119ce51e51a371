"""OpenSM's own reading of a QoS value, rule by rule, with the warnings OpenSM prints.

Sources (linux-rdma/opensm):
- opensm/osm_subnet.c: opts_parse_uint32 (qos_*max_vls: strtoul, trailing text ignored),
  opts_parse_int32 (qos_*high_limit: strtol), opts_parse_boolean (TRUE only when the value is exactly
  "TRUE"), opts_parse_charp ("(null)" unsets), subn_verify_max_vls / _high_limit / _vlarb / _sl2vl
  (the "Invalid Cached Option" and "Warning: Cached Option" lines).
- opensm/osm_qos.c: parse_one_unsigned (strtoul, then skip one character whatever it is),
  parse_vlarb_entry (VL = value % 15, weight = (uint8_t) value), parse_sl2vl_entry (VL & 0xf per SL,
  missing SLs read as 0), qos_build_config (64 VLArb entries, 16 SL2VL entries).
We copy the C parsers rather than "fix" them: the tables we prove are the tables OpenSM programs.
"""

from __future__ import annotations

from dataclasses import dataclass

from dualpath.errors import shown

C_SPACE = " \t\n\v\f\r"  # isspace() in the C locale: no Unicode spaces
ULONG = 1 << 64
VLARB_ENTRIES = 64  # 2 * IB_NUM_VL_ARB_ELEMENTS_IN_BLOCK
NUM_SLS = 16


@dataclass(frozen=True)
class Note:
    """One warning about one value; `source` names the OpenSM function (or ours) it comes from."""

    message: str
    source: str


def _digits(text: str, pos: int, base: int) -> tuple[int, int]:
    value, start = 0, pos
    while pos < len(text):
        ch = text[pos].lower()
        digit = "0123456789abcdef".find(ch) if ch.isascii() else -1  # strtoul takes ASCII digits only
        if digit < 0 or digit >= base:
            break
        value, pos = value * base + digit, pos + 1
    return value, (pos if pos > start else -1)


def c_strtol(text: str, pos: int = 0) -> tuple[int, int, bool]:
    """strtol(text + pos, &end, 0) on a 64-bit libc: (value, end, any digits read).

    Value is the mathematical result (clamping to LONG range is left to callers that care)."""
    p = pos
    while p < len(text) and text[p] in C_SPACE:
        p += 1
    sign = 1
    if p < len(text) and text[p] in "+-":
        sign, p = (-1 if text[p] == "-" else 1), p + 1
    if text[p:p + 2].lower() == "0x" and _digits(text, p + 2, 16)[1] >= 0:
        value, end = _digits(text, p + 2, 16)
    elif text[p:p + 1] == "0":
        value, end = _digits(text, p, 8)  # "08" reads 0 and stops at the 8, as strtoul does
    else:
        value, end = _digits(text, p, 10)
    if end < 0:
        return 0, pos, False  # no conversion: end points at the very start, spaces included
    return sign * value, end, True


def c_strtoul(text: str, pos: int = 0) -> tuple[int, int, bool]:
    """strtoul: like strtol, but a negative value wraps modulo 2**64 and overflow gives ULONG_MAX."""
    value, end, ok = c_strtol(text, pos)
    if abs(value) >= ULONG:
        return ULONG - 1, end, ok  # ERANGE: ULONG_MAX whatever the sign
    return value % ULONG, end, ok


def read_uint32(text: str) -> int:
    """opts_parse_uint32: strtoul(value, NULL, 0) stored in a uint32_t."""
    return c_strtoul(text)[0] % (1 << 32)


def read_int32(text: str) -> int:
    """opts_parse_int32: strtol(value, NULL, 0) (clamped to LONG range) stored in an int32_t."""
    value = max(-(1 << 63), min((1 << 63) - 1, c_strtol(text)[0])) % (1 << 32)
    return value - (1 << 32) if value >= 1 << 31 else value


def number_note(text: str, read: int, parser: str) -> Note | None:
    """Our warning for a number OpenSM reads differently than it is written (e.g. 2_40 -> 2); `parser`
    names the opts_parse_* function (none of them checks where strtol/strtoul stopped)."""
    _, end, ok = c_strtol(text)
    rest = text[end:].strip()
    if ok and (not rest or rest.startswith("#")):  # a trailing comment is read away harmlessly
        return None
    conv = "strtol" if parser == "opts_parse_int32" else "strtoul"
    reading = f"reads {read}" if ok else f"finds no number and uses {read}"
    ignored = f" and ignores {shown(rest)}" if ok else ""
    return Note(f"{shown(text)} is not a C integer: OpenSM's {conv} {reading}{ignored}",
                f"osm_subnet.c {parser}: {conv}(value, NULL, 0), end not checked")


def _one_unsigned(text: str, pos: int) -> tuple[int, int]:
    """osm_qos.c parse_one_unsigned: strtoul, then step over one character (the delimiter, or not)."""
    value, end, _ = c_strtoul(text, pos)
    if end < len(text):
        end += 1
    return value % (1 << 32), end


def build_vlarb(text: str) -> tuple[tuple[int, int], ...]:
    """The VLArb entries qos_build_config programs from `text` (padding (0, 0) entries left out)."""
    entries, pos = [], 0
    for _ in range(VLARB_ENTRIES):
        if pos >= len(text):
            break  # the rest reads as VL 0 weight 0: a skipped entry
        vl, pos = _one_unsigned(text, pos)
        weight, pos = _one_unsigned(text, pos)
        entries.append((vl % 15, weight & 0xFF))
    while entries and entries[-1] == (0, 0):
        entries.pop()
    return tuple(entries)


def build_sl2vl(text: str) -> tuple[int, ...]:
    """The 16 SL->VL entries qos_build_config programs: missing SLs read 0, each VL keeps 4 bits."""
    vls, pos = [], 0
    for _ in range(NUM_SLS):
        value, pos = _one_unsigned(text, pos)
        vls.append(value & 0xF)
    return tuple(vls)


def _tokens(text: str) -> list[str]:
    return [t for t in text.replace("\n", ",").split(",") if t]  # strtok_r(str, ",\n"): empty tokens vanish


def vlarb_notes(text: str, programmed: tuple[tuple[int, int], ...]) -> list[Note]:
    """subn_verify_vlarb's warnings, plus what OpenSM then programs for an out-of-range entry."""
    src, notes = "osm_subnet.c subn_verify_vlarb", []
    for tok in _tokens(text):
        vl_text, sep, weight_text = tok.partition(":")
        if not sep:
            notes.append(Note(f"vl:weight={shown(tok)} improperly formatted", src))
            continue
        for name, part, high, fold in (("vl", vl_text, 14, "VL % 15 (osm_qos.c parse_vlarb_entry)"),
                                       ("weight", weight_text, 255, "(uint8_t) weight (parse_vlarb_entry)")):
            value, end, ok = c_strtol(part)
            if not ok or end < len(part):
                notes.append(Note(f"{name}={shown(part)} improperly formatted", src))
            elif not 0 <= value <= high:
                read = value % (1 << 32) % 15 if name == "vl" else value % (1 << 32) & 0xFF
                notes.append(Note(f"{name}={shown(value)} out of range: OpenSM programs {read} ({fold})", src))
    if len(_tokens(text)) > VLARB_ENTRIES:
        notes.append(Note(f"> {VLARB_ENTRIES} listed: excess vl:weight pairs will be dropped", src))
    if notes:
        notes.append(Note("OpenSM programs " + (",".join(f"{v}:{w}" for v, w in programmed) or "no entries"),
                          "osm_qos.c qos_build_config"))
    return notes


def sl2vl_notes(text: str, programmed: tuple[int, ...]) -> list[Note]:
    """subn_verify_sl2vl's warnings; a short list programs VL 0 for the SLs it leaves out."""
    src, notes, tokens = "osm_subnet.c subn_verify_sl2vl", [], _tokens(text)
    for tok in tokens:
        value, end, ok = c_strtol(tok)
        if not ok or end < len(tok):
            notes.append(Note(f"vl={shown(tok)} improperly formatted", src))
        elif not 0 <= value <= 15:
            notes.append(Note(f"vl={shown(value)} out of range: OpenSM programs VL {value % (1 << 32) & 0xF}", src))
    if len(tokens) < NUM_SLS:
        missing = f"SL{len(tokens)}-15" if len(tokens) < NUM_SLS - 1 else "SL15"
        notes.append(Note(f"< 16 VLs listed: OpenSM maps {missing} to VL 0 (osm_qos.c parse_sl2vl_entry)", src))
    elif len(tokens) > NUM_SLS:
        notes.append(Note("> 16 listed: excess VLs will be dropped", src))
    if notes:
        notes.append(Note("OpenSM programs " + ",".join(map(str, programmed)), "osm_qos.c qos_build_config"))
    return notes
