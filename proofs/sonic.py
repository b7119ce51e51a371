"""SONiC config_db.json QoS tables: a switch port's real RoCE state, one hop per PORT_QOS_MAP port.

Read: PORT_QOS_MAP|<port> (dscp_to_tc_map, tc_to_queue_map, pfc_enable), DSCP_TO_TC_MAP,
TC_TO_QUEUE_MAP, QUEUE|<port>|<queue> scheduler, SCHEDULER (type DWRR/WRR/STRICT, weight). A port
without a dscp_to_tc_map does not classify by DSCP (everything in TC 0: reported as trust "pcp"). The
switch's priority is the TC, so PFC's `pfc_enable` lists TCs. DWRR weights are relative shares, not
percentages. References may be written "NAME" or "[TABLE|NAME]". JSON keeps no line numbers, so each
entry's line is found by scanning the text for its keys in order.
"""

from __future__ import annotations

import json
from pathlib import Path

from dualpath.errors import InputError, SpecError
from dualpath.proofs.opensm import Where
from dualpath.proofs.roce_hop import NUM_DSCP, NUM_PRIORITIES, RoceHop
from dualpath.validate import read_text


def _line(text: str, *keys: str) -> int | None:
    pos = 0
    for key in keys:
        found = text.find(f'"{key}"', pos)
        if found < 0:
            return None
        pos = found + 1
    return text.count("\n", 0, pos) + 1


def _ref(value: str) -> str:
    value = value.strip()
    return value[1:-1].split("|", 1)[1] if value.startswith("[") and "|" in value else value


def _table(db: dict, name: str, key: str, path: str, text: str) -> dict:
    table = db.get(name, {}).get(_ref(key))
    if not isinstance(table, dict):
        raise SpecError(path, f"{name}|{_ref(key)}", None, f"an entry in {name}", _line(text, key))
    return table


def load_sonic(path: str | Path) -> list[RoceHop]:
    path = str(path)
    text = read_text(path)
    try:
        db = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(path, f"invalid JSON: {exc.msg}", exc.lineno) from exc
    ports = db.get("PORT_QOS_MAP") if isinstance(db, dict) else None
    if not isinstance(ports, dict) or not ports:
        raise InputError(path, "no PORT_QOS_MAP table: is this a SONiC config_db.json?")
    hops = []
    for port, qos in ports.items():
        if port == "global" or not isinstance(qos, dict):
            continue
        hops.append(_port(db, port, qos, path, text))
    return hops


def _port(db: dict, port: str, qos: dict, path: str, text: str) -> RoceHop:
    base = ("PORT_QOS_MAP", port)
    where = {"trust": Where(path, _line(text, *base), f"PORT_QOS_MAP|{port}.dscp_to_tc_map")}
    dscp_tc = [0] * NUM_DSCP
    trust = "pcp"
    if "dscp_to_tc_map" in qos:
        trust, name = "dscp", qos["dscp_to_tc_map"]
        where["trust"] = Where(path, _line(text, *base, "dscp_to_tc_map"), f"PORT_QOS_MAP|{port}.dscp_to_tc_map")
        for dscp, tc in _table(db, "DSCP_TO_TC_MAP", name, path, text).items():
            at = _line(text, "DSCP_TO_TC_MAP", _ref(name), dscp)
            if not str(dscp).isdigit() or not 0 <= int(dscp) < NUM_DSCP or not str(tc).isdigit() \
                    or not 0 <= int(tc) < NUM_PRIORITIES:
                raise SpecError(path, f"DSCP_TO_TC_MAP|{_ref(name)}", f"{dscp}: {tc}", "DSCP 0..63 -> TC 0..7", at)
            dscp_tc[int(dscp)] = int(tc)
            where[f"dscp:{int(dscp)}"] = Where(path, at, f"DSCP_TO_TC_MAP|{_ref(name)}.\"{dscp}\"")
    tc_queue = {t: t for t in range(NUM_PRIORITIES)}
    if "tc_to_queue_map" in qos:
        for tc, queue in _table(db, "TC_TO_QUEUE_MAP", qos["tc_to_queue_map"], path, text).items():
            tc_queue[int(tc)] = int(queue)
    pfc_text = str(qos.get("pfc_enable", ""))
    pfc = frozenset(int(t) for t in pfc_text.split(",") if t.strip())
    where["pfc_priorities"] = Where(path, _line(text, *base, "pfc_enable") or _line(text, *base),
                                    f"PORT_QOS_MAP|{port}.pfc_enable")
    strict: set[int] = set()
    weights = [0] * NUM_PRIORITIES
    for tc, queue in tc_queue.items():
        entry = db.get("QUEUE", {}).get(f"{port}|{queue}", {})
        if "scheduler" not in entry:
            continue
        sched = _table(db, "SCHEDULER", entry["scheduler"], path, text)
        if str(sched.get("type", "DWRR")).upper() == "STRICT":
            strict.add(tc)
        else:
            weights[tc] = int(sched.get("weight", 0))
        key = "strict_tcs" if tc in strict else "ets_percent"
        where.setdefault(key, Where(path, _line(text, "SCHEDULER", _ref(entry["scheduler"])),
                                    f"SCHEDULER|{_ref(entry['scheduler'])}.{'type' if tc in strict else 'weight'}"))
    for key in ("strict_tcs", "ets_percent", "priority_to_tc"):
        where.setdefault(key, Where(path, _line(text, "QUEUE") or _line(text, *base),
                                    f"QUEUE|{port}|<queue>.scheduler"))
    return RoceHop(f"switch port {port} ({path})", "sonic", trust, tuple(dscp_tc), tuple(range(NUM_PRIORITIES)), pfc,
                   frozenset(strict), tuple(weights), where, ets_relative=True, device=port)
