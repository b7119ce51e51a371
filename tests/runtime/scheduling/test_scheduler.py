"""The scheduler: policies and plans drive live engines; reports, split reads, dead engines."""

from __future__ import annotations

import time

import pytest

pytest.importorskip("torch")

from dualpath.cluster import Role
from dualpath.plan import Assignment, Plan
from dualpath.policy import ClusterState, EngineState, Policy
from dualpath.request import Request
from dualpath.runtime.scheduling.agents import run_agents, verify_turns
from dualpath.runtime.scheduling.plan_replay import PlanReplay
from dualpath.runtime.scheduling.realrun import runtime_for
from dualpath.runtime.scheduling.scheduler import EngineHandle, Scheduler
from dualpath.runtime.scheduling.scheduler_state import TurnTicket, snapshot
from tests.cuda import needs_cuda
from tests.runtime.cases import BT, LLM, cluster, workload


class Recorder(Policy):
    """PE/DE in turn over live engines; the PE side reads `pe_share` of the hit; keeps every state."""

    name = "recorder"

    def __init__(self, cluster_spec, llm, block_tokens=BT, pe_share=0.5):
        super().__init__(cluster_spec, llm, block_tokens)
        self.pe_share, self.states, self.turn = pe_share, [], 0

    def schedule(self, pending, state):
        self.states.append(state)
        pes, des = state.of_role(Role.PREFILL), state.of_role(Role.DECODE)
        out = []
        for r in pending:
            hit = r.hit_tokens * self.llm.kv_bytes_per_token
            block_bytes = BT * self.llm.kv_bytes_per_token
            pe_bytes = round(hit * self.pe_share / block_bytes) * block_bytes
            pe, de = pes[self.turn % len(pes)], des[self.turn % len(des)]
            self.turn += 1
            out.append(Assignment(r.id, pe.name, de.name, pe_bytes, hit - pe_bytes))
        return out


def scheduling(runtime, policy):
    """A started scheduler whose group leaders (inside the engines) fetch from it."""
    return runtime.scheduling(policy, interval_s=0.02)


@pytest.fixture(scope="module")
def runtime_1p2d():
    w = workload(4, 3)
    with runtime_for(cluster(1, 2), LLM, w, BT, in_process=True).start() as runtime:
        yield runtime


def test_split_assignments_read_on_both_sides_and_outputs_match_a_recompute(runtime_1p2d):
    runtime = runtime_1p2d
    runtime.clear_store()
    policy = Recorder(cluster(1, 2), LLM)
    with scheduling(runtime, policy) as scheduler:
        logs, _ = run_agents(scheduler, workload(3, 3), LLM.vocab_size, seed=3, timeout_s=60)
    assert verify_turns(logs, runtime.reference_decoder()) == []
    later = [log.outcome.result for log in logs if log.turn > 0]
    assert later and all(r.path == "split" and r.pe_read_bytes and r.de_read_bytes for r in later)
    kv = LLM.kv_bytes_per_token
    assert all(r.pe_read_bytes + r.de_read_bytes == r.hit_tokens * kv for r in later)
    assert {log.outcome.result.de for log in logs} == {"DE0", "DE1"}
    # Group leaders' report: per engine seq/tok and free HBM, per node the read queues.
    seen = policy.states[-1]
    assert set(seen.engines) == {"PE0", "DE0", "DE1"} and set(seen.read_queue_tokens) == {"P0", "D0", "D1"}
    assert all(e.free_hbm_bytes > 0 for e in seen.engines.values() if e.role is Role.DECODE)


def test_a_dead_engine_never_gets_work(runtime_1p2d):
    runtime = runtime_1p2d
    runtime.kill("DE0")
    try:
        runtime.clear_store()
        policy = Recorder(cluster(1, 2), LLM, pe_share=1.0)
        with scheduling(runtime, policy) as scheduler:
            logs, _ = run_agents(scheduler, workload(3, 2), LLM.vocab_size, seed=4, timeout_s=60)
        assert not scheduler.alive("DE0") and scheduler.alive("DE1")
        assert all(log.outcome is not None and log.outcome.result.de == "DE1" for log in logs)
        assert all(not s.engines["DE0"].alive for s in policy.states)
        assert verify_turns(logs, runtime.reference_decoder()) == []
    finally:
        assert runtime.respawn_dead() == ["DE0"]


