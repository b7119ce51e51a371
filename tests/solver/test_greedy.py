"""The greedy plan is the paper's rules: same decisions as the `dualpath` policy's fetch."""

from dualpath.solver.greedy import greedy_solution, greedy_until, idle_state, paper_policy
from dualpath.solver.problem import Backlog, Loads, build_problem
from tests.solver.cases import DS27B, DSV32, agentic_requests, cluster


def test_first_fetch_matches_the_dualpath_policy():
    reqs = agentic_requests(40, seed=1)
    pb = build_problem(cluster(1, 2), DS27B, reqs)
    policy = paper_policy(pb)
    fetch = policy.schedule(list(pb.requests), idle_state(pb))
    sol = greedy_solution(pb, paper_policy(pb))
    assert len(fetch) == len(reqs)  # nothing blocks on an idle cluster of this size
    for r, a in enumerate(fetch):
        assert a.request == pb.requests[r].id
        assert pb.pe_names[sol.pe[r]] == a.pe and pb.de_names[sol.de[r]] == a.de
        assert sol.pe_read_bytes[r] == a.pe_read_bytes


def test_batches_beyond_one_fetch_are_placed_whole():
    pb = build_problem(cluster(2, 4), DSV32, agentic_requests(800, seed=2))
    sol = greedy_solution(pb)
    assert all(a in (0, h) for a, h in zip(sol.pe_read_bytes, pb.hit_bytes))
    loads = Loads(pb, sol)
    assert loads.hbm_overflow() == []
    assert len(set(sol.pe)) == pb.num_pe  # beta spreads the batch over every PE


def test_backlogs_steer_the_rules():
    reqs = agentic_requests(10, seed=3)
    busy = Backlog(read_queue_bytes={"P0": 1e12}, pe_tokens={f"PE{p}": 10**7 for p in range(4)})
    pb = build_problem(cluster(1, 1), DS27B, reqs, busy)
    sol = greedy_solution(pb)
    # P0's read queue is far longer than D0's: every read goes to the DE side.
    assert all(a == 0 for a in sol.pe_read_bytes)


def test_a_deadline_cuts_the_rules_and_the_rest_goes_to_the_least_loaded_engines():
    pb = build_problem(cluster(2, 4), DSV32, agentic_requests(800, seed=2))
    full = greedy_solution(pb)
    sol, placed = greedy_until(pb, deadline=0.0)  # already passed: nothing by the rules
    assert placed == 0 and sol == greedy_until(pb, 0.0)[0]  # deterministic
    loads = Loads(pb, sol)
    assert loads.hbm_overflow() == [] and all(a in (0, h) for a, h in zip(sol.pe_read_bytes, pb.hit_bytes))
    # Least compute first: the PEs' compute loads end within one request of each other.
    assert max(loads.pe_compute) - min(loads.pe_compute) <= max(pb.compute_s)
    assert greedy_until(pb, None) == (full, len(pb.requests))
