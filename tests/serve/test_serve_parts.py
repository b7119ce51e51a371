"""The service's parts in-process: the prefix index, the engine registry, the router, the CLI's refusals."""

from __future__ import annotations

import pytest

from dualpath.cli import main
from dualpath.cluster import Role, parse_shorthand
from dualpath.models.llms import llm_preset
from dualpath.serve.blocks import StoredBlocks
from dualpath.serve.registry import ConflictError, DoesNotFitError, EngineRegistry, NotFoundError
from dualpath.serve.router import EngineReport, Router

C2P4D = parse_shorthand("2P4D")


def test_blocks_match_leading_chained_blocks_while_any_engine_holds_them():
    b = StoredBlocks()
    assert b.stored("e1", [1, 2, 3], None) == 3 and b.stored("e2", [1, 2], None) == 0
    assert b.match([1, 2, 3, 4]) == 3 and b.match([2, 3]) == 0  # 2 was stored under 1: no prompt starts with it
    assert b.match([1, 3]) == 1  # 3 was stored under 2, not under 1
    assert b.removed("e1", [2]) == 0 and b.match([1, 2, 3]) == 3  # e2 still holds 2
    assert b.cleared("e2") == 1 and b.match([1, 2, 3]) == 1 and len(b) == 2  # e1 keeps 1 and 3


def test_registry_maps_hosts_to_model_nodes_and_refuses_what_does_not_fit():
    reg = EngineRegistry(C2P4D)
    slots = [reg.register(f"a{g}", "http://a", Role.PREFILL, "hostA").slot for g in range(8)]
    assert {s.node for s in slots} == {"P0"} and slots[7].name == "PE7"
    with pytest.raises(DoesNotFitError, match=r"'a8' does not fit: host 'hostA' .*8 GPUs"):
        reg.register("a8", "http://a", Role.PREFILL, "hostA")
    assert reg.register("b0", "http://b", Role.PREFILL, "hostB").slot.name == "PE8"
    with pytest.raises(DoesNotFitError, match=r"'c0' does not fit: cluster 2P4D has 16 PEs on 2 nodes"):
        reg.register("c0", "http://c", Role.PREFILL, "hostC")
    assert reg.register("a0", "http://a-new", Role.PREFILL).url == "http://a-new"  # re-register: new URL, same slot
    with pytest.raises(ConflictError, match="'a0' is registered as prefill"):
        reg.register("a0", "http://a", Role.DECODE)
    reg.unregister("b0")
    assert reg.register("c0", "http://c", Role.PREFILL, "hostC").slot.node == "P1"  # hostB's node is free again
    with pytest.raises(NotFoundError, match="unknown engine 'zz'"):
        reg.get("zz")


@pytest.fixture
def router():
    r = Router(C2P4D, llm_preset("deepseek-v3.2"))
    r.register([(f"p{i}", "u", Role.PREFILL, None) for i in range(16)] +
               [(f"d{i}", "u", Role.DECODE, None) for i in range(32)])
    return r


def test_router_refuses_a_report_naming_an_unknown_engine_whole(router):
    with pytest.raises(NotFoundError, match="'ghost'"):
        router.report([EngineReport("p0", 5, 5000), EngineReport("ghost", 0, 0)], {})
    assert router.engines["PE0"].num_tokens == 0  # nothing of the report applied


def test_router_cancels_queued_and_routed_and_releases_only_unreported_load(router):
    t = router.route("r1", 30_000, 400, hit_tokens=28_000)
    assert t.assignment is not None and router.engines[t.assignment.pe].num_tokens == 2000
    router.cancel("r1")
    assert router.engines[t.assignment.pe].num_tokens == 0
    t2 = router.route("r2", 30_000, 400, hit_tokens=28_000)
    assert t2.assignment is not None
    pe = router.registry.by_slot[t2.assignment.pe].id
    router.report([EngineReport(pe, 1, 2000)], {})  # the engine now counts r2 itself
    router.done("r2")
    assert router.engines[t2.assignment.pe].num_tokens == 2000  # the report's number stands
    # Fill every PE past the prefill horizon: a long request waits, and says why.
    router.report([EngineReport(f"p{i}", 50, 10**6) for i in range(16)], {})
    q = router.route("long", 60_000, 400, hit_tokens=10_000)
    assert q.assignment is None and q.binding.startswith("prefill horizon")
    with pytest.raises(ConflictError, match="queued, not routed"):
        router.done("long")
    router.cancel("long")
    assert [r.id for r in router.scheduler.pending] == []
    with pytest.raises(NotFoundError):
        router.cancel("long")


def test_serve_refuses_to_start_without_an_api_key(monkeypatch, capsys):
    pytest.importorskip("fastapi")
    monkeypatch.delenv("DUALPATH_API_KEY", raising=False)
    assert main(["serve", "--port", "0"]) == 2
    err = capsys.readouterr().err
    assert "api_key" in err and "DUALPATH_API_KEY" in err and err.count("\n") == 1
