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
        # The per-tick calls go straight to SWIG's functions with the objects' raw handles (`.this`): each
        # proxy method of the pinned OR-Tools is a one-line forward to these, and the forward's argument
        # checks cost ten times the call (64 `solution_value()` calls: 21 us; the raw ones: 1.7 us).
        raw = require("ortools.linear_solver._pywraplp", "solver")
        self._set_coefficient, self._set_row_bounds = raw.Constraint_SetCoefficient, raw.Constraint_SetBounds
        self._set_var_bounds, self._value = raw.Variable_SetBounds, raw.Variable_solution_value
        self._set_time_limit, self._solve = raw.Solver_SetTimeLimit, raw.Solver_Solve
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
        self._raw_solver, self._raw_T = self.solver.this, self.T.this
        self._raw_node_row = {n: row.this for n, row in self.node_row.items()}
        self._raw_pe = [v.this for v in self.pe_var]
        self._raw_de = [v.this for v in self.de_var]
        self._raw_slot_row = [row.this for row in self.slot_row]
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
        set_coefficient, set_row_bounds = self._set_coefficient, self._set_row_bounds
        set_var_bounds, T = self._set_var_bounds, self._raw_T
        node_row, pe_var, de_var, slot_row = self._raw_node_row, self._raw_pe, self._raw_de, self._raw_slot_row
        node_ub = self.node_ub
        for n, row in node_row.items():
            ub = -queue_gb.get(n, 0.0)
            if node_ub.get(n) != ub:
                set_row_bounds(row, -inf, ub)
                node_ub[n] = ub
            # Set even when unchanged, as it always was: each tick's solve then starts from a model
            # OR-Tools marks changed, whatever else the tick left alone.
            set_coefficient(row, T, -rate_gb_per_s[n])
        placed, bounds = self.placed, self.slot_bounds
        for s, (pe_node, de_node, hit, cap) in enumerate(rows):
            old = placed[s]
            if old != (pe_node, de_node):
                if old is not None:
                    set_coefficient(node_row[old[0]], pe_var[s], 0)
                    set_coefficient(node_row[old[1]], de_var[s], 0)
                set_coefficient(node_row[pe_node], pe_var[s], 1)
                set_coefficient(node_row[de_node], de_var[s], 1)
                placed[s] = (pe_node, de_node)
            if bounds[s] != (cap, hit):
                set_var_bounds(pe_var[s], 0, cap)
                set_var_bounds(de_var[s], 0, hit)
                set_row_bounds(slot_row[s], hit, hit)
                bounds[s] = (cap, hit)
        for s in range(len(rows), self.num_placed):
            old = placed[s]
            if old is not None:
                set_coefficient(node_row[old[0]], pe_var[s], 0)
                set_coefficient(node_row[old[1]], de_var[s], 0)
                set_var_bounds(pe_var[s], 0, 0)
                set_var_bounds(de_var[s], 0, 0)
                set_row_bounds(slot_row[s], 0, 0)
                placed[s] = bounds[s] = None
        self.num_placed = len(rows)
        self._set_time_limit(self._raw_solver, max(1, int(time_limit_s * 1000)))
        if self._solve(self._raw_solver) != self.optimal:
            return None
        value = self._value
        return [value(v) for v in pe_var[:len(rows)]]
