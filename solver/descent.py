"""Bottleneck descent: improve a plan by moving, swapping or re-routing the binding resource's requests.

`improve` repeatedly takes the resource that sets the makespan and moves, swaps or re-routes one of
its requests so that every touched resource ends below the current makespan, until none helps, the
target is met or the deadline passes. O(R x nodes) per pass with no solver; it starts from
`decompose.construct` (or any plan) and is what scales the planner to 48P96D.
"""

from __future__ import annotations

import time

from dualpath.solver.decompose import _EPS, _Placer, construct
from dualpath.solver.problem import FAMILIES, Problem, Solution


def improve(problem: Problem, solution: Solution, split_reads: bool, deadline_at: float,
            target_s: float = 0.0, max_candidates: int = 12) -> Solution:
    """Bottleneck descent; stops at a local optimum, at `target_s` or at the deadline."""
    pb = problem
    sol = solution.copy()
    st = _Placer(pb, sol)
    ld = st.loads
    on_pe: list[set[int]] = [set() for _ in range(pb.num_pe)]
    on_de: list[set[int]] = [set() for _ in range(pb.num_de)]
    for r in range(pb.num_requests):
        on_pe[sol.pe[r]].add(r)
        on_de[sol.de[r]].add(r)

    def touched_max(r: int, p: int, d: int, a: float) -> float:
        n1, n2 = pb.pe_node[p], pb.de_node[d]
        return max(ld.pe_compute[p], ld.pe_cnic_in[p] / st.cn, ld.pe_cnic_out[p] / st.cn,
                   st.de_key(d), ld.snic[n1] / pb.snic_bytes_per_s[n1], ld.snic[n2] / pb.snic_bytes_per_s[n2])

    def try_move(r: int, p: int, d: int, a: float, limit: float) -> bool:
        """Re-place r on (p, d, a) if every resource it touches (old and new) ends below `limit`."""
        op, od, oa = sol.pe[r], sol.de[r], sol.pe_read_bytes[r]
        if (op, od, oa) == (p, d, a):
            return False
        if d != od and ld.de_hbm[d] + pb.context_bytes[r] > pb.hbm_capacity_bytes[d]:
            return False
        ld.add(r, op, od, oa, -1)
        ld.add(r, p, d, a)
        if max(touched_max(r, p, d, a), touched_max(r, op, od, oa)) < limit:
            on_pe[op].discard(r)
            on_de[od].discard(r)
            on_pe[p].add(r)
            on_de[d].add(r)
            sol.pe[r], sol.de[r], sol.pe_read_bytes[r] = p, d, a
            return True
        ld.add(r, p, d, a, -1)
        ld.add(r, op, od, oa)
        return False

    def try_swap(r: int, s: int, limit: float) -> bool:
        """Exchange the PEs of r and s (each keeps its read side)."""
        pr, ps_ = sol.pe[r], sol.pe[s]
        ar, as_ = sol.pe_read_bytes[r], sol.pe_read_bytes[s]
        ld.add(r, pr, sol.de[r], ar, -1)
        ld.add(s, ps_, sol.de[s], as_, -1)
        ld.add(r, ps_, sol.de[r], ar)
        ld.add(s, pr, sol.de[s], as_)
        if max(touched_max(r, ps_, sol.de[r], ar), touched_max(s, pr, sol.de[s], as_)) < limit:
            on_pe[pr].discard(r)
            on_pe[ps_].discard(s)
            on_pe[ps_].add(r)
            on_pe[pr].add(s)
            sol.pe[r], sol.pe[s] = ps_, pr
            return True
        ld.add(r, ps_, sol.de[r], ar, -1)
        ld.add(s, pr, sol.de[s], as_, -1)
        ld.add(r, pr, sol.de[r], ar)
        ld.add(s, ps_, sol.de[s], as_)
        return False

    def pe_targets(exclude: int) -> list[int]:
        ranked = sorted(range(pb.num_pe), key=lambda p: (st.pe_key(p), p))
        return [p for p in ranked if p != exclude][:max_candidates]

    def de_targets(exclude: int, by_snic: bool) -> list[int]:
        if by_snic:
            nodes = sorted(st.de_of_node, key=lambda n: (ld.snic[n] / pb.snic_bytes_per_s[n], n))
            out = [min(st.de_of_node[n], key=st.de_key) for n in nodes[:max_candidates]]
        else:
            out = sorted(range(pb.num_de), key=lambda d: (st.de_key(d), d))[:max_candidates]
        return [d for d in out if d != exclude]

    def moves_for(family: str, index: int, limit: float) -> bool:
        if family.startswith("pe_"):
            p = index
            weight = {"pe_compute": pb.compute_s, "pe_cnic_in": pb.hit_bytes}.get(family)
            members = sorted(on_pe[p], key=lambda r: -(weight[r] if weight else
                                                       pb.new_bytes[r] + sol.pe_read_bytes[r]))
            targets = pe_targets(p)
            for r in members:
                a = sol.pe_read_bytes[r]
                for q in targets:
                    moved_a = a
                    if a and split_reads and pb.pe_node[q] != pb.pe_node[p]:
                        moved_a = st.balanced_split(r, pb.pe_node[q], pb.de_node[sol.de[r]])
                    if try_move(r, q, sol.de[r], moved_a, limit) or (a and try_move(r, q, sol.de[r], 0, limit)):
                        return True
            for r in members:
                for q in targets[:4]:
                    for s in sorted(on_pe[q], key=lambda s: pb.compute_s[s])[:max_candidates]:
                        if try_swap(r, s, limit):
                            return True
            return False
        if family.startswith("de_"):
            d = index
            members = sorted(on_de[d], key=lambda r: -pb.prompt_bytes[r])
            for r in members:
                for e in de_targets(d, by_snic=False):
                    if try_move(r, sol.pe[r], e, sol.pe_read_bytes[r], limit):
                        return True
            return False
        # SNIC of node `index`: re-route a read that lands there.
        n = index
        readers = [r for p in st.pe_of_node.get(n, ()) for r in on_pe[p] if sol.pe_read_bytes[r]]
        readers += [r for d in st.de_of_node.get(n, ()) for r in on_de[d]
                    if sol.pe_read_bytes[r] < pb.hit_bytes[r]]
        readers.sort(key=lambda r: -pb.hit_bytes[r])
        for r in readers:
            p, d, h = sol.pe[r], sol.de[r], pb.hit_bytes[r]
            cap = pb.pe_read_cap_bytes(r)
            options = []
            if split_reads:
                options.append((p, d, st.balanced_split(r, pb.pe_node[p], pb.de_node[d])))
            if pb.pe_node[p] == n:  # PE-side reader: read on the DE side, here or on a quieter DE node
                options += [(p, d, 0)] + [(p, e, 0) for e in de_targets(d, by_snic=True)]
                options += [(q, d, sol.pe_read_bytes[r]) for q in pe_targets(p) if pb.pe_node[q] != n]
            else:  # DE-side reader: read on the PE side, or move to a DE on a quieter node
                if cap == h:
                    options.append((p, d, h))
                options += [(p, e, sol.pe_read_bytes[r]) for e in de_targets(d, by_snic=True)
                            if pb.de_node[e] != n]
            for q, e, a in options:
                if split_reads and (q, e) != (p, d) and 0 < a < h:
                    a = st.balanced_split(r, pb.pe_node[q], pb.de_node[e])
                if try_move(r, q, e, a, limit):
                    return True
        return not split_reads and flip_pair(n, readers, limit)

    def flip_pair(n: int, readers: list[int], limit: float) -> bool:
        """Whole reads: r leaves SNIC n for its other node m while a smaller s comes back from m;
        n sheds h_r - h_s, the subset-sum step single moves cannot make."""
        for r in readers:
            p, d, h = sol.pe[r], sol.de[r], pb.hit_bytes[r]
            on_pe_side = pb.pe_node[p] == n
            m = pb.de_node[d] if on_pe_side else pb.pe_node[p]
            if not on_pe_side and pb.pe_read_cap_bytes(r) < h:
                continue
            gap = ld.snic[n] / pb.snic_bytes_per_s[n] - ld.snic[m] / pb.snic_bytes_per_s[m]
            want = gap * pb.snic_bytes_per_s[n] / 2  # bytes to shed for equal finish times
            partners = []
            for s_ in (on_de[e] for e in st.de_of_node[m]) if on_pe_side else (on_pe[q] for q in st.pe_of_node[m]):
                for s in s_:
                    hs = pb.hit_bytes[s]
                    if s == r or hs >= h or not hs:
                        continue
                    if on_pe_side and (pb.pe_node[sol.pe[s]] != n or sol.pe_read_bytes[s]
                                       or pb.pe_read_cap_bytes(s) < hs):
                        continue  # s reads on m's (DE) side and can move to n's PE side
                    if not on_pe_side and (pb.de_node[sol.de[s]] != n or sol.pe_read_bytes[s] != hs):
                        continue  # s reads on m's (PE) side and can move to n's DE side
                    partners.append((abs(h - hs - want), s))
            for _, s in sorted(partners)[:max_candidates]:
                a_r, a_s = (0, pb.hit_bytes[s]) if on_pe_side else (h, 0)
                old = (sol.pe_read_bytes[r], sol.pe_read_bytes[s])
                ld.add(r, p, d, old[0], -1)
                ld.add(s, sol.pe[s], sol.de[s], old[1], -1)
                ld.add(r, p, d, a_r)
                ld.add(s, sol.pe[s], sol.de[s], a_s)
                if max(touched_max(r, p, d, a_r), touched_max(s, sol.pe[s], sol.de[s], a_s)) < limit:
                    sol.pe_read_bytes[r], sol.pe_read_bytes[s] = a_r, a_s
                    return True
                ld.add(r, p, d, a_r, -1)
                ld.add(s, sol.pe[s], sol.de[s], a_s, -1)
                ld.add(r, p, d, old[0])
                ld.add(s, sol.pe[s], sol.de[s], old[1])
        return False

    while time.perf_counter() < deadline_at:
        family, index, t = ld.binding()
        if t <= target_s * (1 + 1e-9):
            break
        if not moves_for(family, index, t * (1 - _EPS)):
            # Ties: another resource at the same time may still have a move.
            moved = False
            for f in FAMILIES:
                if f == family:
                    continue
                tf, i = ld.family_max(f)
                if tf >= t * (1 - 1e-9) and moves_for(f, i, t * (1 - _EPS)):
                    moved = True
                    break
            if not moved:
                break
    return sol


def solve(problem: Problem, split_reads: bool, time_limit_s: float, target_s: float = 0.0,
          start: Solution | None = None) -> Solution:
    """Construct (or take `start`), then improve until the deadline or `target_s`."""
    deadline = time.perf_counter() + time_limit_s
    sol = start.copy() if start is not None else construct(problem, split_reads)
    return improve(problem, sol, split_reads, deadline, target_s)
