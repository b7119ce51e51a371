"""The real runtime's PEs batch by the scheduler's policy (`form_batch`, the rule the simulator applies):
forwards hold the requests the policy put together, the paper's attention quota chunks them, and every
turn's tokens still match a recompute on the PE-read, DE-read and split paths."""

from __future__ import annotations

import pytest

pytest.importorskip("torch")

from dualpath.policy import BatchItem
from dualpath.runtime.scheduling.agents import run_agents, verify_turns
from dualpath.runtime.scheduling.realrun import runtime_for
from dualpath.runtime.scheduling.scheduler_state import policy_batch
from dualpath.runtime.transports.control import ControlError
from dualpath.solver.paper_rules import DualPathPolicy
from tests.runtime.cases import BT, LLM, cluster, workload
from tests.runtime.scheduling.test_scheduler import Recorder

AGENTS, TURNS = 3, 3


class Together(Recorder):
    """Recorder's assignments, agent a reading `shares[a % len(shares)]` of its hit through the PE; a
    forward waits until every agent's turn is queued, then takes them all."""

    name = "together"

    def __init__(self, cluster_spec, llm, shares):
        super().__init__(cluster_spec, llm)
        self.shares = shares

    def schedule(self, pending, state):
        out = []
        for r in pending:
            self.pe_share = self.shares[r.agent % len(self.shares)]
            out += super().schedule([r], state)
        return out

    def form_batch(self, queue):
        return list(queue) if len(queue) >= AGENTS else []


@pytest.fixture(scope="module")
def runtime():
    w = workload(AGENTS, TURNS)
    with runtime_for(cluster(1, 1), LLM, w, BT, in_process=True, engine_overrides={"num_slots": 8}).start() as rt:
        yield rt


def batches(runtime, engine, key):
    return runtime._running[engine].stats()[key]


@pytest.mark.parametrize("shares,paths", [((1.0,), {"pe"}), ((0.0,), {"de"}), ((0.5,), {"split"}),
                                          ((1.0, 0.0, 0.5), {"pe", "de", "split"})])
def test_each_forward_runs_the_batch_the_policy_formed(runtime, shares, paths):
    runtime.clear_store()
    before = batches(runtime, "PE0", "prefill_batches")
    with runtime.scheduling(Together(cluster(1, 1), LLM, shares), interval_s=0.02) as scheduler:
        logs, _ = run_agents(scheduler, workload(AGENTS, TURNS), LLM.vocab_size, seed=11, timeout_s=120)
    assert verify_turns(logs, runtime.reference_decoder()) == []
    assert {log.outcome.result.path for log in logs if log.turn > 0} == paths  # the last case mixes paths
    after = batches(runtime, "PE0", "prefill_batches")
    assert after["forwards"] - before["forwards"] == TURNS  # one forward per round of turns
    assert after["recent"][-TURNS:] == [AGENTS] * TURNS


def test_the_attention_quota_chunks_prefill_and_tokens_still_match(runtime):
    runtime.clear_store()
    # A quota of 40 cold tokens' attention: first turns (150+ tokens) take several chunked forwards.
    policy = DualPathPolicy(cluster(1, 1), LLM, BT, attention_quota_s=LLM.attention_time_s([(0, 40)]))
    before = batches(runtime, "PE0", "prefill_batches")
    with runtime.scheduling(policy, interval_s=0.02) as scheduler:
        logs, _ = run_agents(scheduler, workload(AGENTS, TURNS), LLM.vocab_size, seed=12, timeout_s=120)
    assert verify_turns(logs, runtime.reference_decoder()) == []
    after = batches(runtime, "PE0", "prefill_batches")
    assert after["items"] - before["items"] > len(logs)  # some turns ran as several chunks
    decode = batches(runtime, "DE0", "decode_batches")
    assert decode["items"] >= len(logs) * 2  # workload(): 3 tokens per turn, 2 of them decoded


def test_the_scheduler_answers_with_its_policy_rule_under_attempt_ids():
    """`policy_batch` hands the policy the PE's queue as the policy's own requests and maps back."""
    policy = DualPathPolicy(cluster(1, 1), LLM, BT, attention_quota_s=LLM.attention_time_s([(0, 40)]))
    items = [("a0t1~1", 0, 20, 105.0), ("a1t1", 0, 150, 106.0)]
    reply = policy_batch(policy, items, {"a0t1~1": "a0t1", "a1t1": "a1t1"}, origin=100.0)
    expected = policy.form_batch([BatchItem("a0t1", 0, 20, 5.0), BatchItem("a1t1", 0, 150, 6.0)])
    assert reply == {"batch": [["a0t1~1" if i.request == "a0t1" else i.request, i.new_tokens] for i in expected]}
    assert reply["batch"][0] == ["a0t1~1", 20] and 0 < reply["batch"][-1][1] < 150  # the second one is chunked


class Bogus(Recorder):
    """A policy whose batch names a request no PE holds."""

    name = "bogus"

    def form_batch(self, queue):
        return [BatchItem("nobody", 0, 1)]


def test_a_batch_naming_no_queued_request_fails_its_turns_with_a_clear_error(runtime):
    with runtime.scheduling(Bogus(cluster(1, 1), LLM), interval_s=0.02) as scheduler:
        future = scheduler.submit("x0", 0, 0, list(range(40)), 2)
        with pytest.raises(ControlError, match=r"policy form_batch: returned 'nobody' \(1 new tokens\): not a queued"):
            future.result(timeout=60)
    assert set(runtime._running["PE0"].stats()["used"].values()) == {0}
