"""OpenSM's advanced QoS policy (qos-policy.conf, `qos_policy_file` in opensm.conf): port groups, QoS
levels, match rules and the simplified `qos-ulps` section, in OpenSM's syntax and matching order.

The SA answers a PathRecord query with the SL of the first matching `qos-match-rule`, else of the first
matching `qos-ulps` rule, else of the ulps `default`, else of the `DEFAULT` QoS level (else SL 0, as with
no policy). A rule matches only if the query carries every criterion the rule names (OpenSM's rule, doc
section 2.IV). Port groups by partition/pkey need the partition file: membership there is unknown and
the proof says so. `qos-setup` is parsed and ignored, as OpenSM does (SL2VL/VLArb stay in opensm.conf).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from dualpath.errors import InputError, SpecError, shown
from dualpath.proofs.opensm import Where
from dualpath.validate import ascii_integer, is_ascii_int, read_text

SECTIONS = {"port-groups": "port-group", "qos-setup": None, "qos-levels": "qos-level",
            "qos-match-rules": "qos-match-rule", "qos-ulps": None}
GROUP_KEYS = ("name", "use", "port-guid", "port-name", "pkey", "partition", "node-type")
LEVEL_KEYS = ("name", "use", "sl", "mtu-limit", "rate-limit", "pkey", "packet-life")
RULE_KEYS = ("use", "qos-class", "source", "destination", "service-id", "pkey", "qos-level-name")
# qos-ulps ULP -> (query field, value range) a bare rule matches (doc section 6); None: needs a criterion.
ULP_DEFAULTS = {"sdp": ("service_id", [(0x10000, 0x1FFFF)]), "rds": ("service_id", [(0x10648CA, 0x10648CA)]),
                "iser": ("service_id", [(0x1060CBC, 0x1060CBC)]), "ipoib": ("pkey", [(0x7FFF, 0x7FFF)]),
                "srp": None, "any": None}
ULP_PORT_BASE = {"sdp": 0x10000, "rds": 0x1060000, "iser": 0x1060000}
ULP_CRITERIA = {"port-num": "service_id", "service-id": "service_id", "pkey": "pkey",
                "target-port-guid": "destination", "source-port-guid": "source"}


@dataclass(frozen=True)
class PortGroup:
    name: str
    guids: tuple[tuple[int, int], ...] = ()
    names: tuple[str, ...] = ()
    node_types: tuple[str, ...] = ()
    by_partition: bool = False  # lists ports by pkey/partition: membership needs the partition file
    where: Where | None = None

    def contains(self, port: str) -> bool | None:
        """Is `port` (a GUID "0x..", or "node description/P<n>" of a CA port) in the group? None: unknown."""
        if "CA" in self.node_types or "ALL" in self.node_types:
            return True  # the libraries' ports are HCA (CA) ports
        if port in self.names or (_guid(port) is not None and _in(_guid(port), self.guids)):
            return True
        return None if self.by_partition else False


@dataclass(frozen=True)
class Rule:
    """A match rule (full or ulps form): query field -> ranges or group names, and the SL it gives."""

    criteria: dict
    sl: int
    where: Where
    level: str = ""


@dataclass(frozen=True)
class QosPolicy:
    path: str
    groups: dict = field(default_factory=dict)
    levels: dict = field(default_factory=dict)  # name -> (sl, Where)
    rules: tuple[Rule, ...] = ()
    ulps: tuple[Rule, ...] = ()
    ulps_default: Rule | None = None

    def sl_for(self, query: dict) -> tuple[int | None, str]:
        """The SL the SA gives `query`, and the policy line that decides it (None: undecidable here)."""
        for rule in (*self.rules, *self.ulps):
            hit = self._matches(rule, query)
            if hit is None:
                return None, f"{rule.where} matches only if the port is in a partition-defined group " \
                             "(needs the partition file)"
            if hit:
                via = f" (qos-level {rule.level})" if rule.level else ""
                return rule.sl, f"{rule.where}{via}"
        if self.ulps_default is not None:
            return self.ulps_default.sl, str(self.ulps_default.where)
        if "DEFAULT" in self.levels:
            sl, where = self.levels["DEFAULT"]
            return sl, f"{where} (qos-level DEFAULT: no rule matched)"
        return 0, f"{self.path}: no rule matched and no default: SL 0"

    def _matches(self, rule: Rule, query: dict) -> bool | None:
        result: bool | None = True
        for key, want in rule.criteria.items():
            if key not in query:
                return False
            if key in ("source", "destination") and isinstance(want, str):
                member = self.groups[want].contains(str(query[key]))
                if member is False:
                    return False
                result = None if member is None else result
            elif key in ("source", "destination"):
                if not _in(_guid(str(query[key])), want):
                    return False
            elif not _in(query[key], want):
                return False
        return result


def _guid(text: str) -> int | None:
    try:
        return int(text, 16) if text.lower().startswith("0x") else None
    except ValueError:
        return None


def _in(value, ranges) -> bool:
    return value is not None and any(lo <= value <= hi for lo, hi in ranges)


def _ranges(text: str, where: Where) -> tuple[tuple[int, int], ...]:
    """`0x10, 0x20-0x2F, 7-9` (OpenSM's list syntax) as inclusive ranges."""
    out = []
    for token in (t.strip() for t in text.split(",")):
        lo, _, hi = token.partition("-")
        try:
            if not token.isascii() or len(token) > 60:  # int() reads other scripts' digits
                raise ValueError(token)
            out.append((int(lo, 0), int(hi or lo, 0)))
        except ValueError:
            raise InputError(where.file, f"{where.key}: {shown(token)} is not a number or range",
                             where.line) from None
    return tuple(out)


def _lines(text: str):
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if line:
            yield number, line


def load_qos_policy(path: str | Path) -> QosPolicy:
    path = str(path)
    text = read_text(path)
    groups: dict = {}
    levels: dict = {}
    rules: list[dict] = []
    ulps: list[Rule] = []
    default: Rule | None = None
    section = block = None
    entry: dict = {}
    for number, line in _lines(text):
        where = Where(path, number, line)
        if section is None:
            if line not in SECTIONS:
                raise InputError(path, f"expected a section ({', '.join(SECTIONS)}), got {shown(line)}", number)
            section, block = line, None
        elif line == f"end-{section}":
            if block is not None:
                raise InputError(path, f"{block} not closed before end-{section}", number)
            section = None
        elif section in ("qos-setup",):
            continue
        elif section == "qos-ulps":
            rule = _ulp(line, where)
            if rule.criteria:
                ulps.append(rule)
            else:
                default = rule
        elif block is None:
            if line != SECTIONS[section]:
                raise InputError(path, f"expected {SECTIONS[section]} in {section}, got {shown(line)}", number)
            block, entry = line, {"@": where}
        elif line == f"end-{block}":
            _close(block, entry, groups, levels, rules)
            block = None
        else:
            key, sep, value = line.partition(":")
            allowed = {"port-group": GROUP_KEYS, "qos-level": LEVEL_KEYS, "qos-match-rule": RULE_KEYS}[block]
            if not sep or key.strip() not in allowed:
                raise InputError(path, f"{shown(line)}: expected one of {', '.join(allowed)} followed by ':'", number)
            entry.setdefault(key.strip(), []).append((value.strip(), Where(path, number, key.strip())))
    if section is not None:
        raise InputError(path, f"{section} is not closed (end-{section})")
    return QosPolicy(path, groups, levels, tuple(_rule(r, groups, levels) for r in rules), tuple(ulps), default)


def _one(entry: dict, key: str, block: str) -> tuple[str, Where]:
    if key not in entry:
        at = entry["@"]
        raise InputError(at.file, f"{block} without {key}:", at.line)
    return entry[key][-1]


def _close(block: str, entry: dict, groups: dict, levels: dict, rules: list) -> None:
    if block == "port-group":
        name, _ = _one(entry, "name", block)
        guids = tuple(r for v, w in entry.get("port-guid", []) for r in _ranges(v, w))
        names = tuple(n.strip() for v, _ in entry.get("port-name", []) for n in v.split(","))
        types = tuple(t.strip().upper() for v, _ in entry.get("node-type", []) for t in v.split(","))
        groups[name] = PortGroup(name, guids, names, types, "pkey" in entry or "partition" in entry, entry["@"])
    elif block == "qos-level":
        name, _ = _one(entry, "name", block)
        text, where = _one(entry, "sl", block)
        levels[name] = (ascii_integer(where.file, "sl", text, 0, 15, where.line), entry["@"])
    else:
        rules.append(entry)


def _rule(entry: dict, groups: dict, levels: dict) -> Rule:
    name, where = _one(entry, "qos-level-name", "qos-match-rule")
    if name not in levels:
        raise SpecError(where.file, "qos-level-name", name, "a qos-level defined in qos-levels", where.line)
    criteria: dict = {}
    for key, field_ in (("qos-class", "qos_class"), ("service-id", "service_id"), ("pkey", "pkey")):
        if key in entry:
            criteria[field_] = _ranges(*entry[key][-1])
    for key in ("source", "destination"):
        if key in entry:
            group, at = entry[key][-1]
            if group not in groups:
                raise SpecError(at.file, key, group, "a port-group defined in port-groups", at.line)
            criteria[key] = group
    return Rule(criteria, levels[name][0], entry["@"], name)


def _ulp(line: str, where: Where) -> Rule:
    head, sep, sl_text = line.rpartition(":")
    sl_text = sl_text.strip()
    if not sep or not is_ascii_int(sl_text) or int(sl_text) > 15:
        raise InputError(where.file, f"qos-ulps: {shown(line)} is not '<ulp>[, <criterion> <value>] : <SL 0..15>'",
                         where.line)
    ulp, _, criterion = (p.strip() for p in head.partition(","))
    sl, at = int(sl_text), Where(where.file, where.line, f"qos-ulps {head.strip()}")
    if ulp == "default" and not criterion:
        return Rule({}, sl, at)
    if ulp not in ULP_DEFAULTS:
        raise SpecError(where.file, "qos-ulps", ulp, "default, " + ", ".join(ULP_DEFAULTS), where.line)
    if not criterion:
        if ULP_DEFAULTS[ulp] is None:
            raise InputError(where.file, f"qos-ulps: {ulp} needs a criterion", where.line)
        key, ranges = ULP_DEFAULTS[ulp]  # type: ignore[misc]
        return Rule({key: tuple(ranges)}, sl, at)
    name, _, value = criterion.partition(" ")
    if name not in ULP_CRITERIA:
        raise SpecError(where.file, "qos-ulps", name, ", ".join(ULP_CRITERIA), where.line)
    ranges = _ranges(value.strip(), at)
    if name == "port-num":
        base = ULP_PORT_BASE.get(ulp)
        if base is None:
            raise InputError(where.file, f"qos-ulps: port-num applies to sdp, rds, iser, not {ulp}", where.line)
        ranges = tuple((base + lo, base + hi) for lo, hi in ranges)
    return Rule({ULP_CRITERIA[name]: ranges}, sl, at)


def policy_file_of(opensm_path: str | Path) -> str | None:
    """The `qos_policy_file` an OpenSM options file names (relative paths: next to that file), if any."""
    path = Path(opensm_path)
    for line in read_text(path).splitlines():
        match = re.match(r"^\s*qos_policy_file\s+(\S+)", line)
        if match and match.group(1) != "(null)":
            return str(path.parent / match.group(1))
    return None
