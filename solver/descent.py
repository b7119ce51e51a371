"""Bottleneck descent: improve a plan by moving, swapping or re-routing the binding resource's requests.

`improve` repeatedly takes the resource that sets the bottleneck and moves, swaps or re-routes one of
its requests so that every touched resource ends below the current bottleneck, until none helps, the
target is met or the deadline passes. O(R x nodes) per pass with no solver; it starts from
`decompose.construct` (or any plan) and is what scales the planner to 48P96D.
"""

from __future__ import annotations

import time

from dualpath.solver.decompose import _EPS, _Placer, construct
from dualpath.solver.problem import FAMILIES, Problem, Solution

# (PE engine, DE engine, PE-read bytes): where one request goes and how its hit is read.
Placement = tuple[int, int, int]


def improve(problem: Problem, solution: Solution, split_reads: bool, deadline_at: float,
            target_s: float = 0.0, max_candidates: int = 12) -> Solution:
    """Bottleneck descent; stops at a local optimum, at `target_s` or at the deadline."""
    descent = _Descent(problem, solution, split_reads, max_candidates)
    while time.perf_counter() < deadline_at:
        family, index, binding_s = descent.loads.binding()
        if binding_s <= target_s * (1 + 1e-9):
            break
        if not descent.relieve_binding(family, index, binding_s):
            break  # a local optimum: no single move, swap or flip lowers the fluid bottleneck time
    return descent.sol


def solve(problem: Problem, split_reads: bool, time_limit_s: float, target_s: float = 0.0,
          start: Solution | None = None) -> Solution:
    """Construct (or take `start`), then improve until the deadline or `target_s`."""
    deadline = time.perf_counter() + time_limit_s
    sol = start.copy() if start is not None else construct(problem, split_reads)
    return improve(problem, sol, split_reads, deadline, target_s)


