"""Decomposition for scale: node level first, engines inside, then bottleneck descent.

`construct` places requests largest first: it picks a node by the resource it would load most (its
SNIC for a read there, else its least-loaded engine), then that node's least-loaded engine; the read
side (or the split) is whichever keeps the touched resources lowest. `improve` repeatedly takes the
resource that sets the makespan and moves, swaps or re-routes one of its requests so that every touched
resource ends below the current makespan, until none helps or the deadline passes. Both are O(R x
nodes) per pass with no solver, so a 48P96D cluster with 20,000 requests gets a plan in seconds.
"""

from __future__ import annotations

import heapq
import time

from dualpath.solver.problem import FAMILIES, Loads, Problem, Solution

_EPS = 1e-12


class _Placer:
    """Loads plus per-node engine lists and the per-request arithmetic the moves share."""

    def __init__(self, problem: Problem, solution: Solution | None = None):
        pb = self.pb = problem
        self.loads = Loads(problem, solution)
        self.cn = pb.cnic_bytes_per_s
        self.pe_of_node: dict[int, list[int]] = {}
        self.de_of_node: dict[int, list[int]] = {}
        for p, n in enumerate(pb.pe_node):
            self.pe_of_node.setdefault(n, []).append(p)
        for d, n in enumerate(pb.de_node):
            self.de_of_node.setdefault(n, []).append(d)
        self.split_unit = pb.kv_bytes_per_token * pb.block_tokens

    # -- times of one engine / node after adding request r (pe_read bytes on the PE side) --
    def pe_after(self, p: int, r: int, pe_read: float) -> float:
        ld, pb = self.loads, self.pb
        return max(ld.pe_compute[p] + pb.compute_s[r], (ld.pe_cnic_in[p] + pb.hit_bytes[r]) / self.cn,
                   (ld.pe_cnic_out[p] + pb.new_bytes[r] + pe_read) / self.cn)

    def de_after(self, d: int, r: int, de_read: float) -> float:
        ld, pb = self.loads, self.pb
        return max((ld.de_cnic_out[d] + de_read + pb.prompt_bytes[r]) / self.cn,
                   (ld.de_cnic_in[d] + pb.prompt_bytes[r] - de_read) / self.cn)

    def snic_after(self, n: int, add: float) -> float:
        return (self.loads.snic[n] + add) / self.pb.snic_bytes_per_s[n]

    def io_after(self, r: int, p: int, d: int, pe_read: float) -> float:
        """The latest SNIC or CNIC finish among those placing r on (p, d, pe_read) touches."""
        ld, pb = self.loads, self.pb
        h = pb.hit_bytes[r]
        return max(self.snic_after(pb.pe_node[p], pe_read), self.snic_after(pb.de_node[d], h - pe_read),
                   (ld.pe_cnic_in[p] + h) / self.cn, (ld.pe_cnic_out[p] + pb.new_bytes[r] + pe_read) / self.cn,
                   self.de_after(d, r, h - pe_read))

    def pe_key(self, p: int) -> float:
        ld = self.loads
        return max(ld.pe_compute[p], ld.pe_cnic_in[p] / self.cn, ld.pe_cnic_out[p] / self.cn)

    def de_key(self, d: int) -> float:
        ld = self.loads
        return max(ld.de_cnic_out[d], ld.de_cnic_in[d]) / self.cn

    def hbm_room(self, d: int, r: int) -> bool:
        return self.loads.de_hbm[d] + self.pb.context_bytes[r] <= self.pb.hbm_capacity_bytes[d]

    def balanced_split(self, r: int, n_pe: int, n_de: int) -> int:
        """PE-side bytes that equalise the two SNICs' finish times, on whole blocks when possible."""
        pb, ld = self.pb, self.loads
        h = pb.hit_bytes[r]
        s1, s2 = pb.snic_bytes_per_s[n_pe], pb.snic_bytes_per_s[n_de]
        if n_pe == n_de:
            return pb.pe_read_cap_bytes(r)
        a = (s1 * (ld.snic[n_de] + h) - s2 * ld.snic[n_pe]) / (s1 + s2)
        unit = self.split_unit if h % self.split_unit == 0 else pb.kv_bytes_per_token
        a = round(a / unit) * unit
        return int(min(max(a, 0), pb.pe_read_cap_bytes(r)))


class _Heap:
    """Min-heap of ids by a key that changes: stale entries are skipped when popped."""

    def __init__(self, keys: dict[int, float]):
        self.key = dict(keys)
        self.heap = [(k, i) for i, k in self.key.items()]
        heapq.heapify(self.heap)

    def update(self, i: int, key: float) -> None:
        if self.key[i] != key:
            self.key[i] = key
            heapq.heappush(self.heap, (key, i))

    def smallest(self, count: int, ok=None) -> list[int]:
        out, kept, seen = [], [], set()
        while self.heap and len(out) < count:
            key, i = heapq.heappop(self.heap)
            if self.key[i] != key or i in seen:
                continue
            seen.add(i)
            kept.append((key, i))
            if ok is None or ok(i):
                out.append(i)
        for entry in kept:
            heapq.heappush(self.heap, entry)
        return out


