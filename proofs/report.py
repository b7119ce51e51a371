"""`verify(...)`: every property of a configuration as a question/answer report (JSON, HTML, text).

Exit codes: 0 every property proved, 1 any violated, 3 any unknown (a violation wins). Bad input raises
`InputError` / `SpecError` naming the file and line before any proof runs.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from dualpath.proofs import arbitration, qos_lanes, roce
from dualpath.proofs.fabric import build_fabric
from dualpath.proofs.library_settings import check_library_settings
from dualpath.proofs.opensm import load_opensm
from dualpath.proofs.overrides import load_overrides
from dualpath.proofs.pd_range import check_pd_range
from dualpath.proofs.policy_sl import asks_policy, check_policy_sl, load_policy
from dualpath.proofs.protocol_check import admission_of, check_channels, check_deadlock
from dualpath.proofs.result import PropertyResult, Status, timed
from dualpath.proofs.roce_spec import load_roce
from dualpath.proofs.traffic import load_traffic, with_sources

SCHEMA_VERSION = 1


@dataclass
class VerificationReport:
    properties: list[PropertyResult]
    inputs: dict = field(default_factory=dict)
    total_time_s: float = 0.0
    # What OpenSM would warn about (or silently do) reading the inputs, "file:line: key: message [source]";
    # warnings never change the exit code: the proofs already run on the tables OpenSM programs.
    warnings: list[str] = field(default_factory=list)

    def count(self, status: Status) -> int:
        return sum(1 for p in self.properties if p.status is status)

    def exit_code(self) -> int:
        if self.count(Status.VIOLATED):
            return 1
        if self.count(Status.UNKNOWN):
            return 3
        return 0

    @property
    def summary(self) -> str:
        counts = (f"{len(self.properties)} properties: {self.count(Status.PROVED)} proved, "
                  f"{self.count(Status.VIOLATED)} violated, {self.count(Status.UNKNOWN)} unknown "
                  f"({self.total_time_s:.2f} s)")
        bad = [p.name for p in self.properties if p.status is Status.VIOLATED]
        open_ = [p.name for p in self.properties if p.status is Status.UNKNOWN]
        verdict = "VIOLATED: " + ", ".join(bad) if bad else ("UNKNOWN: " + ", ".join(open_) if open_ else "all hold")
        warned = f"; {len(self.warnings)} OpenSM warning(s)" if self.warnings else ""
        return f"verify: {verdict}; {counts}{warned}"

    def to_json(self) -> dict:
        return {
            "kind": "verification_report",
            "schema_version": SCHEMA_VERSION,
            "summary": self.summary,
            "exit_code": self.exit_code(),
            "inputs": self.inputs,
            "total_time_s": round(self.total_time_s, 6),
            "warnings": list(self.warnings),
            "properties": [p.to_json() for p in self.properties],
        }

    def to_text(self) -> str:
        lines = [f"[warning ] {w}" for w in self.warnings]
        for p in self.properties:
            lines.append(f"[{p.status.value:8}] {p.name}: {p.question} ({p.time_s:.3f} s)")
            if p.status is Status.VIOLATED:
                witness = p.witness.get("cycle", str(p.witness)) if isinstance(p.witness, dict) else p.witness
                lines.append(f"           witness: {witness}")
                lines.append(f"           fix: {p.fix}")
            elif p.status is Status.UNKNOWN:
                lines.append(f"           why: {p.detail}")
        return "\n".join(lines)

    def to_html(self) -> str:
        from dualpath.proofs.report_html import render

        return render(self)


def verify(opensm_path, traffic_path, roce_path=None, protocol: str = "default",
           overrides_path=None, *, qos_policy_path=None, env_paths=(), pod_paths=(), mlnx_qos_path=None,
           sonic_path=None) -> VerificationReport:
    """Parse every input (errors name file and line), then answer every property.

    The fabric's own state, where given, replaces transcriptions: `qos_policy_path` (else opensm.conf's
    qos_policy_file), `env_paths`/`pod_paths` (else the plan's env_file/pod_specs), `mlnx_qos_path` and
    `sonic_path` (else roce.toml's mlnx_qos/sonic_config_db, else its own NIC lines)."""
    start = time.perf_counter()
    admission_of(protocol)  # an unknown protocol name is bad input, reported before any proof runs
    opensm = load_opensm(opensm_path)
    plan = with_sources(load_traffic(traffic_path), env_paths, pod_paths)
    policy_path, policy = load_policy(opensm_path, qos_policy_path)
    overrides = load_overrides(overrides_path) if overrides_path else None
    roce_config = load_roce(roce_path, mlnx_qos_path, sonic_path) if roce_path else None
    if roce_config is not None:
        missing = [k.name for k in plan.classes if k.name not in roce_config.classes]
        if missing:
            from dualpath.errors import SpecError

            raise SpecError(roce_config.path, f"classes.{missing[0]}", None,
                            "a [classes.<name>] entry (dscp, tc, lossless) for every class of the traffic plan")
    fabric = build_fabric(opensm, overrides)
    parsed = time.perf_counter()
    checks = qos_lanes.check_all(opensm, fabric, plan) + arbitration.check_all(fabric, plan)
    checks.append(("library_settings", check_library_settings, (plan,)))
    if asks_policy(plan, policy_path):
        checks.append(("qos_policy_sl", check_policy_sl, (policy, plan)))
    if roce_config is not None:
        checks += roce.check_all(roce_config, plan)
    checks += [("deadlock_free", check_deadlock, (protocol,)), ("channel_dependency_acyclic", check_channels,
                                                                 (protocol,))]
    if plan.cluster is not None:
        checks.append(("pd_bottleneck_free", check_pd_range, (plan.cluster,)))
    results = [timed(fn, *args) for _, fn, args in checks]
    inputs = {"opensm": str(opensm_path), "traffic": str(traffic_path), "roce": roce_path and str(roce_path),
              "overrides": overrides_path and str(overrides_path), "env": plan.env_path, "protocol": protocol,
              "environments": [e.label for e in plan.envs], "qos_policy": policy_path,
              "roce_hops": [h.name for h in roce_config.hops] if roce_config else [],
              "ports_checked": len(fabric.ports), "distinct_port_tables": len(fabric.groups()),
              "parse_time_s": round(parsed - start, 6)}
    return VerificationReport(results, inputs, time.perf_counter() - start, [str(w) for w in opensm.warnings])
