"""Run a per-table check once per distinct port table and report it against the ports that run it."""

from __future__ import annotations

from collections.abc import Callable
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


def ports_label(ports: list[Port]) -> str:
    first = ports[0].name
    return first if len(ports) == 1 else f"{first} (and {len(ports) - 1} more ports with the same table)"


def over_groups(fabric: Fabric, check: GroupCheck, name: str, family: str, question: str,
                proved_detail: str) -> PropertyResult:
    groups = fabric.groups()
    findings: list[tuple[Finding, list[Port]]] = []
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
        scope = (f" [{bad_ports} of {len(fabric.ports)} checked ports in {len(findings)} distinct "
                 f"table(s) violate this]")
        return violated(name, family, question, finding.witness + scope, finding.fix,
                        detail=f"{len(groups)} distinct port tables checked")
    if undecided:
        return unknown(name, family, question, "; ".join(undecided))
    shown = "; ".join(evidence[:3]) + (f"; ... ({len(evidence) - 3} more)" if len(evidence) > 3 else "")
    return proved(name, family, question, f"{proved_detail} ({len(groups)} distinct tables over "
                                          f"{len(fabric.ports)} ports)" + (f": {shown}" if shown else ""))
