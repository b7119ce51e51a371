"""Agents: workloads scaled to the tiny model, multi-turn runs offline and online, runtime traces."""

from __future__ import annotations

import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dualpath.errors import DualpathError
from dualpath.request import Request, Trajectory, Turn, Workload, requests_of
from dualpath.runtime.scheduling.agents import (
    append_tokens,
    scale_workload,
    timed_workload,
    trajectories_of,
    utilisation_of,
)
from dualpath.trace import Span

BT = 16


def agentic(num_agents: int = 3) -> Workload:
    trajectories = tuple(Trajectory(a, (Turn(4000 + 640 * a, 64), Turn(320, 128), Turn(450, 200), Turn(640, 96)),
                                    start_s=0.5 * a) for a in range(num_agents))
    return Workload("agentic-test", tuple(r for t in trajectories for r in requests_of(t, 64)), trajectories)


def test_scaling_divides_tokens_and_folds_early_turns_into_the_first():
    scaled = scale_workload(agentic(), 64, max_turns=2, block_tokens=BT)
    first = scaled.trajectories[0]
    # 4000/64 -> 62 (+1 generated), 320/64 -> 5 (+2): folded into the first kept turn (450/64 -> 7).
    assert [(t.append_tokens, t.generate_tokens) for t in first.turns] == [(7 + 62 + 1 + 5 + 2, 3), (10, 2)]
    assert [t.start_s for t in scaled.trajectories] == [0.0, 0.5, 1.0]
    assert len(scaled.requests) == 6 and scaled.name == "agentic-test/64x2"
    # The context the folded turn starts from is the whole scaled history: the same total tokens.
    assert first.total_tokens == sum(max(1, round(n / 64)) for t in agentic().trajectories[0].turns
                                     for n in (t.append_tokens, t.generate_tokens))


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 5000), st.integers(1, 400)), min_size=1, max_size=8),
       st.floats(1, 100), st.integers(1, 8))
def test_scaling_keeps_every_agent_and_at_least_one_token_per_turn(turns, divisor, max_turns):
    w = Workload("w", (), (Trajectory(0, tuple(Turn(a, g) for a, g in turns)),))
    scaled = scale_workload(w, divisor, max_turns, BT)
    kept = scaled.trajectories[0].turns
    assert len(kept) == min(len(turns), max_turns)
    assert all(t.append_tokens >= 1 and t.generate_tokens >= 1 for t in kept)
    assert [r.turn for r in scaled.requests] == list(range(len(kept)))


def test_a_warm_up_leaves_the_later_turns_with_their_history_as_hit():
    w = scale_workload(agentic(2), 64, max_turns=3, block_tokens=BT)
    timed = timed_workload(w, 1, BT)
    assert {r.turn for r in timed.requests} == {1, 2}
    full = {r.id: r for r in w.requests}
    assert all(r == full[r.id] for r in timed.requests)  # hits counted from the whole context
    assert all(r.hit_tokens > 0 for r in timed.requests)


def test_trajectories_are_rebuilt_from_a_trace_of_requests():
    requests = (Request("x0", 7, 0, 0, 100, 10, 2.0), Request("x1", 7, 1, 96, 30, 5, 2.0))
    (traj,) = trajectories_of(Workload("trace", requests))
    assert traj.agent == 7 and traj.start_s == 2.0
    assert [(t.append_tokens, t.generate_tokens) for t in traj.turns] == [(100, 10), (16, 5)]


def test_appended_tokens_depend_only_on_seed_agent_and_turn():
    assert append_tokens(1, 2, 3, 20, 256) == append_tokens(1, 2, 3, 20, 256)
    assert append_tokens(1, 2, 3, 20, 256) != append_tokens(1, 2, 4, 20, 256)
    assert all(0 <= t < 256 for t in append_tokens(5, 0, 0, 100, 256))


