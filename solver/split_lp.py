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
        self.node_ub: dict[str, float] = {}  # each node row's upper bound, as last set
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
        self.num_placed = 0  # slots at and past this index are empty (bounds 0, no coefficients)
        self.slot_bounds: list[tuple[float, float] | None] = [None] * slots  # (cap, hit) last set
        self.solver.Minimize(self.T)

    def solve(self, rows: list[tuple[str, str, float, float]], queue_gb: dict[str, float],
              rate_gb_per_s: dict[str, float], time_limit_s: float) -> list[float] | None:
        """rows: (pe node, de node, hit GB, PE-side cap GB) per slot; returns PE-side GB per slot."""
        # Only what differs from the last tick is passed to OR-Tools: it ignores an unchanged bound, and a
        # slot whose nodes are unchanged keeps its coefficients, so the model GLOP solves (and the vertex it
        # returns, which depends on the solves before) is the same as when every slot is rewritten.
        inf = self.solver.infinity()
        node_ub = self.node_ub
        for n, row in self.node_row.items():
            ub = -queue_gb.get(n, 0.0)
            if node_ub.get(n) != ub:
                row.SetBounds(-inf, ub)
                node_ub[n] = ub
            # Set even when unchanged, as it always was: each tick's solve then starts from a model
            # OR-Tools marks changed, whatever else the tick left alone.
            row.SetCoefficient(self.T, -rate_gb_per_s[n])
        placed, bounds = self.placed, self.slot_bounds
        for s, (pe_node, de_node, hit, cap) in enumerate(rows):
            old = placed[s]
            if old != (pe_node, de_node):
                if old is not None:
                    self.node_row[old[0]].SetCoefficient(self.pe_var[s], 0)
                    self.node_row[old[1]].SetCoefficient(self.de_var[s], 0)
                self.node_row[pe_node].SetCoefficient(self.pe_var[s], 1)
                self.node_row[de_node].SetCoefficient(self.de_var[s], 1)
                placed[s] = (pe_node, de_node)
            if bounds[s] != (cap, hit):
                self.pe_var[s].SetBounds(0, cap)
                self.de_var[s].SetBounds(0, hit)
                self.slot_row[s].SetBounds(hit, hit)
                bounds[s] = (cap, hit)
        for s in range(len(rows), self.num_placed):
            old = placed[s]
            if old is not None:
                self.node_row[old[0]].SetCoefficient(self.pe_var[s], 0)
                self.node_row[old[1]].SetCoefficient(self.de_var[s], 0)
                self.pe_var[s].SetBounds(0, 0)
                self.de_var[s].SetBounds(0, 0)
                self.slot_row[s].SetBounds(0, 0)
                placed[s] = bounds[s] = None
        self.num_placed = len(rows)
        self.solver.SetTimeLimit(max(1, int(time_limit_s * 1000)))
        if self.solver.Solve() != self.optimal:
            return None
        return [v.solution_value() for v in self.pe_var[:len(rows)]]
