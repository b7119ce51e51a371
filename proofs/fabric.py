"""The fabric's ports and the QoS tables each one runs, grouped so each distinct table is checked once.

Without overrides there is one representative port per port type (OpenSM programs every port of a
type alike); overrides add one port per named node/port. OpenSM masks SL2VL entries with the port's
operational VLs (sl2vl_update_table: vl &= (1 << (OperVLs - 1)) - 1, VL15 kept), programs only as many
VLArb entries as the port holds, and masks their VLs the same way (vlarb_update_table_block:
block.vl_entry[i].vl &= vl_mask), so a VLArb entry for VL 5 on a 4-VL port weighs VL 1.
"""

from __future__ import annotations

from dataclasses import dataclass

from dualpath.proofs.opensm import OPER_VLS_DATA, PORT_TYPES, VL15, OpenSMOptions, Where
from dualpath.proofs.overrides import OverrideEntry, Overrides

_ENCODE = {data: code for code, data in OPER_VLS_DATA.items()}


@dataclass(frozen=True)
class PortQoS:
    """What one port runs; equal tables compare equal, so ports group by this value."""

    max_vls: int
    oper_vls_code: int  # PortInfo:OperVLs encoding, min(VLCap, max_op_vls)
    high_limit: int
    vlarb_high: tuple[tuple[int, int], ...]
    vlarb_low: tuple[tuple[int, int], ...]
    sl2vl: tuple[int, ...]
    vlarb_high_dropped: int = 0
    vlarb_low_dropped: int = 0

    @property
    def oper_vls(self) -> int:
        return OPER_VLS_DATA[self.oper_vls_code]

    @property
    def num_vls(self) -> int:
        """Data VLs traffic may use: the QoS max_vls, capped by what the link runs."""
        return min(self.max_vls, self.oper_vls)

    def vl_of_sl(self, sl: int) -> int:
        """The VL a packet of `sl` really uses, after OpenSM's OperVLs mask."""
        vl = self.sl2vl[sl]
        return vl if vl == VL15 else vl & ((1 << (self.oper_vls_code - 1)) - 1)


@dataclass(frozen=True)
class Port:
    name: str
    port_type: str
    qos: PortQoS
    type_sources: dict  # field -> Where, from the OpenSM file
    entry: OverrideEntry | None = None

    def where(self, field: str) -> Where:
        if self.entry is not None:
            if field in self.entry.values:
                return self.entry.where(field)
            if field == "oper_vls" and "vl_cap" in self.entry.values:
                return self.entry.where("vl_cap")
        return self.type_sources[field]


@dataclass
class Fabric:
    ports: list[Port]

    def groups(self) -> list[tuple[PortQoS, list[Port]]]:
        """Distinct tables in order of first appearance, each with the ports that run it."""
        grouped: dict[PortQoS, list[Port]] = {}
        for port in self.ports:
            grouped.setdefault(port.qos, []).append(port)
        return list(grouped.items())


def _programmed(entries: tuple, cap: int | None, oper_code: int) -> tuple[tuple, int]:
    mask = (1 << (oper_code - 1)) - 1
    dropped = 0 if cap is None or len(entries) <= cap else len(entries) - cap
    kept = entries if not dropped else entries[:cap]
    if any(vl & mask != vl for vl, _ in kept):
        kept = tuple((vl & mask, weight) for vl, weight in kept)
    return kept, dropped


def build_fabric(opensm: OpenSMOptions, overrides: Overrides | None = None) -> Fabric:
    type_tables, type_sources = {}, {}
    for port_type in PORT_TYPES:
        tables, sources = opensm.resolve(port_type)
        type_tables[port_type] = tables
        type_sources[port_type] = dict(sources, oper_vls=opensm.max_op_vls_where)
    code = opensm.max_op_vls
    ports = [
        Port(f"every {t} port", t, PortQoS(tables.max_vls, code, tables.high_limit, _programmed(tables.vlarb_high,
                                                                                                None, code)[0],
                                           _programmed(tables.vlarb_low, None, code)[0], tables.sl2vl),
             type_sources[t])
        for t, tables in type_tables.items()
    ]
    memo: dict[tuple, PortQoS] = {}
    for entry in overrides.entries if overrides else ():
        base, values = type_tables[entry.port_type], entry.values
        oper = min(_ENCODE[values.get("vl_cap", 15)], opensm.max_op_vls)
        high, high_dropped = _programmed(values.get("vlarb_high", base.vlarb_high), values.get("vlarb_high_cap"), oper)
        low, low_dropped = _programmed(values.get("vlarb_low", base.vlarb_low), values.get("vlarb_low_cap"), oper)
        key = (values.get("max_vls", base.max_vls), oper, values.get("high_limit", base.high_limit),
               high, low, values.get("sl2vl", base.sl2vl), high_dropped, low_dropped)
        qos = memo.get(key)
        if qos is None:
            qos = memo[key] = PortQoS(*key)
        sources = type_sources[entry.port_type]
        ports.extend(Port(f"{entry.node}/{n}", entry.port_type, qos, sources, entry) for n in entry.ports)
    return Fabric(ports)
