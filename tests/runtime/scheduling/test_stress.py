"""Stress: tiny buffers and many agents on every read path complete (a timeout fails the test), and the
engines take only the steps of the protocol the deadlock proof checks."""

from __future__ import annotations

import pytest

pytest.importorskip("torch")

import dualpath.protocol
from dualpath.cluster import Role
from dualpath.plan import Assignment
from dualpath.policy import Policy
from dualpath.protocol import ALL_STEP_NAMES
from dualpath.runtime.scheduling.realrun import LocalRuntime, run_real
from tests.runtime.cases import BT, LLM, cluster, workload

COARSE = ["admit", "read", "start_prefill", "handoff", "start_decode", "finish"]


class Mixed(Policy):
    """Engines in turn; the read on the PE side, the DE side, or split, in turn: every path at once."""

    name = "mixed"

    def __init__(self, cluster_spec, llm, block_tokens=BT):
        super().__init__(cluster_spec, llm, block_tokens)
        self.count = 0

    def schedule(self, pending, state):
        pes, des = state.of_role(Role.PREFILL), state.of_role(Role.DECODE)
        unit = self.block_tokens * self.llm.kv_bytes_per_token
        out = []
        for r in pending:
            hit = r.hit_tokens * self.llm.kv_bytes_per_token
            pe_bytes = (hit, 0, (hit // unit // 2) * unit)[self.count % 3]
            out.append(Assignment(r.id, pes[self.count % len(pes)].name, des[(self.count // 2) % len(des)].name,
                                  pe_bytes, hit - pe_bytes))
            self.count += 1
        return out


def test_tiny_buffers_and_many_agents_complete_without_a_hang():
    spec, w = cluster(2, 2), workload(24, 3, first=120, append=11)
    prompt_blocks = -(-max(r.prompt_tokens for r in w.requests) // BT)
    # Each node's DRAM buffer holds one prompt; one send credit; two HBM layer slots per PE.
    longest = max(r.context_tokens for r in w.requests)
    runtime = LocalRuntime(spec, LLM, block_tokens=BT, max_context_tokens=longest + BT,
                           max_prompt_blocks=prompt_blocks, in_process=True,
                           engine_overrides={"send_credits": 1, "num_slots": 2})
    with runtime.start():
        trace = run_real(spec, LLM, w, Mixed(spec, LLM), runtime=runtime, verify=True, timeout_s=90)
        steps = {}
        for handle in runtime.handles.values():
            for step in runtime.client.trace(handle.address):
                steps.setdefault(step["request"], []).append(step)
    assert runtime.buffer_blocks == prompt_blocks
    assert trace.meta["wrong_turns"] == [] and trace.meta["turns_done"] == 72
    assert {r.pe_read_bytes > 0 for r in trace.records if r.turn} == {True, False}
    assert any(r.pe_read_bytes and r.de_read_bytes for r in trace.records)
    # One definition: what the engines did are the protocol's steps, which the proof encodes.
    from dualpath.proofs import protocol_model

    assert protocol_model.transfer_steps is dualpath.protocol.transfer_steps
    for request, taken in steps.items():
        assert {s["step"] for s in taken} <= set(ALL_STEP_NAMES)
        ordered = [s["step"] for s in sorted(taken, key=lambda s: s["at"]) if s["step"] in COARSE]
        assert ordered == COARSE, request
