"""The paper's scheduling rules and the baselines, decision by decision, on hand-built snapshots."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dualpath.cluster import Role
from dualpath.errors import UnknownNameError
from dualpath.policy import BatchItem, ClusterState, EngineState, Policy
from dualpath.request import Request
from dualpath.solver import policies
from dualpath.solver.baselines import BasicPolicy, DualPathRRPolicy, OraclePolicy, RoundRobinPolicy
from dualpath.solver.chunk_fit import largest_fit, secant_fit
from dualpath.solver.paper_rules import DualPathPolicy
from dualpath.solver.policies import POLICY_NAMES, make_policy, register_policy
from tests.runtime.sim.cases import TOY_LLM, toy_cluster

KV = TOY_LLM.kv_bytes_per_token  # 1,000 B per token
# PE0,1 on P0 and PE2,3 on P1, one PE group; DE0,1 on D0 and DE2,3 on D1, a DE group per node.
CLUSTER = toy_cluster(2, 2, gpus=2, pe_group=4, de_group=2)


def state(pe_tokens=(0, 0, 0, 0), de_tokens=(0, 0, 0, 0), de_seqs=(0, 0, 0, 0), de_free=(10**9,) * 4,
          queues=None, cluster=CLUSTER) -> ClusterState:
    engines = {}
    for e in cluster.engines(Role.PREFILL):
        engines[e.name] = EngineState(e.name, Role.PREFILL, e.node, e.group, 0, pe_tokens[e.index], 10**9)
    for e in cluster.engines(Role.DECODE):
        engines[e.name] = EngineState(e.name, Role.DECODE, e.node, e.group, de_seqs[e.index], de_tokens[e.index],
                                      de_free[e.index])
    queues = queues or {}
    nodes = cluster.all_nodes()
    return ClusterState(0.0, engines, {n: queues.get(n, 0) for n in nodes},
                        {n: float(queues.get(n, 0) * KV) for n in nodes})


def req(i: int, hit: int = 1000, new: int = 100, out: int = 10) -> Request:
    return Request(f"r{i}", i, 0, hit, new, out)


def test_alpha_and_beta_follow_the_paper():
    p = DualPathPolicy(CLUSTER, TOY_LLM)
    assert p.alpha_tokens == pytest.approx(3.0 * 1e9 / KV)  # tokens a 1 GB/s SNIC reads in 3 s
    per_token_s = (TOY_LLM.prefill_time_s([(32768, 1024)]) - TOY_LLM.cost.prefill_overhead_s) / 1024
    assert p.beta_tokens == pytest.approx(5.0 / per_token_s)


def test_pe_choice_prefers_nodes_with_short_read_queues_then_least_tokens():
    p = DualPathPolicy(CLUSTER, TOY_LLM)
    long_queue = int(p.alpha_tokens) + 1
    a = p.schedule([req(0)], state(pe_tokens=(0, 5, 50, 40), queues={"P0": long_queue}))
    assert a[0].pe == "PE3"  # P0's queue is over alpha: the least-loaded PE of P1, not PE0
    a = p.schedule([req(0)], state(pe_tokens=(7, 5, 50, 40)))
    assert a[0].pe == "PE1"
    a = p.schedule([req(0)], state(queues={"P0": 10}))  # equal tok_e: the shorter read queue breaks the tie
    assert a[0].pe == "PE2"


def test_pes_over_beta_get_nothing_and_the_fetch_stops():
    p = DualPathPolicy(CLUSTER, TOY_LLM)
    over = int(p.beta_tokens) + 1
    assert p.schedule([req(0), req(1)], state(pe_tokens=(over,) * 4)) == []
    a = p.schedule([req(0), req(1), req(2)], state(pe_tokens=(over, over, over, 0)))
    assert [x.pe for x in a] == ["PE3"] * len(a) and len(a) >= 1


def test_pe_groups_fetch_in_turn_each_while_an_engine_is_eligible():
    cluster = toy_cluster(2, 2, gpus=2, pe_group=2, de_group=2)
    p = DualPathPolicy(cluster, TOY_LLM)
    beta = int(p.beta_tokens)
    # Group 0 (PE0, PE1) fetches first: its engines take requests until both are over beta.
    big = [req(i, new=beta // 2 + 1) for i in range(6)]
    a = p.schedule(big, state(pe_tokens=(0, 0, 0, 0), cluster=cluster))
    assert [x.pe for x in a] == ["PE0", "PE1", "PE0", "PE1", "PE2", "PE3"]
    # The next call starts with group 1.
    a = p.schedule([req(9)], state(pe_tokens=(0, 0, 5, 3), cluster=cluster))
    assert a[0].pe == "PE3"


def test_de_choice_least_loaded_group_then_fewest_seqs_under_z():
    p = DualPathPolicy(CLUSTER, TOY_LLM)
    # Group 0 (DE0, DE1) holds fewer tokens than group 1; inside it DE1 has fewer sequences and stays under Z.
    a = p.schedule([req(0)], state(de_tokens=(3000, 2000, 9000, 9000), de_seqs=(1, 0, 5, 5)))
    assert a[0].de == "DE1"
    # Z = 1.05 x (1,110 + 5,000) / 2 = 3,208: DE1 (fewer seqs) would exceed it, so DE0 takes it.
    a = p.schedule([req(0)], state(de_tokens=(1000, 4000, 9000, 9000), de_seqs=(3, 0, 5, 5)))
    assert a[0].de == "DE0"


def test_de_without_room_is_skipped_and_no_room_stops_the_fetch():
    p = DualPathPolicy(CLUSTER, TOY_LLM)
    need = req(0).context_tokens * KV
    a = p.schedule([req(0)], state(de_free=(need - 1, need, 0, 0), de_seqs=(0, 9, 0, 0)))
    assert a[0].de == "DE1"
    assert p.schedule([req(0)], state(de_free=(need - 1,) * 4)) == []


def test_read_side_is_the_shorter_queue_ties_on_the_pe():
    p = DualPathPolicy(CLUSTER, TOY_LLM)
    a = p.schedule([req(0)], state(queues={"P0": 10, "P1": 10, "D0": 5, "D1": 5}))
    assert a[0].de_read_bytes == 1000 * KV and a[0].pe_read_bytes == 0
    a = p.schedule([req(0)], state())
    assert a[0].pe_read_bytes == 1000 * KV
    # Within one fetch the queue a request joins grows, so reads alternate sides.
    a = p.schedule([req(i) for i in range(4)], state())
    assert {x.pe_read_bytes > 0 for x in a} == {True, False}


def test_attention_quota_fills_in_fifo_order_and_chunks_the_overflow():
    p = DualPathPolicy(CLUSTER, TOY_LLM, attention_quota_s=0.01)
    cost = TOY_LLM.attention_time_s
    queue = [BatchItem(f"r{i}", 20_000, 300) for i in range(5)]
    batch = p.form_batch(queue)
    whole = [b for b in batch if b.new_tokens == 300]
    assert [b.request for b in batch] == [f"r{i}" for i in range(len(batch))]
    used = sum(cost([(b.cached_tokens, b.new_tokens)]) for b in batch)
    assert used <= 0.01 + 1e-12
    last = batch[-1]
    if last.new_tokens < 300:
        left = 0.01 - sum(cost([(b.cached_tokens, b.new_tokens)]) for b in whole)
        assert cost([(last.cached_tokens, last.new_tokens + 1)]) > left  # the largest chunk that fits
    assert len(whole) < len(queue)


def test_a_batch_always_makes_progress():
    p = DualPathPolicy(CLUSTER, TOY_LLM, attention_quota_s=1e-12)
    assert p.form_batch([BatchItem("r0", 50_000, 400)]) == [BatchItem("r0", 50_000, 1)]


@given(st.integers(1, 500), st.integers(0, 500), st.floats(0.0, 600.0))
def test_largest_fit_matches_a_linear_scan(high, guess, budget):
    def cost(n):
        return n * (1 + n / 1000)

    expect = max(n for n in range(high + 1) if cost(n) <= budget)
    assert largest_fit(cost, budget, high, guess) == expect


@given(st.integers(2, 2000), st.floats(0.0, 1.0), st.floats(0.0, 0.01), st.floats(0.0, 1200.0))
def test_secant_fit_matches_a_linear_scan(high, curve, step, budget):
    # Convex (the attention cost's shape), linear, and with flat steps (a kink like sparse attention's top-k).
    def cost(n):
        return n * (1 + n * curve / 1000) + (n // 7) * step

    if cost(high) <= budget:
        return
    expect = max(n for n in range(high) if cost(n) <= budget)
    assert secant_fit(cost, budget, high, cost(high)) == expect


def test_round_robin_cycles_and_skips_full_des():
    p = RoundRobinPolicy(CLUSTER, TOY_LLM)
    need = req(0).context_tokens * KV
    a = p.schedule([req(i) for i in range(5)], state(de_free=(10 * need, 0, 10 * need, 10 * need)))
    assert [x.pe for x in a] == ["PE0", "PE1", "PE2", "PE3", "PE0"]
    assert [x.de for x in a] == ["DE0", "DE2", "DE3", "DE0", "DE2"]
    assert [x.pe_read_bytes > 0 for x in a] == [True, False, True, False, True]  # sides alternate


def test_basic_reads_on_the_pe_and_dualpath_rr_on_the_shorter_queue():
    a = BasicPolicy(CLUSTER, TOY_LLM).schedule([req(0)], state(queues={"P0": 99}))
    assert a[0].pe_read_bytes == 1000 * KV and not BasicPolicy(CLUSTER, TOY_LLM).execution.layerwise
    a = DualPathRRPolicy(CLUSTER, TOY_LLM).schedule([req(0)], state(queues={"P0": 99}))
    assert a[0].de_read_bytes == 1000 * KV and DualPathRRPolicy(CLUSTER, TOY_LLM).execution.layerwise
    assert OraclePolicy(CLUSTER, TOY_LLM).execution.zero_io
    assert not DualPathPolicy(CLUSTER, TOY_LLM).execution.zero_io


def test_registry(monkeypatch):
    monkeypatch.setattr(policies, "_FACTORIES", dict(policies._FACTORIES))
    monkeypatch.setattr(policies, "POLICY_NAMES", policies.POLICY_NAMES)
    assert POLICY_NAMES == ("basic", "layerwise", "dualpath-rr", "dualpath", "oracle", "round-robin", "optimized",
                            "dualpath-srpt")
    for name in POLICY_NAMES:
        policy = make_policy(name, CLUSTER, TOY_LLM)
        assert isinstance(policy, Policy) and policy.name == name
    with pytest.raises(UnknownNameError, match="dualpath-rr"):
        make_policy("dual-path", CLUSTER, TOY_LLM)
    register_policy("test-rr", RoundRobinPolicy)
    assert make_policy("test-rr", CLUSTER, TOY_LLM).name == "round-robin"
    assert "test-rr" in policies.POLICY_NAMES


def test_the_paper_rules_wait_for_a_prefill_report_only_when_every_pe_is_past_beta():
    policy = DualPathPolicy(CLUSTER, TOY_LLM)
    assert not policy.waits_for_prefill()  # nothing asked yet
    past = int(policy.beta_tokens) + 1  # tok_e is a token count (an int; a compiled build checks)
    assert policy.schedule([req(0)], state(pe_tokens=(past,) * 4)) == []
    assert policy.waits_for_prefill()  # only a PE's report can change that answer
    assert policy.schedule([], state(pe_tokens=(past,) * 4)) == [] and not policy.waits_for_prefill()
    assert policy.schedule([req(1)], state(pe_tokens=(past, past, past, 0))) and not policy.waits_for_prefill()
    # Every PE past beta but nowhere for the head on the DE side: a DE report can change it, so no waiting.
    full = state(de_free=(0,) * 4)
    assert policy.schedule([req(2)], full) == [] and not policy.waits_for_prefill()


def test_skipping_the_calls_a_waiting_policy_would_answer_with_nothing_changes_no_result():
    from dualpath.calibration import calibrated_llm
    from dualpath.models.llms import llm_preset
    from dualpath.models.registry import resolve_cluster, resolve_workload
    from dualpath.runtime.sim.parallelism import expert_groups
    from dualpath.runtime.sim.simulator import simulate

    class Counted(DualPathPolicy):
        calls = 0

        def schedule(self, pending, state):
            self.calls += 1
            return super().schedule(pending, state)

    class NeverWaits(Counted):
        def waits_for_prefill(self) -> bool:
            return False

    llm = calibrated_llm(llm_preset("deepseek-v3.2"))
    cluster = expert_groups(resolve_cluster("2P4D"), llm)
    workload = resolve_workload("agentic-64k", agents=64)
    skipping, calling = Counted(cluster, llm), NeverWaits(cluster, llm)
    a, b = simulate(cluster, llm, workload, skipping), simulate(cluster, llm, workload, calling)
    assert a.records == b.records and a.meta["events"] == b.meta["events"]
    assert skipping.calls < calling.calls  # calls were skipped, and nothing moved


def test_round_robin_drops_an_engine_that_died_in_a_following_snapshot():
    """Snapshots that follow one another name what changed; round-robin checks only those for liveness,
    so the check must still catch a death there (and look at everything when the chain breaks)."""
    from dataclasses import replace

    p = RoundRobinPolicy(CLUSTER, TOY_LLM)
    first = replace(state(), serial=101)
    assert [a.de for a in p.schedule([req(0), req(1)], first)] == ["DE0", "DE1"]
    engines = dict(first.engines)
    engines["DE2"] = replace(engines["DE2"], alive=False)
    dead = replace(first, engines=engines, serial=102, follows=101, changed=("DE2",))
    assert [a.de for a in p.schedule([req(2), req(3)], dead)] == ["DE3", "DE0"]
    # Unnumbered snapshots (the real runtime's) get the full check every call.
    assert [a.de for a in p.schedule([req(4)], replace(dead, serial=0, follows=0, changed=()))] == ["DE1"]
