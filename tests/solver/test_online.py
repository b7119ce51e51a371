"""OnlineScheduler and the `optimized` policy, without a simulator (solver tests never import runtime)."""

import dataclasses

from dualpath.cluster import Role
from dualpath.policy import BatchItem, ClusterState
from dualpath.request import Request
from dualpath.solver.greedy import idle_state
from dualpath.solver.online import OnlineOptions, OnlineScheduler
from dualpath.solver.optimized import OptimizedPolicy, order_queue
from dualpath.solver.paper_rules import DualPathPolicy
from dualpath.solver.problem import build_problem
from tests.solver.cases import DS27B, DSV32, agentic_requests, cluster

KV = DS27B.kv_bytes_per_token


def state_of(c, llm, read_queue_bytes=None, pe_tokens=0):
    pb = build_problem(c, llm, [])
    st = idle_state(pb)
    engines = {n: (dataclasses.replace(e, num_tokens=pe_tokens) if e.role is Role.PREFILL else e)
               for n, e in st.engines.items()}
    queues = dict(st.read_queue_bytes, **(read_queue_bytes or {}))
    return ClusterState(0.0, engines, {n: int(q // llm.kv_bytes_per_token) for n, q in queues.items()}, queues)


def test_tick_assigns_valid_reads_and_groups_fetch_their_own():
    c = cluster(2, 4)
    sched = OnlineScheduler(c, DS27B)
    reqs = agentic_requests(100, seed=1)
    sched.submit(reqs)
    sched.update(state_of(c, DS27B))
    out = sched.tick()
    assert len(out) == 64 and len(sched.pending) == 36  # one window per tick
    pes = {e.name: e for e in c.engines(Role.PREFILL)}
    by_id = {r.id: r for r in reqs}
    for a in out:
        assert a.pe_read_bytes + a.de_read_bytes == by_id[a.request].hit_tokens * KV
        assert a.pe in pes and a.de.startswith("DE")
    group0, group1 = sched.fetch(0), sched.fetch(1)
    assert {pes[a.pe].group for a in group0} == {0} and {pes[a.pe].group for a in group1} == {1}
    assert sorted(a.request for a in group0 + group1) == sorted(a.request for a in out)
    assert sched.fetch(0) == []  # fetched once
    assert len(sched.tick_latencies_s) == 1


def test_splits_equalise_the_two_snics_finish_times():
    c = cluster(1, 1)
    sched = OnlineScheduler(c, DS27B, options=OnlineOptions(budget_s=5.0))  # no fallback on a busy machine
    st = state_of(c, DS27B, read_queue_bytes={"P0": 30e9})
    out = sched.decide(agentic_requests(64, seed=2), st)
    pe = 30e9 + sum(a.pe_read_bytes for a in out)
    de = sum(a.de_read_bytes for a in out)
    assert abs(pe - de) <= 2 * 64 * KV  # within a block or two of equal
    whole = OnlineScheduler(c, DS27B, options=OnlineOptions(split_reads=False, budget_s=5.0))
    assert all(a.path in ("pe", "de") for a in whole.decide(agentic_requests(64, seed=2), st))


def test_over_budget_ticks_fall_back_to_the_paper_rules():
    c = cluster(1, 2)
    reqs = agentic_requests(20, seed=3)
    st = state_of(c, DS27B)
    sched = OnlineScheduler(c, DS27B, options=OnlineOptions(budget_s=0.0))
    out = sched.decide(reqs, st)
    assert sched.num_fallbacks == 1
    assert out == DualPathPolicy(c, DS27B).schedule(reqs, st)


def test_horizon_gates_long_requests_and_short_ones_overtake():
    c = cluster(1, 1)
    cold = Request("cold", 99, 0, 0, 30000, 100)  # a fresh 30K-token prompt: seconds of compute
    reqs = [cold, *agentic_requests(10, seed=4, max_context=8192)]
    busy = state_of(c, DS27B, pe_tokens=10**9)
    fifo = OnlineOptions(short_compute_s=0.0, skip_blocked=False)
    assert OnlineScheduler(c, DS27B, options=fifo).decide(reqs, busy) == []  # the paper's FIFO stop
    out = OnlineScheduler(c, DS27B).decide(reqs, busy)
    assert [a.request for a in out] == [r.id for r in reqs[1:]]  # short turns skip the gated head
    assert len(OnlineScheduler(c, DS27B, options=OnlineOptions(pe_horizon_s=None)).decide(reqs, busy)) == 11


def test_batches_prefer_short_requests_until_long_ones_have_waited():
    c = cluster(1, 1)
    sched = OnlineScheduler(c, DS27B)
    long = BatchItem("long", 0, 30000, arrived_s=9.0)
    short = BatchItem("short", 30000, 300, arrived_s=9.5)
    assert [i.request for i in order_queue(sched, [long, short], now_s=10.0)] == ["short", "long"]
    aged = dataclasses.replace(long, arrived_s=-500.0)
    assert [i.request for i in order_queue(sched, [aged, short], now_s=10.0)] == ["long", "short"]
    fifo = OnlineScheduler(c, DS27B, options=OnlineOptions(batch_order="fifo"))
    assert order_queue(fifo, [long, short], now_s=10.0) == [long, short]
    hrrn = OnlineScheduler(c, DS27B, options=OnlineOptions(batch_order="hrrn"))
    assert [i.request for i in order_queue(hrrn, [long, short], now_s=10.0)] == ["short", "long"]


def test_policy_interface_records_tick_latency():
    c = cluster(2, 4)
    policy = OptimizedPolicy(c, DSV32)
    assert policy.name == "optimized" and not policy.execution.zero_io
    st = state_of(c, DSV32)
    for seed in range(20):
        policy.schedule(agentic_requests(64, seed=seed), st)
    lat = sorted(policy.scheduler.tick_latencies_s)
    assert len(lat) == 20 and lat[len(lat) // 2] < 0.2  # the 20 ms p99 is benchmarks/online_latency.py
    batch = policy.form_batch([BatchItem("a", 1000, 100, 0.0), BatchItem("b", 1000, 100, 0.0)])
    assert [i.request for i in batch] == ["a", "b"]
