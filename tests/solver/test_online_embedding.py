"""OnlineScheduler as a serving stack embeds it: engine-id checks, cancel, and calls from many threads."""

from __future__ import annotations

import dataclasses
import threading

import pytest

from dualpath.errors import SpecError
from dualpath.policy import ClusterState
from dualpath.solver.greedy import idle_state
from dualpath.solver.online import OnlineOptions, OnlineScheduler
from dualpath.solver.problem import build_problem
from tests.solver.cases import DS27B, agentic_requests, cluster


def idle(c) -> ClusterState:
    return idle_state(build_problem(c, DS27B, []))


def test_update_names_an_engine_or_node_the_cluster_lacks():
    c = cluster(1, 1)
    sched = OnlineScheduler(c, DS27B)
    st = idle(c)
    sched.update(st)  # the cluster's own engines pass
    ghost = dict(st.engines, PE99=dataclasses.replace(st.engines["PE0"], name="PE99"))
    with pytest.raises(SpecError, match=r"OnlineScheduler.update: engine = 'PE99': expected an engine of cluster "
                                        r"1P1D \(PE0..PE7, DE0..DE7\)"):
        sched.update(dataclasses.replace(st, engines=ghost))
    moved = dict(st.engines, PE0=dataclasses.replace(st.engines["PE0"], node="D0"))
    with pytest.raises(SpecError, match="'PE0'"):
        OnlineScheduler(c, DS27B).update(dataclasses.replace(st, engines=moved))
    assert sched.state is st  # a refused report leaves the last good one


def test_cancel_withdraws_only_waiting_requests():
    c = cluster(1, 1)
    sched = OnlineScheduler(c, DS27B, options=OnlineOptions(window=4, budget_s=5.0))
    reqs = agentic_requests(10, seed=3)
    sched.submit(reqs)
    assert sched.cancel(reqs[0].id) and not sched.cancel(reqs[0].id) and not sched.cancel("nobody")
    sched.update(idle(c))
    out = sched.tick()
    assert reqs[0].id not in {a.request for a in out} and len(out) == 4
    assert not sched.cancel(out[0].request)  # decided: no longer the scheduler's to withdraw
    assert [r.id for r in sched.pending] == [r.id for r in reqs[5:]]


def test_threads_submitting_ticking_and_fetching_decide_each_request_once():
    c = cluster(2, 2)
    sched = OnlineScheduler(c, DS27B, options=OnlineOptions(budget_s=5.0))
    sched.update(idle(c))
    reqs = agentic_requests(400, seed=4)
    fetched: list[str] = []
    stop = threading.Event()

    def producer(part):
        for i in range(0, len(part), 10):
            sched.submit(part[i:i + 10])
            sched.tick()

    def leader(group):
        while not stop.is_set():
            fetched.extend(a.request for a in sched.fetch(group))

    producers = [threading.Thread(target=producer, args=(reqs[k::4],)) for k in range(4)]
    leaders = [threading.Thread(target=leader, args=(g,)) for g in range(2)]
    for t in producers + leaders:
        t.start()
    for t in producers:
        t.join()
    while sched.pending:
        sched.tick()
    stop.set()
    for t in leaders:
        t.join()
    fetched.extend(a.request for g in range(2) for a in sched.fetch(g))
    assert sorted(fetched) == sorted(r.id for r in reqs)
