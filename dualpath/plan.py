"""The Plan: what the solver decides per request, the contract every executor runs.

Per request: the PE engine, the DE engine, the hit bytes read through each side's SNIC (split reads
have both non-zero), order and batch hints, predicted times. Plan-level: makespan, lower bound, gap.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

from dualpath.errors import InputError
from dualpath.jsonio import check_versioned, read_versioned, write_json_atomic

PLAN_SCHEMA_VERSION = 1


@dataclass(frozen=True)
class Assignment:
    request: str
    pe: str
    de: str
    pe_read_bytes: int
    de_read_bytes: int
    order: int = 0  # position in the PE's FIFO
    batch: int = -1  # forward-batch hint (-1: executor decides)
    predicted_start_s: float | None = None
    predicted_end_s: float | None = None

    @property
    def read_bytes(self) -> int:
        return self.pe_read_bytes + self.de_read_bytes

    @property
    def path(self) -> str:
        """"pe", "de", "split" or "none" (nothing to read)."""
        if self.pe_read_bytes and self.de_read_bytes:
            return "split"
        if self.de_read_bytes:
            return "de"
        return "pe" if self.pe_read_bytes else "none"


@dataclass
class Plan:
    solver: str
    status: str  # "optimal", "feasible", "fallback", "greedy"
    assignments: list[Assignment]
    makespan_s: float
    lower_bound_s: float
    solve_time_s: float = 0.0
    greedy_makespan_s: float | None = None
    split_reads: bool = False
    meta: dict = field(default_factory=dict)  # cluster, model, workload names; explanations; metrics

    @property
    def gap(self) -> float:
        """makespan / lower_bound - 1; 0 when the bound is 0 (nothing to do)."""
        if self.lower_bound_s <= 0:
            return 0.0
        return max(0.0, self.makespan_s / self.lower_bound_s - 1.0)

    def by_request(self) -> dict[str, Assignment]:
        return {a.request: a for a in self.assignments}

    def to_json(self) -> dict:
        return {
            "kind": "plan",
            "schema_version": PLAN_SCHEMA_VERSION,
            "solver": self.solver,
            "status": self.status,
            "makespan_s": self.makespan_s,
            "lower_bound_s": self.lower_bound_s,
            "gap": self.gap,
            "solve_time_s": self.solve_time_s,
            "greedy_makespan_s": self.greedy_makespan_s,
            "split_reads": self.split_reads,
            "meta": self.meta,
            "assignments": [asdict(a) for a in self.assignments],
        }

    @classmethod
    def from_json(cls, data: dict, source: str = "plan") -> Plan:
        check_versioned(source, data, "plan", PLAN_SCHEMA_VERSION)
        names = {f.name for f in fields(Assignment)}
        try:
            assignments = []
            for i, row in enumerate(data["assignments"]):
                unknown = set(row) - names
                if unknown:
                    raise InputError(source, f"assignments[{i}]: unknown keys {sorted(unknown)}")
                assignments.append(Assignment(**row))
            return cls(
                solver=data["solver"], status=data["status"], assignments=assignments,
                makespan_s=float(data["makespan_s"]), lower_bound_s=float(data["lower_bound_s"]),
                solve_time_s=float(data.get("solve_time_s", 0.0)),
                greedy_makespan_s=data.get("greedy_makespan_s"),
                split_reads=bool(data.get("split_reads", False)), meta=dict(data.get("meta", {})),
            )
        except (KeyError, TypeError) as exc:
            raise InputError(source, f"malformed plan: {exc}") from exc

    def save(self, path: str) -> None:
        write_json_atomic(path, self.to_json())

    @classmethod
    def load(cls, path: str) -> Plan:
        return cls.from_json(read_versioned(path, "plan", PLAN_SCHEMA_VERSION), path)