def test_an_assignment_to_an_engine_that_does_not_answer_is_held_back():
    handles = [EngineHandle("PE0", Role.PREFILL, "P0", 0, ("127.0.0.1", 1)),
               EngineHandle("DE0", Role.DECODE, "D0", 0, ("127.0.0.1", 2), alive=False)]
    scheduler = Scheduler(handles, Recorder(cluster(1, 1), LLM), client=None, block_tokens=BT, hit_blocks=lambda t: 0)
    scheduler.report_at.update({"PE0": time.monotonic(), "DE0": time.monotonic()})
    scheduler.pending["a0t0"] = TurnTicket(Request("a0t0", 0, 0, 0, 20, 2), [1] * 20, 0.0, 1)
    scheduler._dispatch(Assignment("a0t0", "PE0", "DE0", 0, 0))  # DE0 is dead
    assert "a0t0" in scheduler.pending and not scheduler.in_flight and not scheduler.outbox.filed
    scheduler.engines["DE0"].alive = True
    scheduler.report_at["PE0"] = time.monotonic() - 11  # PE0's report is older than health_timeout_s
    scheduler._dispatch(Assignment("a0t0", "PE0", "DE0", 0, 0))
    assert "a0t0" in scheduler.pending and not scheduler.outbox.filed
    scheduler.report_at["PE0"] = time.monotonic()
    scheduler._dispatch(Assignment("a0t0", "PE0", "DE0", 0, 0))
    assert not scheduler.pending and [t.attempt_id for t in scheduler.outbox.filed["prefill/0"]] == ["a0t0"]


def test_the_snapshot_adds_dispatched_work_the_engines_have_not_reported():
    handles = {h.name: h for h in (EngineHandle("PE0", Role.PREFILL, "P0", 0, ("127.0.0.1", 1)),
                                   EngineHandle("DE0", Role.DECODE, "D0", 0, ("127.0.0.1", 2)))}
    kv = LLM.kv_bytes_per_token
    in_flight = {}
    for i, (pe_bytes, de_bytes) in enumerate(((32 * kv, 0), (0, 64 * kv))):
        in_flight[f"r{i}"] = TurnTicket(Request(f"r{i}", i, 1, 32 * (i + 1), 10, 5), [], 0.0, i, attempt_id=f"r{i}",
                                        assignment=Assignment(f"r{i}", "PE0", "DE0", pe_bytes, de_bytes))
    reports = {"PE0": {"read_queue_bytes": 100, "requests": {"r1": "reading"}},
               "DE0": {"read_queue_bytes": 0, "requests": {"r1": 1}, "free_hbm_bytes": 10**6}}
    state = snapshot(handles, in_flight, reports, lambda h: True, kv, 1 << 40, 0.0)
    pe, de = state.engines["PE0"], state.engines["DE0"]
    assert (pe.num_seqs, pe.num_tokens) == (2, 20)  # r0 not yet at the PE, r1 reading: both unprefilled
    assert (de.num_seqs, de.num_tokens) == (2, (32 + 10 + 5) + (64 + 10 + 5))
    assert de.free_hbm_bytes == 10**6 - (32 + 10 + 5) * kv  # r0 is not admitted at the DE yet
    # r0's read has not started: it waits in P0's queue; r1 is reading (in the engine's own counter).
    assert state.read_queue_bytes == {"P0": 100 + 32 * kv, "D0": 0}


def test_plan_replay_follows_the_plan_order_and_replaces_dead_engines():
    kv = LLM.kv_bytes_per_token
    plan = Plan("test", "optimal", [Assignment("a0t1", "PE0", "DE1", 32 * kv, 32 * kv, order=2),
                                     Assignment("a1t1", "PE0", "DE0", 64 * kv, 0, order=1),
                                     Assignment("a2t1", "PE0", "DE1", 0, 64 * kv, order=0)], 1.0, 1.0)
    replay = PlanReplay(cluster(1, 2), LLM, plan, BT)
    engines = {"PE0": EngineState("PE0", Role.PREFILL, "P0", 0, 0, 0, 10**9),
               "DE0": EngineState("DE0", Role.DECODE, "D0", 0, 3, 300, 10**9),
               "DE1": EngineState("DE1", Role.DECODE, "D1", 1, 0, 0, 10**9, alive=False)}
    state = ClusterState(0.0, engines, {}, {})
    pending = [Request(f"a{i}t1", i, 1, 128, 9, 3) for i in range(3)]
    out = replay.schedule(pending, state)
    assert [a.request for a in out] == ["a2t1", "a1t1", "a0t1"]
    assert all(a.de == "DE0" for a in out)  # DE1 stopped answering
    assert [(a.pe_read_bytes, a.de_read_bytes) for a in out] == [(0, 128 * kv), (128 * kv, 0), (64 * kv, 64 * kv)]



@pytest.mark.gpu
@needs_cuda
def test_split_reads_and_recomputed_blocks_on_cuda():
    from dualpath.runtime.engines.decoder import Decoder
    from dualpath.runtime.engines.faults import parse_faults

    spec, w = cluster(1, 1), workload(3, 3)
    faults = parse_faults(["corrupt-block:0.05"], seed=2)
    with runtime_for(spec, LLM, w, BT, in_process=True, device="cuda", faults=faults).start() as runtime:
        assert runtime._running["PE0"].slot_mem.on_device  # HBM layer slots on the GPU
        with scheduling(runtime, Recorder(spec, LLM)) as scheduler:
            logs, _ = run_agents(scheduler, w, LLM.vocab_size, seed=6, timeout_s=60)
        reference = Decoder.from_seed(runtime.config, runtime.seed, "cuda")
        assert verify_turns(logs, reference) == []
    assert any(log.outcome.result.path == "split" for log in logs)