def test_utilisation_spreads_each_transfer_over_its_span():
    rates = {"read": 100e6, "transfer": 1e9}
    spans = [Span("P0.snic", "read", 0.0, 1.0, "a", 50e6), Span("D0.snic", "read", 0.5, 1.0, "b", 25e6),
             Span("P0.cnic_in", "transfer", 0.2, 0.4, "a", 100e6), Span("PE0", "prefill", 0.2, 0.4, "a")]
    series = utilisation_of(spans, ["P0", "D0"], rates, num_buckets=10)
    assert set(series) == {"P0.snic", "D0.snic", "P0.cnic_in", "D0.cnic_in"}
    width = series["P0.snic"][1][0]
    moved = {k: sum(u for _, u in v) * width * rates["read" if k.endswith("snic") else "transfer"]
             for k, v in series.items()}
    assert moved == pytest.approx({"P0.snic": 50e6, "D0.snic": 25e6, "P0.cnic_in": 100e6, "D0.cnic_in": 0.0})
    assert max(u for _, u in series["P0.snic"]) == pytest.approx(0.5)
    assert max(u for _, u in series["P0.cnic_in"]) == pytest.approx(0.5)


def test_agents_run_end_to_end_offline_and_online_and_every_turn_is_right():
    pytest.importorskip("torch")
    from dualpath.runtime.scheduling.realrun import run_real, runtime_for
    from dualpath.solver.policies import make_policy
    from tests.runtime.cases import BT as SBT
    from tests.runtime.cases import LLM, cluster

    w = scale_workload(agentic(3), 32, max_turns=3, block_tokens=SBT)
    spec = cluster(1, 1)
    with runtime_for(spec, LLM, w, SBT, in_process=True).start() as runtime:
        offline = run_real(spec, LLM, w, make_policy("dualpath", spec, LLM, SBT), runtime=runtime, verify=True,
                           timeout_s=60)
        online = run_real(spec, LLM, w, make_policy("dualpath", spec, LLM, SBT), runtime=runtime, online=True,
                          warm_turns=1, verify=True, timeout_s=60)
    for trace in (offline, online):
        assert trace.meta["wrong_turns"] == [] and trace.meta["failed_turns"] == []
        assert trace.executor == "runtime" and trace.meta["turns_done"] == trace.meta["turns_expected"]
        later = [r for r in trace.records if r.turn >= 1]
        assert later and all(r.pe_read_bytes + r.de_read_bytes > 0 for r in later)  # the history hits
    assert len(offline.records) == 9 and len(online.records) == 6
    assert min(r.arrival_s for r in offline.records) < 0.1
    # Online, agent a's first timed turn arrives at its Poisson start (0.5 s apart here).
    first = {r.agent: r.arrival_s for r in online.records if r.turn == 1}
    assert first[2] >= 1.0 - 0.05 and first[1] >= 0.5 - 0.05
    assert online.meta["snic_read_bytes"]["P0"] + online.meta["snic_read_bytes"]["D0"] == sum(
        r.pe_read_bytes + r.de_read_bytes for r in online.records)


def test_the_recompute_matches_the_uncached_reference_and_catches_a_wrong_turn():
    torch = pytest.importorskip("torch")
    from dualpath.plan import Assignment
    from dualpath.runtime.engines.decoder import Decoder, DecoderConfig
    from dualpath.runtime.engines.messages import TurnResult
    from dualpath.runtime.scheduling.agents import TurnLog, recompute, verify_turns
    from dualpath.runtime.scheduling.scheduler import TurnOutcome

    torch.set_num_threads(1)
    decoder = Decoder.from_seed(DecoderConfig(), 11)
    prompt = append_tokens(0, 0, 0, 70, 256)
    expected, _ = decoder.generate(prompt, 5)
    assert recompute(decoder, prompt, 5) == expected

    def log(tokens):
        result = TurnResult("a0t0", tokens, 0, "pe", "PE0", "DE0", 0)
        outcome = TurnOutcome("a0t0", result, 0.0, 1, Assignment("a0t0", "PE0", "DE0", 0, 0))
        return TurnLog("a0t0", 0, 0, tuple(prompt), outcome)

    assert verify_turns([log(expected)], decoder) == []
    wrong = [*expected[:-1], (expected[-1] + 1) % 256]
    # A lost turn has no output to be wrong: the run counts it as lost, the verification does not count it.
    mismatches = verify_turns([log(wrong), TurnLog("a0t1", 0, 1, (), error="lost")], decoder)
    assert len(mismatches) == 1 and mismatches[0].startswith("a0t0: produced")
    # The verification is bounded by the run's deadline, like the agents.
    with pytest.raises(DualpathError, match=r"timeout \(0 of 1 turns checked\)"):
        verify_turns([log(expected)], decoder, deadline=time.time() - 1)
    with pytest.raises(DualpathError, match="at token 1"):
        recompute(decoder, prompt, 5, deadline=time.time() - 1)