class _Descent:
    """The solution being improved, its loads and who sits on each engine; one method per move kind.

    Every move is tried in place on the loads and undone when a touched resource would not end below
    `limit_s`, so a failed try costs O(1) and leaves the solution as it was.
    """

    def __init__(self, problem: Problem, solution: Solution, split_reads: bool, max_candidates: int):
        self.pb = problem
        self.sol = solution.copy()
        self.placer = _Placer(problem, self.sol)
        self.loads = self.placer.loads
        self.split_reads = split_reads
        self.max_candidates = max_candidates
        self.on_pe: list[set[int]] = [set() for _ in range(problem.num_pe)]
        self.on_de: list[set[int]] = [set() for _ in range(problem.num_de)]
        for r in range(problem.num_requests):
            self.on_pe[self.sol.pe[r]].add(r)
            self.on_de[self.sol.de[r]].add(r)

    # ---- which resource to relieve -------------------------------------------------------------
    def relieve_binding(self, family: str, index: int, binding_s: float) -> bool:
        """One improving move on the binding resource, or on another one tied with it."""
        if self.relieve(family, index, binding_s * (1 - _EPS)):
            return True
        # Ties: another resource at the same time may still have a move.
        for other in FAMILIES:
            if other == family:
                continue
            other_s, other_index = self.loads.family_max(other)
            if other_s >= binding_s * (1 - 1e-9) and self.relieve(other, other_index, binding_s * (1 - _EPS)):
                return True
        return False

    def relieve(self, family: str, index: int, limit_s: float) -> bool:
        if family.startswith("pe_"):
            return self.relieve_pe(family, index, limit_s)
        if family.startswith("de_"):
            return self.relieve_de(index, limit_s)
        return self.relieve_snic(index, limit_s)

    # ---- the moves, per kind of binding resource ------------------------------------------------
    def relieve_pe(self, family: str, p: int, limit_s: float) -> bool:
        """Move one of PE p's requests (heaviest on `family` first) to a quieter PE, else swap it."""
        pb, sol = self.pb, self.sol
        weight = {"pe_compute": pb.compute_s, "pe_cnic_in": pb.hit_bytes}.get(family)
        members = sorted(self.on_pe[p], key=lambda r: -(weight[r] if weight else
                                                         pb.new_bytes[r] + sol.pe_read_bytes[r]))
        targets = self.pe_targets(p)
        for r in members:
            a = sol.pe_read_bytes[r]
            for q in targets:
                moved_a = a
                if a and self.split_reads and pb.pe_node[q] != pb.pe_node[p]:
                    moved_a = self.placer.balanced_split(r, pb.pe_node[q], pb.de_node[sol.de[r]])
                if self.try_move(r, (q, sol.de[r], moved_a), limit_s) or (
                        a and self.try_move(r, (q, sol.de[r], 0), limit_s)):
                    return True
        for r in members:
            for q in targets[:4]:
                for s in sorted(self.on_pe[q], key=lambda s: pb.compute_s[s])[:self.max_candidates]:
                    if self.try_swap(r, s, limit_s):
                        return True
        return False

    def relieve_de(self, d: int, limit_s: float) -> bool:
        """Move one of DE d's requests (largest prompt first) to a quieter DE, same PE and read side."""
        sol = self.sol
        for r in sorted(self.on_de[d], key=lambda r: -self.pb.prompt_bytes[r]):
            for e in self.de_targets(d, by_snic=False):
                if self.try_move(r, (sol.pe[r], e, sol.pe_read_bytes[r]), limit_s):
                    return True
        return False

    def relieve_snic(self, n: int, limit_s: float) -> bool:
        """Re-route a read that lands on node n's SNIC; with whole reads, else flip a pair of reads."""
        pb, sol = self.pb, self.sol
        readers = [r for p in self.placer.pe_of_node.get(n, ()) for r in self.on_pe[p] if sol.pe_read_bytes[r]]
        readers += [r for d in self.placer.de_of_node.get(n, ()) for r in self.on_de[d]
                    if sol.pe_read_bytes[r] < pb.hit_bytes[r]]
        readers.sort(key=lambda r: -pb.hit_bytes[r])
        for r in readers:
            p, d, h = sol.pe[r], sol.de[r], pb.hit_bytes[r]
            for q, e, a in self.reroutes(r, n):
                if self.split_reads and (q, e) != (p, d) and 0 < a < h:
                    a = self.placer.balanced_split(r, pb.pe_node[q], pb.de_node[e])
                if self.try_move(r, (q, e, a), limit_s):
                    return True
        return not self.split_reads and self.flip_pair(n, readers, limit_s)

    def reroutes(self, r: int, n: int) -> list[Placement]:
        """Placements of r that read less of its hit through node n's SNIC."""
        pb, sol = self.pb, self.sol
        p, d, h = sol.pe[r], sol.de[r], pb.hit_bytes[r]
        options: list[Placement] = []
        if self.split_reads:
            options.append((p, d, self.placer.balanced_split(r, pb.pe_node[p], pb.de_node[d])))
        if pb.pe_node[p] == n:  # PE-side reader: read on the DE side, here or on a quieter DE node
            options += [(p, d, 0)] + [(p, e, 0) for e in self.de_targets(d, by_snic=True)]
            options += [(q, d, sol.pe_read_bytes[r]) for q in self.pe_targets(p) if pb.pe_node[q] != n]
        else:  # DE-side reader: read on the PE side, or move to a DE on a quieter node
            if pb.pe_read_cap_bytes(r) == h:
                options.append((p, d, h))
            options += [(p, e, sol.pe_read_bytes[r]) for e in self.de_targets(d, by_snic=True)
                        if pb.de_node[e] != n]
        return options

    def flip_pair(self, n: int, readers: list[int], limit_s: float) -> bool:
        """Whole reads: r leaves SNIC n for its other node m while a smaller s comes back from m;
        n sheds h_r - h_s, the subset-sum step single moves cannot make."""
        pb, sol, snic = self.pb, self.sol, self.loads.snic
        for r in readers:
            p, d, h = sol.pe[r], sol.de[r], pb.hit_bytes[r]
            on_pe_side = pb.pe_node[p] == n
            m = pb.de_node[d] if on_pe_side else pb.pe_node[p]
            if not on_pe_side and pb.pe_read_cap_bytes(r) < h:
                continue
            gap_s = snic[n] / pb.snic_bytes_per_s[n] - snic[m] / pb.snic_bytes_per_s[m]
            want = gap_s * pb.snic_bytes_per_s[n] / 2  # bytes to shed for equal finish times
            for s in self.flip_partners(r, n, m, on_pe_side, want):
                a_r, a_s = (0, pb.hit_bytes[s]) if on_pe_side else (h, 0)
                if self.try_reads(r, a_r, s, a_s, limit_s):
                    return True
        return False

    def flip_partners(self, r: int, n: int, m: int, on_pe_side: bool, want: float) -> list[int]:
        """Requests with a smaller hit that read on m's side and can read on n's side instead, the
        ones whose flip with r sheds closest to `want` bytes first."""
        pb, sol = self.pb, self.sol
        h = pb.hit_bytes[r]
        pools = ([self.on_de[e] for e in self.placer.de_of_node[m]] if on_pe_side
                 else [self.on_pe[q] for q in self.placer.pe_of_node[m]])
        partners: list[tuple[float, int]] = []
        for pool in pools:
            for s in pool:
                hs = pb.hit_bytes[s]
                if s == r or hs >= h or not hs:
                    continue
                if on_pe_side and (pb.pe_node[sol.pe[s]] != n or sol.pe_read_bytes[s]
                                   or pb.pe_read_cap_bytes(s) < hs):
                    continue  # s reads on m's (DE) side and can move to n's PE side
                if not on_pe_side and (pb.de_node[sol.de[s]] != n or sol.pe_read_bytes[s] != hs):
                    continue  # s reads on m's (PE) side and can move to n's DE side
                partners.append((abs(h - hs - want), s))
        return [s for _, s in sorted(partners)[:self.max_candidates]]

    # ---- candidate engines ---------------------------------------------------------------------
    def pe_targets(self, exclude: int) -> list[int]:
        ranked = sorted(range(self.pb.num_pe), key=lambda p: (self.placer.pe_key(p), p))
        return [p for p in ranked if p != exclude][:self.max_candidates]

    def de_targets(self, exclude: int, by_snic: bool) -> list[int]:
        """The least-loaded DEs, or (`by_snic`) the least-loaded DE of each of the quietest DE nodes."""
        pb, placer, snic = self.pb, self.placer, self.loads.snic
        if by_snic:
            nodes = sorted(placer.de_of_node, key=lambda n: (snic[n] / pb.snic_bytes_per_s[n], n))
            out = [min(placer.de_of_node[n], key=placer.de_key) for n in nodes[:self.max_candidates]]
        else:
            out = sorted(range(pb.num_de), key=lambda d: (placer.de_key(d), d))[:self.max_candidates]
        return [d for d in out if d != exclude]

    # ---- tries: apply to the loads, keep when every touched resource ends below limit_s ---------
    def touched_max(self, p: int, d: int) -> float:
        """The latest finish among PE p's, DE d's and their nodes' SNICs' resources."""
        pb, ld, cn = self.pb, self.loads, self.placer.cn
        n1, n2 = pb.pe_node[p], pb.de_node[d]
        return max(ld.pe_compute[p], ld.pe_cnic_in[p] / cn, ld.pe_cnic_out[p] / cn, self.placer.de_key(d),
                   ld.snic[n1] / pb.snic_bytes_per_s[n1], ld.snic[n2] / pb.snic_bytes_per_s[n2])

    def try_move(self, r: int, to: Placement, limit_s: float) -> bool:
        """Re-place r on `to` if every resource it touches (old and new) ends below `limit_s`."""
        pb, sol, ld = self.pb, self.sol, self.loads
        p, d, a = to
        op, od, oa = sol.pe[r], sol.de[r], sol.pe_read_bytes[r]
        if (op, od, oa) == (p, d, a):
            return False
        if d != od and ld.de_hbm[d] + pb.context_bytes[r] > pb.hbm_capacity_bytes[d]:
            return False
        ld.add(r, op, od, oa, -1)
        ld.add(r, p, d, a)
        if max(self.touched_max(p, d), self.touched_max(op, od)) < limit_s:
            self.on_pe[op].discard(r)
            self.on_de[od].discard(r)
            self.on_pe[p].add(r)
            self.on_de[d].add(r)
            sol.pe[r], sol.de[r], sol.pe_read_bytes[r] = p, d, a
            return True
        ld.add(r, p, d, a, -1)
        ld.add(r, op, od, oa)
        return False

    def try_swap(self, r: int, s: int, limit_s: float) -> bool:
        """Exchange the PEs of r and s (each keeps its DE and read side)."""
        sol, ld = self.sol, self.loads
        pr, ps = sol.pe[r], sol.pe[s]
        dr, ds = sol.de[r], sol.de[s]
        ar, as_ = sol.pe_read_bytes[r], sol.pe_read_bytes[s]
        ld.add(r, pr, dr, ar, -1)
        ld.add(s, ps, ds, as_, -1)
        ld.add(r, ps, dr, ar)
        ld.add(s, pr, ds, as_)
        if max(self.touched_max(ps, dr), self.touched_max(pr, ds)) < limit_s:
            self.on_pe[pr].discard(r)
            self.on_pe[ps].discard(s)
            self.on_pe[ps].add(r)
            self.on_pe[pr].add(s)
            sol.pe[r], sol.pe[s] = ps, pr
            return True
        ld.add(r, ps, dr, ar, -1)
        ld.add(s, pr, ds, as_, -1)
        ld.add(r, pr, dr, ar)
        ld.add(s, ps, ds, as_)
        return False

    def try_reads(self, r: int, a_r: int, s: int, a_s: int, limit_s: float) -> bool:
        """Set the PE-read bytes of r and s together (engines unchanged)."""
        sol, ld = self.sol, self.loads
        pr, dr, ps, ds = sol.pe[r], sol.de[r], sol.pe[s], sol.de[s]
        old_r, old_s = sol.pe_read_bytes[r], sol.pe_read_bytes[s]
        ld.add(r, pr, dr, old_r, -1)
        ld.add(s, ps, ds, old_s, -1)
        ld.add(r, pr, dr, a_r)
        ld.add(s, ps, ds, a_s)
        if max(self.touched_max(pr, dr), self.touched_max(ps, ds)) < limit_s:
            sol.pe_read_bytes[r], sol.pe_read_bytes[s] = a_r, a_s
            return True
        ld.add(r, pr, dr, a_r, -1)
        ld.add(s, ps, ds, a_s, -1)
        ld.add(r, pr, dr, old_r)
        ld.add(s, ps, ds, old_s)
        return False
