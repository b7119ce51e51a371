"""`mlnx_qos -i <if>` output (MLNX_OFED / mlnx-tools): the NIC's real RoCE QoS state, so the proof is
about the port and not about a transcription of it.

    Priority trust state: dscp
    dscp2prio mapping:
        prio:3 dscp:31,30,29,28,27,26,25,24,
    PFC configuration:
        priority    0   1   2   3   4   5   6   7
        enabled     0   1   0   1   0   0   0   0
    tc: 1 ratelimit: unlimited, tsa: ets, bw: 4%
         priority:  1
    tc: 6 ratelimit: unlimited, tsa: strict
         priority:  6

A leading comment `# mlnx_qos -i <if>` (how we suggest capturing it) names the interface for fixes.
Unlisted DSCPs keep mlx5's default (DSCP >> 3); a priority listed under no `tc:` keeps TC 0.
"""

from __future__ import annotations

import re
from pathlib import Path

from dualpath.errors import InputError, SpecError, shown
from dualpath.proofs.opensm import Where
from dualpath.proofs.roce_hop import DEFAULT_DSCP_MAP, NUM_PRIORITIES, RoceHop
from dualpath.validate import is_ascii_int, read_text

_TC = re.compile(r"^tc:\s*(\d{1,9})\b.*?tsa:\s*(\w+)(?:,\s*bw:\s*(\d{1,9})%)?", re.ASCII)


def _ints(text: str, path: str, line: int, what: str, high: int) -> list[int]:
    tokens = [t for t in re.split(r"[,\s]+", text.strip()) if t]
    if not all(is_ascii_int(t) and len(t) <= 24 for t in tokens):  # int() reads other scripts' digits
        raise InputError(path, f"{what}: {shown(text.strip())} is not a list of integers", line)
    values = [int(t) for t in tokens]
    bad = [v for v in values if not 0 <= v <= high]
    if bad:
        raise SpecError(path, what, bad[0], f"an integer in 0..{high}", line)
    return values


def load_mlnx_qos(path: str | Path) -> RoceHop:
    path = str(path)
    text = read_text(path)
    device = Path(path).stem
    trust = None
    dscp_map = list(DEFAULT_DSCP_MAP)
    prio_tc = [0] * NUM_PRIORITIES
    pfc: set[int] = set()
    strict: set[int] = set()
    ets = [0] * NUM_PRIORITIES
    where: dict = {}
    tc = None
    pfc_header = False
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        iface = re.match(r"^#.*mlnx_qos\s+.*-i\s+(\S+)", line)
        if iface:
            device = iface.group(1)
        if not line or line.startswith("#"):
            continue
        if line.lower().startswith("priority trust state:") or line.lower().startswith("priority trust mode:"):
            trust = line.split(":", 1)[1].strip().lower()
            where["trust"] = Where(path, number, "trust")
        elif line.startswith("prio:") and "dscp:" in line:
            prio_text, dscp_text = line[5:].split("dscp:", 1)
            prios = _ints(prio_text, path, number, "dscp2prio priority", NUM_PRIORITIES - 1)
            if len(prios) != 1:
                raise InputError(path, f"dscp2prio: {shown(line)} is not 'prio:<priority> dscp:<list>'", number)
            prio = prios[0]
            for dscp in _ints(dscp_text, path, number, "dscp2prio dscp", 63):
                dscp_map[dscp] = prio
                where[f"dscp:{dscp}"] = Where(path, number, f"dscp2prio prio:{prio}")
        elif line.startswith("priority") and not line.startswith("priority:") and "PFC" not in line:
            pfc_header = True
        elif line.startswith("enabled") and pfc_header:
            flags = _ints(line[len("enabled"):], path, number, "PFC enabled", 1)
            if len(flags) != NUM_PRIORITIES:
                raise SpecError(path, "PFC enabled", len(flags), f"{NUM_PRIORITIES} flags, one per priority", number)
            pfc = {p for p, on in enumerate(flags) if on}
            where["pfc_priorities"] = Where(path, number, "PFC enabled")
            pfc_header = False
        elif line.startswith("tc:"):
            match = _TC.match(line)
            if not match:
                raise InputError(path, f"expected 'tc: N ratelimit: ..., tsa: ets|strict|vendor[, bw: P%]', "
                                       f"got {shown(line)}", number)
            tc = int(match.group(1))
            if tc >= NUM_PRIORITIES:
                raise SpecError(path, "tc", tc, f"a TC in 0..{NUM_PRIORITIES - 1}", number)
            if match.group(2) == "strict":
                strict.add(tc)
            ets[tc] = int(match.group(3) or 0)
            where.setdefault("strict_tcs", Where(path, number, "tsa"))
            where.setdefault("ets_percent", Where(path, number, "bw"))
        elif line.startswith("priority:"):
            if tc is None:
                raise InputError(path, "priority: line before any tc: line", number)
            for prio in _ints(line.split(":", 1)[1], path, number, "priority", NUM_PRIORITIES - 1):
                prio_tc[prio] = tc
            where.setdefault("priority_to_tc", Where(path, number, "priority"))
    if trust is None:
        raise InputError(path, "no 'Priority trust state:' line: is this `mlnx_qos -i <if>` output?")
    for key in ("pfc_priorities", "strict_tcs", "ets_percent", "priority_to_tc"):
        where.setdefault(key, Where(path, None, key))
    return RoceHop(f"NIC {device} ({path})", "mlnx_qos", trust, tuple(dscp_map), tuple(prio_tc), frozenset(pfc),
                   frozenset(strict), tuple(ets), where, device=device)
