"""The online scheduler's incremental LP: optimal on every tick of a long random sequence, and the same
vertices as a model whose every slot is rewritten each tick (what `optimized`'s results rest on)."""

import importlib.util
import itertools
import random

import pytest

from dualpath.solver.split_lp import SplitLP

# Not importorskip: collection must not load OR-Tools, which the nixl session's process cannot share.
pytestmark = pytest.mark.skipif(importlib.util.find_spec("ortools") is None,
                                reason="OR-Tools is not installed (the solver extra)")

NODES = ["P0", "P1", "D0", "D1", "D2", "D3"]
SLOTS = 8


def random_ticks(seed: int, num_ticks: int):
    """Windows of 0..SLOTS reads: a tick often repeats the last one's placements (or all of it), so
    unchanged slots, emptied slots and re-placed slots all occur."""
    rng = random.Random(seed)
    rate = {n: rng.choice([25.0, 50.0, 50.0, 100.0]) for n in NODES}
    ticks = []
    rows: list[tuple[str, str, float, float]] = []
    queue = dict.fromkeys(NODES, 0.0)
    for _ in range(num_ticks):
        if rng.random() < 0.2:  # the same tick again
            ticks.append((list(rows), dict(queue), rate))
            continue
        num = rng.randint(0, SLOTS)
        kept = rows[:num] if rng.random() < 0.5 else []
        rows = kept + [(rng.choice(NODES[:2]), rng.choice(NODES[2:]), h, min(h, rng.choice([h, 0.3, 1.0])))
                       for h in (round(rng.uniform(0.0, 2.0), 3) for _ in range(num - len(kept)))]
        queue = {n: (0.0 if rng.random() < 0.3 else round(rng.uniform(0.0, 5.0), 3)) for n in NODES}
        ticks.append((rows, queue, rate))
    return ticks


def optimum_s(rows, queue, rate):
    """min T by the cut condition: every node set S takes its queues, the reads with both ends in S,
    and what the PE side's cap leaves on a DE in S; T* is the largest such load per rate."""
    best = 0.0
    for k in range(1, len(NODES) + 1):
        for subset in itertools.combinations(NODES, k):
            s = set(subset)
            load = sum(queue[n] for n in s)
            for pe, de, hit, cap in rows:
                load += hit if pe in s and de in s else (hit - cap if de in s else 0.0)
            best = max(best, load / sum(rate[n] for n in s))
    return best


def finish_s(rows, queue, rate, pe_gb):
    load = dict(queue)
    for (pe, de, hit, _), x in zip(rows, pe_gb):
        load[pe] += x
        load[de] += hit - x
    return max(load[n] / rate[n] for n in NODES)


def rewrite_every_slot(lp: SplitLP, rows, queue, rate):
    """The model update before it skipped unchanged slots: every slot's coefficients cleared and set."""
    inf = lp.solver.infinity()
    for n, row in lp.node_row.items():
        row.SetBounds(-inf, -queue.get(n, 0.0))
        row.SetCoefficient(lp.T, -rate[n])
    for s in range(len(lp.placed)):
        old = lp.placed[s]
        if old is None and s >= len(rows):
            continue
        if old is not None:
            lp.node_row[old[0]].SetCoefficient(lp.pe_var[s], 0)
            lp.node_row[old[1]].SetCoefficient(lp.de_var[s], 0)
        if s < len(rows):
            pe_node, de_node, hit, cap = rows[s]
            lp.node_row[pe_node].SetCoefficient(lp.pe_var[s], 1)
            lp.node_row[de_node].SetCoefficient(lp.de_var[s], 1)
            lp.pe_var[s].SetBounds(0, cap)
            lp.de_var[s].SetBounds(0, hit)
            lp.slot_row[s].SetBounds(hit, hit)
            lp.placed[s] = (pe_node, de_node)
        else:
            lp.pe_var[s].SetBounds(0, 0)
            lp.de_var[s].SetBounds(0, 0)
            lp.slot_row[s].SetBounds(0, 0)
            lp.placed[s] = None
    lp.solver.SetTimeLimit(1000)
    assert lp.solver.Solve() == lp.optimal
    return [lp.pe_var[s].solution_value() for s in range(len(rows))]


@pytest.mark.parametrize("seed", range(4))
def test_every_tick_is_optimal_and_feasible(seed):
    lp = SplitLP(NODES, SLOTS)
    for rows, queue, rate in random_ticks(seed, 150):
        pe_gb = lp.solve(rows, queue, rate, 1.0)
        assert pe_gb is not None and len(pe_gb) == len(rows)
        for (_, _, hit, cap), x in zip(rows, pe_gb):
            assert -1e-9 <= x <= cap + 1e-9 and x <= hit + 1e-9
        best = optimum_s(rows, queue, rate)
        assert finish_s(rows, queue, rate, pe_gb) == pytest.approx(best, rel=1e-7, abs=1e-9)


@pytest.mark.parametrize("seed", range(4))
def test_same_vertices_as_rewriting_every_slot(seed):
    # GLOP's answer among equal optima depends on the solves before it: the incremental update must
    # leave the model exactly as the full rewrite does, tick after tick, or the split drifts.
    incremental, rewritten = SplitLP(NODES, SLOTS), SplitLP(NODES, SLOTS)
    for rows, queue, rate in random_ticks(100 + seed, 150):
        assert incremental.solve(rows, queue, rate, 1.0) == rewrite_every_slot(rewritten, rows, queue, rate)
