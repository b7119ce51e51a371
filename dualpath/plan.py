"""The Plan: what the solver decides per request, the contract every executor runs.

Per request: the PE engine, the DE engine, the hit bytes read through each side's SNIC (split reads
have both non-zero), order and batch hints, predicted times. Plan-level: the fluid bottleneck time (the
heaviest single-resource load, not a completion time), its lower bound and gap, and the executed JCT when
the plan was replayed.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field

from dualpath.errors import InputError, SpecError
from dualpath.jsonio import check_versioned, read_versioned, write_json_atomic
from dualpath.limits import MAX_BYTES, MAX_TRACE_RECORDS
from dualpath.records import fast_init
from dualpath.schema import fields_of, list_of

# 2: `makespan_s` became `fluid_bottleneck_s` (it is the heaviest resource load, not a completion time)
# and `executed_jct_s` was added.
PLAN_SCHEMA_VERSION = 2
_ENGINE = {"pe": re.compile(r"PE[0-9]{1,9}"), "de": re.compile(r"DE[0-9]{1,9}")}
# Byte counts are bounded by what one request can hold; order and batch are positions (batch -1: none).
_ASSIGNMENT_BOUNDS = {"pe_read_bytes": (0, MAX_BYTES), "de_read_bytes": (0, MAX_BYTES),
                      "order": (0, MAX_TRACE_RECORDS), "batch": (-1, MAX_TRACE_RECORDS)}


@fast_init
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
    fluid_bottleneck_s: float
    lower_bound_s: float
    solve_time_s: float = 0.0
    greedy_fluid_bottleneck_s: float | None = None
    split_reads: bool = False
    executed_jct_s: float | None = None  # the plan replayed in the simulator; None: not replayed
    meta: dict = field(default_factory=dict)  # cluster, model, workload names; explanations; metrics

    @property
    def gap(self) -> float:
        """fluid bottleneck time / lower_bound - 1; 0 when the bound is 0 (nothing to do)."""
        if self.lower_bound_s <= 0:
            return 0.0
        return max(0.0, self.fluid_bottleneck_s / self.lower_bound_s - 1.0)

    def by_request(self) -> dict[str, Assignment]:
        return {a.request: a for a in self.assignments}

    def to_json(self) -> dict:
        return {
            "kind": "plan",
            "schema_version": PLAN_SCHEMA_VERSION,
            "solver": self.solver,
            "status": self.status,
            "fluid_bottleneck_s": self.fluid_bottleneck_s,
            "lower_bound_s": self.lower_bound_s,
            "gap": self.gap,
            "solve_time_s": self.solve_time_s,
            "greedy_fluid_bottleneck_s": self.greedy_fluid_bottleneck_s,
            "split_reads": self.split_reads,
            "executed_jct_s": self.executed_jct_s,
            "meta": self.meta,
            "assignments": [asdict(a) for a in self.assignments],
        }

    @classmethod
    def from_json(cls, data: dict, source: str = "plan") -> Plan:
        check_versioned(source, data, "plan", PLAN_SCHEMA_VERSION)
        if data["schema_version"] < 2:
            raise InputError(source, f"plan schema_version {data['schema_version']} predates the fluid bottleneck "
                                     "rename: re-plan it with `dualpath plan`")
        # Every field is type-checked: a hand-edited plan fails here, naming the file and the field.
        rows = list_of(source, "assignments", data.get("assignments"))
        assignments, seen = [], set()
        for i, row in enumerate(rows):
            where = f"assignments[{i}]"
            assignment = Assignment(**fields_of(source, where, Assignment, row, bounds=_ASSIGNMENT_BOUNDS))
            for side in ("pe", "de"):  # the cluster's engine names; which ones exist, the executor checks
                if not _ENGINE[side].fullmatch(getattr(assignment, side)):
                    raise SpecError(source, f"{where}.{side}", getattr(assignment, side),
                                    f"an engine name {side.upper()}0, {side.upper()}1, ...")
            if assignment.request in seen:
                raise SpecError(source, f"assignments[{i}].request", assignment.request, "a request planned once")
            seen.add(assignment.request)
            assignments.append(assignment)
        top = fields_of(source, "", cls, data, handled=("assignments",), ignored=("kind", "schema_version", "gap"))
        return cls(assignments=assignments, **top)

    def save(self, path: str) -> None:
        write_json_atomic(path, self.to_json())

    @classmethod
    def load(cls, path: str) -> Plan:
        return cls.from_json(read_versioned(path, "plan", PLAN_SCHEMA_VERSION), path)
