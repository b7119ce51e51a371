"""Verbs GIDs: which entry of a port's GID table a transport addresses its peers with.

On RoCE every IP address of the netdev gets GID entries (one per RoCE version), so the table holds a
link-local IPv6 entry first and the routable ones after it. Taking the first non-zero entry picks the
link-local one, which does not cross a router on RoCE v2, and can pick RoCE v1, which is not routed at
all. `choose_gid` prefers RoCE v2 and, among those, an IPv4-mapped address, then a global IPv6 one,
then link-local; `find_gid` resolves an explicitly configured GID. Pure Python: testable without a device.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass

from dualpath.runtime.transports.transport_types import TransportError

ZERO_GID = "0000:0000:0000:0000:0000:0000:0000:0000"


@dataclass(frozen=True)
class GidEntry:
    """One entry of a port's GID table: its index, the GID as pyverbs prints it (eight groups of four
    hex digits) and its type as `translate_gid_type` names it ("IB", "RoCEv1" or "RoCEv2")."""

    index: int
    gid: str
    gid_type: str


def gid_text(value: str) -> str:
    """A GID in pyverbs' form from any IPv6 spelling ("::ffff:10.0.0.1", "fe80::1", or already full)."""
    try:
        packed = ipaddress.IPv6Address(value).packed
    except ValueError as exc:
        raise TransportError(f"GID {value!r} is not an IPv6-style address: {exc}") from exc
    hexgid = packed.hex()
    return ":".join(hexgid[i : i + 4] for i in range(0, 32, 4))


def _address_rank(gid: str) -> int:
    """0: IPv4-mapped (routable, what most RoCE fabrics run), 1: global IPv6, 2: link-local or other."""
    address = ipaddress.IPv6Address(gid)
    if address.ipv4_mapped is not None:
        return 0
    return 2 if address.is_link_local else 1


def choose_gid(entries: Sequence[GidEntry], ethernet: bool) -> GidEntry:
    """The entry to use when none is configured. InfiniBand: the first valid one (the port GID).
    Ethernet (RoCE): RoCE v2 before v1, then IPv4-mapped, global IPv6, link-local; lowest index last."""
    valid = [entry for entry in entries if entry.gid != ZERO_GID]
    if not valid:
        raise TransportError("the port's GID table has no valid entry (is the netdev up with an address?)")
    if not ethernet:
        return min(valid, key=lambda entry: entry.index)
    return min(valid, key=lambda entry: (entry.gid_type != "RoCEv2", _address_rank(entry.gid), entry.index))


def find_gid(entries: Sequence[GidEntry], wanted: str) -> GidEntry:
    """The entry holding GID `wanted` (any IPv6 spelling); with several (one per RoCE version), RoCE v2."""
    text = gid_text(wanted)
    matches = sorted((entry for entry in entries if entry.gid == text),
                     key=lambda entry: (entry.gid_type != "RoCEv2", entry.index))
    if not matches:
        have = ", ".join(f"{entry.index}={entry.gid}" for entry in entries if entry.gid != ZERO_GID) or "none"
        raise TransportError(f"GID {wanted} is not in the port's GID table (valid entries: {have})")
    return matches[0]
