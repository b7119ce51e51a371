"""One hop's RoCE QoS state (a NIC port or a switch port): DSCP -> priority -> TC, PFC, ETS, strict TCs,
with where each value came from and how to write its fix in that source's own syntax.

Sources: our roce.toml (a transcription), `mlnx_qos -i <if>` output (the NIC's real state) and SONiC's
config_db.json (a switch's real state). A switch classifies by DSCP straight to a TC (its internal
priority is the TC), so its `dscp_to_priority` is the DSCP_TO_TC map and `priority_to_tc` the identity.
"""

from __future__ import annotations

from dataclasses import dataclass

from dualpath.proofs.opensm import Where

NUM_PRIORITIES = 8
NUM_DSCP = 64
DEFAULT_DSCP_MAP = tuple(d >> 3 for d in range(NUM_DSCP))  # mlx5 and SONiC default: DSCP >> 3
_MLNX_FLAGS = {"trust": "--trust", "priority_to_tc": "--prio_tc", "pfc_priorities": "--pfc",
               "strict_tcs": "--tsa", "ets_percent": "--tcbw"}


@dataclass(frozen=True)
class RoceHop:
    name: str
    kind: str  # "toml" | "mlnx_qos" | "sonic"
    trust: str
    dscp_to_priority: tuple[int, ...]
    priority_to_tc: tuple[int, ...]
    pfc_priorities: frozenset[int]
    strict_tcs: frozenset[int]
    ets_percent: tuple[int, ...]
    where: dict  # key -> Where (dscp_to_priority entries keyed "dscp:<n>")
    ets_relative: bool = False  # SONiC DWRR weights are relative: no sum-to-100 rule
    device: str = ""  # interface (mlnx_qos) or port (SONiC) the state belongs to

    def tc_of_dscp(self, dscp: int) -> int:
        return self.priority_to_tc[self.dscp_to_priority[dscp]]

    def fix(self, key: str, value) -> str:
        """The change to make, in the source's syntax: a roce.toml line, an mlnx_qos command, a config_db key."""
        where: Where = self.where.get(key) or self.where["trust"]
        at = f"{where.file}:{where.line or 1}"
        items = sorted(value) if isinstance(value, (set, frozenset)) else value
        if self.kind == "mlnx_qos":
            if key == "pfc_priorities":
                text = ",".join("1" if p in value else "0" for p in range(NUM_PRIORITIES))
            elif key == "strict_tcs":
                text = ",".join("strict" if t in value else "ets" for t in range(NUM_PRIORITIES))
            elif key.startswith("dscp:"):
                return f"mlnx_qos -i {self.device} --dscp2prio set,{key[5:]},{value}  # {at}"
            else:
                text = ",".join(map(str, items)) if isinstance(items, (list, tuple)) else str(value)
            return f"mlnx_qos -i {self.device} {_MLNX_FLAGS[key]} {text}  # {at}"
        if self.kind == "sonic":
            text = ",".join(map(str, items)) if isinstance(items, (list, tuple)) else str(value)
            return f"{at}: {where.key} = \"{text}\""
        if key.startswith("dscp:"):
            return f"{at}: \"{key[5:]}\" = {value}  # [dscp_to_priority]"
        text = f"[{', '.join(map(str, items))}]" if isinstance(items, (list, tuple)) else f"\"{value}\""
        return f"{at}: {key} = {text}"
