"""SONiC config_db.json QoS tables: a switch port's real RoCE state, one hop per PORT_QOS_MAP port.

Read: PORT_QOS_MAP|<port> (dscp_to_tc_map, tc_to_queue_map, pfc_enable), DSCP_TO_TC_MAP,
TC_TO_QUEUE_MAP, QUEUE|<port>|<queue> scheduler, SCHEDULER (type DWRR/WRR/STRICT, weight). A port
without a dscp_to_tc_map does not classify by DSCP (everything in TC 0: reported as trust "pcp"). The
switch's priority is the TC, so PFC's `pfc_enable` lists TCs. DWRR weights are relative shares, not
percentages. References may be written "NAME" or "[TABLE|NAME]". JSON keeps no line numbers, so each
entry's line is found by scanning the text for its keys in order.
"""

from __future__ import annotations

from pathlib import Path

from dualpath.errors import InputError, SpecError, shown
from dualpath.jsonio import parse_json
from dualpath.proofs.opensm import Where
from dualpath.proofs.roce_hop import NUM_DSCP, NUM_PRIORITIES, RoceHop
from dualpath.validate import ascii_integer, read_text

MAX_QUEUE = 63  # egress queue numbers (switches have 8 to 16)
MAX_WEIGHT = 255  # DWRR weights: relative shares, 8 bits in SAI


def _line(text: str, *keys: str) -> int | None:
    pos = 0
    for key in keys:
        found = text.find(f'"{key}"', pos)
        if found < 0:
            return None
        pos = found + 1
    return text.count("\n", 0, pos) + 1


def _ref(value: object) -> str:
    if not isinstance(value, str):
        return shown(value)  # only for messages: `_table` refuses a reference that is no string
    value = value.strip()
    return value[1:-1].split("|", 1)[1] if value.startswith("[") and "|" in value else value


def _section(db: dict, name: str, path: str, text: str) -> dict:
    """A top-level table of config_db.json ({} when absent); anything but an object is refused."""
    section = db.get(name, {})
    if not isinstance(section, dict):
        raise SpecError(path, name, section, "a JSON object of entries", _line(text, name))
    return section


def _table(db: dict, name: str, key: object, path: str, text: str) -> dict:
    if not isinstance(key, str):
        raise SpecError(path, f"reference to {name}", key, "a table name (a string)", _line(text, name))
    table = _section(db, name, path, text).get(_ref(key))
    if not isinstance(table, dict):
        raise SpecError(path, f"{name}|{_ref(key)}", None, f"an entry in {name}", _line(text, key))
    return table


def load_sonic(path: str | Path) -> list[RoceHop]:
    path = str(path)
    text = read_text(path)
    db = parse_json(path, text)
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
            field = f"DSCP_TO_TC_MAP|{_ref(name)}"
            number = ascii_integer(path, f"{field} key", dscp, 0, NUM_DSCP - 1, at)
            dscp_tc[number] = ascii_integer(path, f"{field}.{dscp}", tc, 0, NUM_PRIORITIES - 1, at)
            where[f"dscp:{number}"] = Where(path, at, f"{field}.\"{dscp}\"")
    tc_queue = {t: t for t in range(NUM_PRIORITIES)}
    if "tc_to_queue_map" in qos:
        field = f"TC_TO_QUEUE_MAP|{_ref(qos['tc_to_queue_map'])}"
        at = _line(text, "TC_TO_QUEUE_MAP")
        for tc, queue in _table(db, "TC_TO_QUEUE_MAP", qos["tc_to_queue_map"], path, text).items():
            tc_queue[ascii_integer(path, f"{field} key", tc, 0, NUM_PRIORITIES - 1, at)] = ascii_integer(
                path, f"{field}.{tc}", queue, 0, MAX_QUEUE, at)
    pfc_text = str(qos.get("pfc_enable", ""))
    pfc_at = _line(text, *base, "pfc_enable")
    pfc = frozenset(ascii_integer(path, f"PORT_QOS_MAP|{port}.pfc_enable", t, 0, NUM_PRIORITIES - 1, pfc_at)
                    for t in pfc_text.split(",") if t.strip())
    where["pfc_priorities"] = Where(path, _line(text, *base, "pfc_enable") or _line(text, *base),
                                    f"PORT_QOS_MAP|{port}.pfc_enable")
    strict: set[int] = set()
    weights = [0] * NUM_PRIORITIES
    for tc, queue in tc_queue.items():
        entry = _section(db, "QUEUE", path, text).get(f"{port}|{queue}", {})
        if not isinstance(entry, dict):
            raise SpecError(path, f"QUEUE|{port}|{queue}", entry, "a JSON object", _line(text, "QUEUE"))
        if "scheduler" not in entry:
            continue
        sched = _table(db, "SCHEDULER", entry["scheduler"], path, text)
        if str(sched.get("type", "DWRR")).upper() == "STRICT":
            strict.add(tc)
        else:
            weights[tc] = ascii_integer(path, f"SCHEDULER|{_ref(entry['scheduler'])}.weight", sched.get("weight", 0),
                                        0, MAX_WEIGHT, _line(text, "SCHEDULER", _ref(entry["scheduler"])))
        key = "strict_tcs" if tc in strict else "ets_percent"
        where.setdefault(key, Where(path, _line(text, "SCHEDULER", _ref(entry["scheduler"])),
                                    f"SCHEDULER|{_ref(entry['scheduler'])}.{'type' if tc in strict else 'weight'}"))
    for key in ("strict_tcs", "ets_percent", "priority_to_tc"):
        where.setdefault(key, Where(path, _line(text, "QUEUE") or _line(text, *base),
                                    f"QUEUE|{port}|<queue>.scheduler"))
    return RoceHop(f"switch port {port} ({path})", "sonic", trust, tuple(dscp_tc), tuple(range(NUM_PRIORITIES)), pfc,
                   frozenset(strict), tuple(weights), where, ets_relative=True, device=port)
