"""The online scheduler's incremental LP: re-balance one tick's read splits so every SNIC finishes early.

One GLOP model kept across ticks: each tick changes only bounds, right-hand sides and the two
coefficients that place a slot's variables in its PE node's and DE node's rows, so a tick's LP starts
from the previous basis.
"""

from __future__ import annotations

from collections.abc import Sequence

from dualpath.errors import require


class SplitLP:
    """min T s.t. node n: queue_n + reads through n <= rate_n x T; slot s: pe_s + de_s = hit_s.

    Built once for `slots` requests and `nodes`; each tick only changes bounds, right-hand sides and
    the two coefficients that place a slot's variables in its PE node's and DE node's rows. GLOP keeps
    its basis across solves, so a tick's LP starts from the previous one (the incremental form).
    """

    def __init__(self, node_names: Sequence[str], slots: int):
        pywraplp = require("ortools.linear_solver.pywraplp", "solver")
        self.solver = pywraplp.Solver.CreateSolver("GLOP")
        self.optimal = pywraplp.Solver.OPTIMAL
        inf = self.solver.infinity()
        self.node_row = {}
        self.T = self.solver.NumVar(0, inf, "T")
        for n in node_names:
            row = self.solver.Constraint(-inf, 0.0)
            self.node_row[n] = row
        self.pe_var = [self.solver.NumVar(0, 0, f"pe[{s}]") for s in range(slots)]
        self.de_var = [self.solver.NumVar(0, 0, f"de[{s}]") for s in range(slots)]
        self.slot_row = []
        for s in range(slots):
            row = self.solver.Constraint(0, 0)
            row.SetCoefficient(self.pe_var[s], 1)
            row.SetCoefficient(self.de_var[s], 1)
            self.slot_row.append(row)
        self.placed: list[tuple[str, str] | None] = [None] * slots
        self.solver.Minimize(self.T)

    def solve(self, rows: list[tuple[str, str, float, float]], queue_gb: dict[str, float],
              rate_gb_per_s: dict[str, float], time_limit_s: float) -> list[float] | None:
        """rows: (pe node, de node, hit GB, PE-side cap GB) per slot; returns PE-side GB per slot."""
        for n, row in self.node_row.items():
            row.SetBounds(-self.solver.infinity(), -queue_gb.get(n, 0.0))
            row.SetCoefficient(self.T, -rate_gb_per_s[n])
        for s in range(len(self.placed)):
            old = self.placed[s]
            if old is None and s >= len(rows):
                continue  # still empty: its bounds are 0 already, and OR-Tools ignores unchanged bounds
            if old is not None:
                self.node_row[old[0]].SetCoefficient(self.pe_var[s], 0)
                self.node_row[old[1]].SetCoefficient(self.de_var[s], 0)
            if s < len(rows):
                pe_node, de_node, hit, cap = rows[s]
                self.node_row[pe_node].SetCoefficient(self.pe_var[s], 1)
                self.node_row[de_node].SetCoefficient(self.de_var[s], 1)
                self.pe_var[s].SetBounds(0, cap)
                self.de_var[s].SetBounds(0, hit)
                self.slot_row[s].SetBounds(hit, hit)
                self.placed[s] = (pe_node, de_node)
            else:
                self.pe_var[s].SetBounds(0, 0)
                self.de_var[s].SetBounds(0, 0)
                self.slot_row[s].SetBounds(0, 0)
                self.placed[s] = None
        self.solver.SetTimeLimit(max(1, int(time_limit_s * 1000)))
        if self.solver.Solve() != self.optimal:
            return None
        return [self.pe_var[s].solution_value() for s in range(len(rows))]
