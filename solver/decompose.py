"""Decomposition for scale: node level first, engines inside (`construct`); `descent.improve` follows.

`construct` places requests largest first: it picks a node by the resource it would load most (its
SNIC for a read there, else its least-loaded engine), then that node's least-loaded engine; the read
side (or the split) is whichever keeps the touched resources lowest. O(R x fan log n) with no solver,
so a 48P96D cluster with 20,000 requests gets a start in seconds.
"""

from __future__ import annotations

import heapq
import time
from collections.abc import Callable

from dualpath.solver.problem import Loads, Problem, Solution

_EPS = 1e-12


class TimeUp(Exception):
    """`construct` passed its deadline before placing every request."""


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

    def smallest(self, count: int, ok: Callable[[int], bool] | None = None) -> list[int]:
        """The `count` smallest ids that pass `ok`; the heap keeps every live entry."""
        out: list[int] = []
        kept: list[tuple[float, int]] = []
        seen: set[int] = set()
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
              read_node: dict[int, int] | None = None, deadline: float | None = None) -> Solution:
    """Largest requests first, each on the node/engine/path that keeps its touched resources lowest.

    Candidates come from heaps (the `fan` least-loaded engines, and nodes by max(SNIC, best engine)),
    so a request costs O(fan log n), not O(engines). `pe_side` fixes read sides (True: PE side);
    `read_node` fixes the node whose SNIC reads a request's whole hit (whole reads). Raises `TimeUp`
    once `time.perf_counter()` passes `deadline`.
    """
    pb = problem
    st = _Placer(pb)
    total_c = sum(pb.compute_s) or 1.0
    total_h = sum(pb.hit_bytes) or 1.0
    order = sorted(range(pb.num_requests),
                   key=lambda r: (-max(pb.compute_s[r] / total_c, pb.hit_bytes[r] / total_h), r))
    best_pe = {n: min(ps, key=st.pe_key) for n, ps in st.pe_of_node.items()}
    best_de = {n: min(ds, key=st.de_key) for n, ds in st.de_of_node.items()}

    def snic_s(n: int) -> float:
        return st.loads.snic[n] / pb.snic_bytes_per_s[n]

    pe_engines = _Heap({p: st.pe_key(p) for p in range(pb.num_pe)})
    de_engines = _Heap({d: st.de_key(d) for d in range(pb.num_de)})
    pe_nodes = _Heap({n: max(snic_s(n), st.pe_key(p)) for n, p in best_pe.items()})
    de_nodes = _Heap({n: max(snic_s(n), st.de_key(d)) for n, d in best_de.items()})
    sol = Solution([0] * pb.num_requests, [0] * pb.num_requests, [0] * pb.num_requests)
    for r in order:
        if deadline is not None and time.perf_counter() >= deadline:
            raise TimeUp
        h, cap = pb.hit_bytes[r], pb.pe_read_cap_bytes(r)

        def room(d: int, r: int = r) -> bool:
            return st.hbm_room(d, r)

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
        if (split_reads and h) or not options:
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
