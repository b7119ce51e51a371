"""Z3 plumbing shared by every proof: fixed seeds, timeouts, three-valued checks, finite tables.

z3 is imported here, on first use, never at `import dualpath`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from dualpath.errors import require

TIMEOUT_MS = 20_000
_configured = False


def z3mod():
    """The z3 module with the project's fixed seeds (a clear error if the proofs extra is missing)."""
    global _configured
    z3 = require("z3", "proofs")
    if not _configured:
        z3.set_param("smt.random_seed", 0)
        z3.set_param("sat.random_seed", 0)
        z3.set_param("smt.arith.random_initial_value", False)
        _configured = True
    return z3


def solver(timeout_ms: int = TIMEOUT_MS):
    z3 = z3mod()
    s = z3.Solver()
    s.set("timeout", timeout_ms)
    s.set("random_seed", 0)
    return s


@dataclass
class Outcome:
    """`sat` means a counterexample exists (its model is kept); `unsat` means the claim is proved."""

    verdict: str  # "sat" | "unsat" | "unknown"
    model: Any = None  # a z3 ModelRef when sat (z3 ships no type information)
    reason: str = ""

    @property
    def sat(self) -> bool:
        return self.verdict == "sat"

    @property
    def unsat(self) -> bool:
        return self.verdict == "unsat"


def check(s, *assumptions) -> Outcome:
    z3 = z3mod()
    result = s.check(*assumptions)
    if result == z3.sat:
        return Outcome("sat", s.model())
    if result == z3.unsat:
        return Outcome("unsat")
    return Outcome("unknown", reason=str(s.reason_unknown()))


def lookup(index, values: Sequence[int], default: int = -1):
    """`values[index]` as a Z3 term (an If-chain), `default` outside the table."""
    z3 = z3mod()
    term = z3.IntVal(default)
    for i in reversed(range(len(values))):
        term = z3.If(index == i, z3.IntVal(int(values[i])), term)
    return term


def in_range(var, low: int, high: int):
    """low <= var < high."""
    z3 = z3mod()
    return z3.And(var >= low, var < high)


def value(model, term) -> int:
    return model.eval(term, model_completion=True).as_long()


def find_indices(count: int, violates, limit: int = 64) -> tuple[Outcome, list[int]]:
    """All indices i in [0, count) with `violates(i_term)` true, found by Z3 with blocking clauses.

    Returns the first outcome (unsat = none, the claim holds) and the violating indices in order.
    """
    z3 = z3mod()
    s = solver()
    i = z3.Int("i")
    s.add(in_range(i, 0, count), violates(i))
    first = check(s)
    found: list[int] = []
    outcome = first
    while outcome.sat and len(found) < limit:
        k = value(outcome.model, i)
        found.append(k)
        s.add(i != k)
        outcome = check(s)
    return first, sorted(found)

