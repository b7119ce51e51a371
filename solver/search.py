"""The planner's search: candidate plans from the starts, then the exact model or the descents.

A `Search` holds every candidate found (greedy, decomposition starts, the exact model's answer,
descents, re-splits) and the best certified bound. Steps only add candidates; the plan is the one of
smallest bottleneck, the greedy's on ties, with its reads balanced over the SNICs where that is free.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from dualpath.errors import MissingExtraError
from dualpath.solver import decompose, descent
from dualpath.solver.bound import Bound
from dualpath.solver.coefficients import ExactResult
from dualpath.solver.partition import integral_read_nodes, integral_read_sides
from dualpath.solver.problem import Loads, Problem, Solution
from dualpath.solver.resplit import balance_reads, resplit


@dataclass(frozen=True)
class Candidate:
    """A plan the search found: its fluid bottleneck time, where it came from (reported as the method), the solution."""

    fluid_bottleneck_s: float
    origin: str
    solution: Solution


@dataclass(frozen=True)
class Seed:
    """A start the descent improves, with the read rule it improves under."""

    name: str
    solution: Solution
    split_reads: bool


class Search:
    """The candidates found so far and the best certified bound; one method per step of the search.

    The plan is the smallest-bottleneck candidate (the greedy's on ties), so every step only adds."""

    def __init__(self, problem: Problem, split_reads: bool, bound: Bound, bounds: list[Bound], notes: list[str],
                 greedy: Candidate):
        self.pb = problem
        self.split_reads = split_reads
        self.bound = bound  # the best so far; an exact model's proof may raise it
        self.bounds = bounds  # every bound computed, for the plan's report (appended to in place)
        self.notes = notes
        self.candidates = [greedy]

    def add(self, origin: str, solution: Solution) -> None:
        self.candidates.append(Candidate(Loads(self.pb, solution).fluid_bottleneck_s(), origin, solution))

    def best(self) -> Candidate:
        return min(self.candidates, key=lambda c: c.fluid_bottleneck_s)

    def pick(self) -> Candidate:
        """The best candidate; the greedy wins ties (its plan is the paper's, with nothing to explain)."""
        return min(self.candidates, key=lambda c: (c.fluid_bottleneck_s, c.origin != "greedy"))

    def add_starts(self, greedy: Solution, small: bool, time_limit_s: float, deadline: float | None = None
                   ) -> list[Seed]:
        """Decomposition starts as candidates; returns the seeds the descent improves, in order. A start
        not built by `deadline` is left out (the greedy stays)."""
        pb, split = self.pb, self.split_reads
        # A fast decomposition plan first: it is the warm start of the exact model, or the answer.
        try:
            start_sol = decompose.construct(pb, split, deadline=deadline)
        except decompose.TimeUp:
            self.notes.append("time limit: reached while building the decomposition start")
            return [Seed("greedy", greedy, split)]
        self.add("decomposition", start_sol)
        seeds = [Seed("decomposition", start_sol, split), Seed("greedy", greedy, split)]
        if split:
            # Every whole-read plan is a split plan: the whole-read descent runs too, so that a split plan
            # never ends above the whole-read plan of the same instance (the two descents have different
            # moves and local optima).
            try:
                whole_sol = decompose.construct(pb, False, deadline=deadline)
            except decompose.TimeUp:
                return seeds
            self.add("decomposition", whole_sol)
            seeds[1:1] = [Seed("whole-read decomposition", whole_sol, False)]
            seeds.append(Seed("whole-read greedy", greedy, False))
        if not split and small:
            self.add_partition_starts(time_limit_s)
        return seeds

    def add_partition_starts(self, time_limit_s: float) -> None:
        """Whole reads on a small instance: start from the read sides that meet the integral bound, and
        from those sides partitioned over each side's nodes (a multiway partition MIPs handle badly)."""
        pb = self.pb
        sides = integral_read_sides(pb)
        nodes = integral_read_nodes(pb, sides) if sides is not None else None
        starts: list[tuple[dict[int, bool] | None, dict[int, int] | None]] = []
        if sides is not None:
            starts.append((sides, None))
        if nodes:
            starts.append((None, nodes))
        for pe_side, read_node in starts:
            seeded = decompose.construct(pb, False, pe_side=pe_side, read_node=read_node)
            seeded = descent.improve(pb, seeded, False, time.perf_counter() + 0.05 * time_limit_s, self.bound.value_s)
            self.add("decomposition", seeded)

    def run_exact(self, backend: str, deadline: float, threads: int) -> tuple[str, str]:
        """The exact model, warm-started from the best candidate; returns (status, method)."""
        result = _solve_exact(self.pb, backend, self.split_reads, deadline, self.best(), threads,
                              self.bound.value_s)
        if result.solution is not None:
            self.add(result.backend, result.solution)
        if result.bound_s > self.bound.value_s:
            self.bound = Bound(result.bound_s, self.bound.family, "solver")
            self.bounds.append(self.bound)
        if result.status not in ("optimal", "feasible"):
            self.notes.append(f"{result.backend}: crashed; the best other plan stands" if result.status == "crashed"
                              else f"{result.backend}: {result.status} within the time limit")
        return ("optimal" if result.status == "optimal" else "feasible"), result.backend

    def run_descents(self, seeds: list[Seed], deadline: float, target_gap: float) -> None:
        """Each seed's descent in turn, on an equal share of the time left, until a candidate is within
        `target_gap` of the bound."""
        target = self.bound.value_s * (1 + target_gap)
        for i, seed in enumerate(seeds):
            if time.perf_counter() >= deadline:
                break
            share = (deadline - time.perf_counter()) / (len(seeds) - i)
            improved = descent.improve(self.pb, seed.solution, seed.split_reads, time.perf_counter() + share, target)
            self.add(f"{seed.name}+descent", improved)
            if self.best().fluid_bottleneck_s <= target:
                break

    def add_resplit(self, deadline: float) -> None:
        """The best candidate with its read splits re-chosen by the LP (engines fixed)."""
        best = self.best()
        try:
            resplit_sol = resplit(self.pb, best.solution, max(0.05, deadline - time.perf_counter()))
        except MissingExtraError as exc:  # PuLP alone: the re-split LP needs OR-Tools' GLOP
            resplit_sol = None
            self.notes.append(f"re-split skipped: {exc}")
        if resplit_sol is not None:
            self.add(f"{best.origin}+resplit", resplit_sol)

    def balanced(self, picked: Candidate, deadline: float) -> Solution:
        """`picked`'s solution with its reads spread over the SNICs where that costs no fluid bottleneck time."""
        solution = picked.solution
        if picked.origin == "greedy" or Loads(self.pb, solution).binding()[0] == "snic":
            return solution
        try:
            balanced = balance_reads(self.pb, solution, self.split_reads, max(0.05, deadline - time.perf_counter()))
        except MissingExtraError:
            return solution
        return balanced if Loads(self.pb, balanced).fluid_bottleneck_s() <= picked.fluid_bottleneck_s else solution


def _solve_exact(problem: Problem, backend: str, split_reads: bool, deadline: float, hint: Candidate,
                 threads: int, bound_s: float) -> ExactResult:
    limit = max(0.05, deadline - time.perf_counter())
    upper_s, hint_sol = hint.fluid_bottleneck_s, hint.solution
    if backend == "cp-sat":
        from dualpath.solver.ortools_model import solve_cpsat

        return solve_cpsat(problem, split_reads, limit, hint_sol, upper_bound_s=upper_s, threads=threads,
                           lower_bound_s=bound_s)
    if backend == "scip":
        from dualpath.solver.ortools_mip import solve_mip

        return solve_mip(problem, split_reads, limit, hint_sol, backend="SCIP", threads=threads,
                         lower_bound_s=bound_s)
    from dualpath.solver.pulp_model import solve_mip

    return solve_mip(problem, split_reads, limit, hint_sol, backend=backend, threads=threads, lower_bound_s=bound_s)