def construct(problem: Problem, split_reads: bool, fan: int = 4, pe_side: dict[int, bool] | None = None,
              read_node: dict[int, int] | None = None) -> Solution:
    """Largest requests first, each on the node/engine/path that keeps its touched resources lowest.

    Candidates come from heaps (the `fan` least-loaded engines, and nodes by max(SNIC, best engine)),
    so a request costs O(fan log n), not O(engines). `pe_side` fixes read sides (True: PE side);
    `read_node` fixes the node whose SNIC reads a request's whole hit (whole reads).
    """
    pb = problem
    st = _Placer(pb)
    total_c = sum(pb.compute_s) or 1.0
    total_h = sum(pb.hit_bytes) or 1.0
    order = sorted(range(pb.num_requests),
                   key=lambda r: (-max(pb.compute_s[r] / total_c, pb.hit_bytes[r] / total_h), r))
    best_pe = {n: min(ps, key=st.pe_key) for n, ps in st.pe_of_node.items()}
    best_de = {n: min(ds, key=st.de_key) for n, ds in st.de_of_node.items()}
    snic_s = lambda n: st.loads.snic[n] / pb.snic_bytes_per_s[n]
    pe_engines = _Heap({p: st.pe_key(p) for p in range(pb.num_pe)})
    de_engines = _Heap({d: st.de_key(d) for d in range(pb.num_de)})
    pe_nodes = _Heap({n: max(snic_s(n), st.pe_key(p)) for n, p in best_pe.items()})
    de_nodes = _Heap({n: max(snic_s(n), st.de_key(d)) for n, d in best_de.items()})
    sol = Solution([0] * pb.num_requests, [0] * pb.num_requests, [0] * pb.num_requests)
    for r in order:
        h, cap = pb.hit_bytes[r], pb.pe_read_cap_bytes(r)
        room = lambda d, r=r: st.hbm_room(d, r)
        # PE side: best engine for a DE-side read, and for a PE-side read (its node's SNIC counts).
        pe_plain = min((st.pe_after(p, r, 0), p) for p in pe_engines.smallest(fan))
        pe_read = None
        node = read_node.get(r) if read_node is not None else None
        if cap == h or split_reads:
            pe_read = min((max(st.pe_after(best_pe[n], r, cap), st.snic_after(n, cap)), best_pe[n])
                          for n in ([node] if node in best_pe else pe_nodes.smallest(fan)))
        # DE side: least-loaded engines with HBM room; nodes by SNIC for a DE-side read.
        plain_des = de_engines.smallest(fan, room) or [d for d in range(pb.num_de) if room(d)]
        if not plain_des:
            raise RuntimeError(f"no DE has HBM room for {pb.requests[r].id}: hbm_waves too small")
        de_plain = min((st.de_after(d, r, 0), d) for d in plain_des)
        read_des = []
        for n in ([node] if node in best_de else de_nodes.smallest(fan)):
            d = best_de[n] if room(best_de[n]) else min(
                (e for e in st.de_of_node[n] if room(e)), key=st.de_key, default=None)
            if d is not None:
                read_des.append(d)
        de_read = min(((max(st.de_after(d, r, h), st.snic_after(pb.de_node[d], h)), d) for d in read_des),
                      default=None)
        options = []
        forced = pe_side.get(r) if pe_side is not None else None
        if node is not None:
            forced = node in best_pe
        if de_read is not None and forced is not True:
            options.append((max(pe_plain[0], de_read[0]), pe_plain[1], de_read[1], 0))
        if pe_read is not None and cap == h and forced is not False:
            options.append((max(pe_read[0], de_plain[0]), pe_read[1], de_plain[1], h))
        if split_reads and h or not options:
            p = pe_read[1] if pe_read is not None else pe_plain[1]
            d = de_read[1] if de_read is not None else de_plain[1]
            a = st.balanced_split(r, pb.pe_node[p], pb.de_node[d]) if split_reads else 0
            t = max(st.pe_after(p, r, a), st.de_after(d, r, h - a),
                    st.snic_after(pb.pe_node[p], a), st.snic_after(pb.de_node[d], h - a))
            options.append((t, p, d, a))
        # Ties on the touched maximum (compute-bound batches) go to the option that leaves I/O slack.
        _, p, d, a = min(options, key=lambda o: (o[0], st.io_after(r, o[1], o[2], o[3]), -o[3]))
        sol.pe[r], sol.de[r], sol.pe_read_bytes[r] = p, d, a
        st.loads.add(r, p, d, a)
        n, m = pb.pe_node[p], pb.de_node[d]
        best_pe[n] = min(st.pe_of_node[n], key=st.pe_key)
        best_de[m] = min(st.de_of_node[m], key=st.de_key)
        pe_engines.update(p, st.pe_key(p))
        de_engines.update(d, st.de_key(d))
        pe_nodes.update(n, max(snic_s(n), st.pe_key(best_pe[n])))
        de_nodes.update(m, max(snic_s(m), st.de_key(best_de[m])))
    return sol


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
