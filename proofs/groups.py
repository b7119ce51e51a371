"""Run a per-table check once per distinct port table and report it against the ports that run it.

A property may also name the part of a table it reads (`key`): tables that agree on that part get the
same answer, so the check runs once per distinct part. This is what keeps a fabric where every port has
its own table (benchmarks/verify_scale.py --distinct) fast without skipping a table: every table is
still built and projected; only identical questions are asked once.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from dataclasses import dataclass

from dualpath.proofs.fabric import Fabric, Port, PortQoS
from dualpath.proofs.result import PropertyResult, proved, unknown, violated


@dataclass(frozen=True)
class Finding:
    """A violation on one table: `witness` names the entry, `fix` the line to change."""

    witness: str
    fix: str


@dataclass(frozen=True)
class Undecided:
    reason: str


@dataclass(frozen=True)
class Holds:
    """The table passes; `evidence` says by how much (worst case found)."""

    evidence: str


GroupCheck = Callable[[PortQoS, list[Port]], "Finding | Undecided | Holds | None"]


class _Ports(list):
    """The ports of one checked class, and how many distinct tables they run."""

    tables: int = 1


def ports_label(ports: list[Port]) -> str:
    first, tables = ports[0].name, getattr(ports, "tables", 1)
    if len(ports) == 1:
        return first
    same = "the same table" if tables == 1 else f"tables ({tables} distinct) that agree on what this property reads"
    return f"{first} (and {len(ports) - 1} more ports with {same})"


def _classes(fabric: Fabric, key: Callable[[PortQoS], Hashable] | None) -> list[tuple[PortQoS, _Ports]]:
    """Distinct tables, merged by `key` when given; the first table of a class stands for it."""
    merged: dict = {}
    for qos, ports in fabric.groups():
        k = qos if key is None else key(qos)
        if k in merged:
            merged[k][1].extend(ports)
            merged[k][1].tables += 1
        else:
            merged[k] = (qos, _Ports(ports))
    return list(merged.values())


def over_groups(fabric: Fabric, check: GroupCheck, name: str, family: str, question: str,
                proved_detail: str, key: Callable[[PortQoS], Hashable] | None = None) -> PropertyResult:
    groups = _classes(fabric, key)
    tables = sum(p.tables for _, p in groups)
    findings: list[tuple[Finding, _Ports]] = []
    undecided: list[str] = []
    evidence: list[str] = []
    for qos, ports in groups:
        outcome = check(qos, ports)
        if isinstance(outcome, Holds) and outcome.evidence not in evidence:
            evidence.append(outcome.evidence)
        if isinstance(outcome, Finding):
            findings.append((outcome, ports))
        elif isinstance(outcome, Undecided):
            undecided.append(f"{ports_label(ports)}: {outcome.reason}")
    if findings:
        finding, _ = findings[0]
        bad_ports = sum(len(p) for _, p in findings)
        bad_tables = sum(p.tables for _, p in findings)
        scope = f" [{bad_ports} of {len(fabric.ports)} checked ports in {bad_tables} distinct table(s) violate this]"
        return violated(name, family, question, finding.witness + scope, finding.fix,
                        detail=f"{tables} distinct port tables checked" + _asked(groups, tables))
    if undecided:
        return unknown(name, family, question, "; ".join(undecided))
    shown = "; ".join(evidence[:3]) + (f"; ... ({len(evidence) - 3} more)" if len(evidence) > 3 else "")
    return proved(name, family, question, f"{proved_detail} ({tables} distinct tables over {len(fabric.ports)} "
                                          f"ports{_asked(groups, tables)})" + (f": {shown}" if shown else ""))


def _asked(groups: list, tables: int) -> str:
    return "" if len(groups) == tables else f", {len(groups)} distinct in what this property reads"
