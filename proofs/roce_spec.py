"""RoCE QoS (TOML): trust mode, DSCP -> priority, priority -> traffic class, PFC, ETS, strict TCs, and
the DSCP / intended TC / losslessness of each traffic class.

    trust = "dscp"
    priority_to_tc = [0, 1, 2, 3, 4, 5, 6, 7]     # index = priority (mlnx_qos --prio_tc)
    pfc_priorities = [1, 3]                       # PFC enabled (mlnx_qos --pfc)
    strict_tcs = [6]                              # strict-priority TCs (mlnx_qos --tsa strict)
    ets_percent = [1, 4, 0, 95, 0, 0, 0, 0]       # index = TC (mlnx_qos --tcbw)
    mlnx_qos = "nic.mlnx_qos"                     # or: the NIC's real state instead of the lines above
    sonic_config_db = "config_db.json"            # optional: the switches' real state, one hop per port
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
from dualpath.proofs.roce_hop import NUM_DSCP, NUM_PRIORITIES, RoceHop
from dualpath.tomldoc import TomlDoc
from dualpath.validate import is_ascii_int

STATE_KEYS = {"trust", "priority_to_tc", "pfc_priorities", "strict_tcs", "ets_percent", "dscp_to_priority"}
TOP_KEYS = STATE_KEYS | {"classes", "mlnx_qos", "sonic_config_db"}
__all__ = ["NUM_DSCP", "NUM_PRIORITIES", "RoceClass", "RoceConfig", "RoceHop", "load_roce"]


@dataclass(frozen=True)
class RoceClass:
    name: str
    dscp: int
    tc: int
    lossless: bool
    where: Where


@dataclass(frozen=True)
class RoceConfig:
    """The intent (`classes`: DSCP, TC, losslessness per traffic class) and the state of every hop."""

    path: str
    classes: dict
    hops: tuple[RoceHop, ...]

    @property
    def nic(self) -> RoceHop:
        return self.hops[0]

    def tc_of_dscp(self, dscp: int) -> int:
        return self.nic.tc_of_dscp(dscp)


def _int_list(doc: TomlDoc, key: str, length: int | None, low: int, high: int, default) -> tuple[int, ...]:
    value = doc.data.get(key, default)
    ok = isinstance(value, list) and all(isinstance(v, int) and not isinstance(v, bool) and low <= v <= high
                                          for v in value)
    if not ok or (length is not None and len(value) != length):
        size = f"{length} " if length is not None else ""
        raise doc.error((key,), value, f"a list of {size}integers in {low}..{high}")
    return tuple(value)


def load_roce(path: str | Path, mlnx_qos_path=None, sonic_path=None) -> RoceConfig:
    """Read roce.toml; the NIC state comes from `mlnx_qos_path` (or the file's `mlnx_qos`) when given,
    else from the TOML; `sonic_path` (or `sonic_config_db`) adds one hop per switch port."""
    doc = TomlDoc.read(path)
    doc.check_keys(doc.data, TOP_KEYS)

    def where(*key) -> Where:
        return Where(doc.source, doc.line_of(*key), ".".join(map(str, key)))

    folder = Path(doc.source).parent
    # Read (and type-checked) even when a flag replaces them: a number where a file name belongs is a mistake.
    named = {key: folder / doc.string(doc.data, key, ()) for key in ("mlnx_qos", "sonic_config_db") if key in doc.data}
    if mlnx_qos_path is None and "mlnx_qos" in named:
        mlnx_qos_path = named["mlnx_qos"]
    if sonic_path is None and "sonic_config_db" in named:
        sonic_path = named["sonic_config_db"]
    hops: list[RoceHop] = []
    if mlnx_qos_path is not None:
        from dualpath.proofs.mlnx_qos import load_mlnx_qos

        written = sorted(STATE_KEYS & set(doc.data))
        if written and "mlnx_qos" in doc.data:
            raise doc.error((written[0],), doc.data[written[0]],
                            "no transcribed NIC state next to mlnx_qos (the real state replaces it)")
        hops.append(load_mlnx_qos(mlnx_qos_path))
    else:
        hops.append(_toml_hop(doc, where))
    if sonic_path is not None:
        from dualpath.proofs.sonic import load_sonic

        hops.extend(load_sonic(sonic_path))
    return RoceConfig(doc.source, _classes(doc, where), tuple(hops))


def _toml_hop(doc: TomlDoc, where) -> RoceHop:
    trust = doc.string(doc.data, "trust", (), ("dscp", "pcp"), default="pcp")
    prio_tc = _int_list(doc, "priority_to_tc", NUM_PRIORITIES, 0, 7, list(range(NUM_PRIORITIES)))
    pfc = _int_list(doc, "pfc_priorities", None, 0, 7, [])
    strict = _int_list(doc, "strict_tcs", None, 0, 7, [])
    ets = _int_list(doc, "ets_percent", NUM_PRIORITIES, 0, 100, None)
    dscp_map = [d >> 3 for d in range(NUM_DSCP)]
    wheres = {k: where(k) for k in ("trust", "priority_to_tc", "pfc_priorities", "strict_tcs", "ets_percent")}
    for key, prio in doc.table("dscp_to_priority").items():
        if not is_ascii_int(key) or not 0 <= int(key) < NUM_DSCP:
            raise doc.error(("dscp_to_priority", key), key, "a DSCP 0..63 as the key")
        dscp_map[int(key)] = doc.integer({key: prio}, key, ("dscp_to_priority",), 0, 7)
        wheres[f"dscp:{int(key)}"] = where("dscp_to_priority", key)
    return RoceHop(f"NIC ({doc.source})", "toml", trust, tuple(dscp_map), prio_tc, frozenset(pfc), frozenset(strict),
                   ets, wheres)


def _classes(doc: TomlDoc, where) -> dict:
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
    return classes
