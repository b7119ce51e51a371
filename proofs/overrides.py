"""Per-switch / per-port QoS overrides (TOML) for fabrics whose ports differ.

    [[port]]
    node = "leaf-0001"          # switch or host name
    ports = "1-36"              # a number, a list, or ranges "1-4,7"
    type = "swe"                # ca | sw0 | swe | rtr (default swe)
    vl_cap = 8                  # data VLs the hardware supports (PortInfo:VLCap): 1, 2, 4, 8 or 15
    vlarb_high_cap = 8          # entries the port's VLArb tables hold; the rest are not programmed
    vlarb_low_cap = 8
    max_vls = 4                 # then any OpenSM QoS value, in OpenSM syntax, replacing the type's
    high_limit = 240
    vlarb_high = "0:192,1:192,2:0,3:192"
    vlarb_low = "0:192,1:192,2:64,3:192"
    sl2vl = "0,1,2,3,0,1,2,3,0,1,2,3,0,1,2,3"

Fields an entry leaves out keep the OpenSM value for its port type.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from dualpath.proofs.opensm import PORT_TYPES, Where, parse_sl2vl, parse_vlarb
from dualpath.tomldoc import TomlDoc
from dualpath.validate import is_ascii_int

TABLE_FIELDS = ("max_vls", "high_limit", "vlarb_high", "vlarb_low", "sl2vl")
HARDWARE_FIELDS = ("vl_cap", "vlarb_high_cap", "vlarb_low_cap")
ENTRY_KEYS = frozenset(("node", "ports", "type", *TABLE_FIELDS, *HARDWARE_FIELDS))
VL_CAP_VALUES = (1, 2, 4, 8, 15)
MAX_PORT = 254  # InfiniBand switch port numbers


@dataclass(frozen=True)
class OverrideEntry:
    """One [[port]] entry: the ports it names and the values it sets (already parsed)."""

    index: int
    node: str
    ports: tuple[int, ...]
    port_type: str
    values: dict
    doc: TomlDoc

    def where(self, name: str) -> Where:
        raw = self.doc.data["port"][self.index].get(name)
        return Where(self.doc.source, self.doc.line_of("port", self.index, name),
                     f"[[port]] node={self.node} {name}", "" if raw is None else str(raw))


@dataclass(frozen=True)
class Overrides:
    path: str
    entries: tuple[OverrideEntry, ...]


def _port_numbers(doc: TomlDoc, value, path: tuple) -> tuple[int, ...]:
    def bad() -> Exception:
        return doc.error(path, value, "a port number 0..254, a list of them, or ranges like \"1-36\"")

    if isinstance(value, bool):
        raise bad()
    if isinstance(value, int):
        numbers = [value]
    elif isinstance(value, list) and all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        numbers = list(value)
    elif isinstance(value, str):
        numbers = []
        for part in (p.strip() for p in value.split(",") if p.strip()):
            low, sep, high = (t.strip() for t in part.partition("-"))
            if not (is_ascii_int(low) and (not sep or is_ascii_int(high))):
                raise bad()
            first, last = int(low), int(high if sep else low)
            if not 0 <= first <= last <= MAX_PORT:  # checked before expanding: "1-100000000000" is 10^11 ports
                raise bad()
            numbers.extend(range(first, last + 1))
    else:
        raise bad()
    if not numbers or any(not 0 <= n <= MAX_PORT for n in numbers):
        raise bad()
    return tuple(sorted(set(numbers)))


def load_overrides(path: str | Path) -> Overrides:
    doc = TomlDoc.read(path)
    doc.check_keys(doc.data, {"port"})
    entries_data = doc.data.get("port", [])
    if not isinstance(entries_data, list) or not all(isinstance(e, dict) for e in entries_data):
        raise doc.error(("port",), entries_data, "an array of [[port]] tables")
    memo: dict[tuple[str, str], object] = {}  # big fabrics repeat the same table text
    entries = []
    for index, data in enumerate(entries_data):
        base = ("port", index)
        doc.check_keys(data, ENTRY_KEYS, base)
        node = doc.string(data, "node", base)
        if "ports" not in data:
            raise doc.error((*base, "ports"), None, "the port numbers this entry sets")
        ports = _port_numbers(doc, data["ports"], (*base, "ports"))
        port_type = doc.string(data, "type", base, PORT_TYPES, default="swe")
        values: dict = {}
        for name in TABLE_FIELDS + HARDWARE_FIELDS:
            if name not in data:
                continue
            raw = data[name]
            if name in ("vlarb_high", "vlarb_low", "sl2vl"):
                if not isinstance(raw, str):
                    raise doc.error((*base, name), raw, "a string in OpenSM syntax")
                key = (name, raw)
                if key not in memo:
                    where = Where(doc.source, doc.line_of(*base, name), name, raw)
                    memo[key] = parse_sl2vl(raw, where) if name == "sl2vl" else parse_vlarb(raw, where)
                values[name] = memo[key]
            elif name == "vl_cap":
                if raw not in VL_CAP_VALUES or isinstance(raw, bool):
                    raise doc.error((*base, name), raw, "one of 1, 2, 4, 8, 15 (data VLs of PortInfo:VLCap)")
                values[name] = raw
            else:
                low, high = {"max_vls": (1, 15), "high_limit": (0, 255)}.get(name, (0, 64))
                values[name] = doc.integer(data, name, base, low, high)
        entries.append(OverrideEntry(index, node, ports, port_type, values, doc))
    return Overrides(doc.source, tuple(entries))

