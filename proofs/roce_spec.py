"""RoCE QoS (TOML): trust mode, DSCP -> priority, priority -> traffic class, PFC, ETS, strict TCs, and
the DSCP / intended TC / losslessness of each traffic class.

    trust = "dscp"
    priority_to_tc = [0, 1, 2, 3, 4, 5, 6, 7]     # index = priority (mlnx_qos --prio_tc)
    pfc_priorities = [1, 3]                       # PFC enabled (mlnx_qos --pfc)
    strict_tcs = [6]                              # strict-priority TCs (mlnx_qos --tsa strict)
    ets_percent = [1, 4, 0, 95, 0, 0, 0, 0]       # index = TC (mlnx_qos --tcbw)
    [dscp_to_priority]                            # unlisted DSCPs keep the default dscp >> 3
    "26" = 3
    [classes.alltoall]
    dscp = 26
    tc = 3
    lossless = true
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from dualpath.proofs.opensm import Where
from dualpath.tomldoc import TomlDoc

NUM_PRIORITIES = 8
NUM_DSCP = 64
TOP_KEYS = {"trust", "priority_to_tc", "pfc_priorities", "strict_tcs", "ets_percent", "dscp_to_priority", "classes"}


@dataclass(frozen=True)
class RoceClass:
    name: str
    dscp: int
    tc: int
    lossless: bool
    where: Where


@dataclass(frozen=True)
class RoceConfig:
    path: str
    trust: str
    dscp_to_priority: tuple[int, ...]
    priority_to_tc: tuple[int, ...]
    pfc_priorities: frozenset[int]
    strict_tcs: frozenset[int]
    ets_percent: tuple[int, ...]
    classes: dict
    where: dict  # key -> Where (dscp_to_priority entries keyed "dscp:<n>")

    def tc_of_dscp(self, dscp: int) -> int:
        return self.priority_to_tc[self.dscp_to_priority[dscp]]


def _int_list(doc: TomlDoc, key: str, length: int | None, low: int, high: int, default) -> tuple[int, ...]:
    value = doc.data.get(key, default)
    ok = isinstance(value, list) and all(isinstance(v, int) and not isinstance(v, bool) and low <= v <= high
                                          for v in value)
    if not ok or (length is not None and len(value) != length):
        size = f"{length} " if length is not None else ""
        raise doc.error((key,), value, f"a list of {size}integers in {low}..{high}")
    return tuple(value)


def load_roce(path: str | Path) -> RoceConfig:
    doc = TomlDoc.read(path)
    doc.check_keys(doc.data, TOP_KEYS)

    def where(*key) -> Where:
        return Where(doc.source, doc.line_of(*key), ".".join(map(str, key)))

    trust = doc.string(doc.data, "trust", (), ("dscp", "pcp"), default="pcp")
    prio_tc = _int_list(doc, "priority_to_tc", NUM_PRIORITIES, 0, 7, list(range(NUM_PRIORITIES)))
    pfc = _int_list(doc, "pfc_priorities", None, 0, 7, [])
    strict = _int_list(doc, "strict_tcs", None, 0, 7, [])
    ets = _int_list(doc, "ets_percent", NUM_PRIORITIES, 0, 100, None)
    dscp_map = [d >> 3 for d in range(NUM_DSCP)]
    wheres = {k: where(k) for k in ("trust", "priority_to_tc", "pfc_priorities", "strict_tcs", "ets_percent")}
    for key, prio in doc.table("dscp_to_priority").items():
        if not key.isdigit() or not 0 <= int(key) < NUM_DSCP:
            raise doc.error(("dscp_to_priority", key), key, "a DSCP 0..63 as the key")
        dscp_map[int(key)] = doc.integer({key: prio}, key, ("dscp_to_priority",), 0, 7)
        wheres[f"dscp:{int(key)}"] = where("dscp_to_priority", key)
    classes = {}
    for name, data in doc.table("classes").items():
        p = ("classes", name)
        if not isinstance(data, dict):
            raise doc.error(p, data, "a table with dscp, tc and lossless")
        doc.check_keys(data, {"dscp", "tc", "lossless"}, p)
        lossless = data.get("lossless", False)
        if not isinstance(lossless, bool):
            raise doc.error((*p, "lossless"), lossless, "true or false")
        classes[name] = RoceClass(name, doc.integer(data, "dscp", p, 0, 63), doc.integer(data, "tc", p, 0, 7),
                                  lossless, where(*p))
    return RoceConfig(doc.source, trust, tuple(dscp_map), prio_tc, frozenset(pfc), frozenset(strict), ets, classes,
                      wheres)
