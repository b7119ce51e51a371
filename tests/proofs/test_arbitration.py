"""VL arbitration properties and the arbiter model behind them."""

from fractions import Fraction
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dualpath.proofs import smt
from dualpath.proofs.arbitration import (
    check_collective_share,
    check_kv_min_share,
    check_kv_no_starvation,
    check_model_wait,
    check_weights,
)
from dualpath.proofs.example_files import example, variant
from dualpath.proofs.fabric import PortQoS, build_fabric
from dualpath.proofs.opensm import load_opensm
from dualpath.proofs.result import Status
from dualpath.proofs.traffic import load_traffic
from dualpath.proofs.vlarb_model import Arbiter, worst_backlog

HIGH = "qos_vlarb_high 0:192,1:192,2:0,3:192"
LOW = "qos_vlarb_low 0:192,1:192,2:64,3:192"


def load(paths):
    return build_fabric(load_opensm(paths["opensm"])), load_traffic(paths["traffic"])


def paper_qos(**changes) -> PortQoS:
    base: dict[str, Any] = {"max_vls": 4, "oper_vls_code": 3, "high_limit": 240,
            "vlarb_high": ((0, 192), (1, 192), (2, 0), (3, 192)),
            "vlarb_low": ((0, 192), (1, 192), (2, 64), (3, 192)), "sl2vl": (0, 1, 2, 3) * 4}
    return PortQoS(**(base | changes))


def test_paper_shares_are_the_papers_numbers():
    arb = Arbiter.of(paper_qos(), 4096, [0, 1, 2, 3])
    # 240 x 4 KB of model traffic, then one 4 KB low packet, of which VL2 gets 1 in 10 low packets
    assert arb.share({2}, {0, 1, 2, 3}) == Fraction(4096, 987136 * 10)
    assert arb.share({0, 1}, {0, 2}) == Fraction(983040 * 3 * 4 + 4096 * 3 * 3, 987136 * 3 * 4)
    assert float(arb.share({0, 1, 3}, {0, 1, 2, 3})) > 0.99
    assert arb.kv_packets_ahead(0, [2]) == 2


def test_paper_proves_every_arbitration_property():
    fabric, plan = load(example())
    for check in (check_weights, check_kv_no_starvation, check_kv_min_share, check_collective_share,
                  check_model_wait):
        result = check(fabric, plan)
        assert result.status is Status.PROVED, (check, result)
    assert "0.04149%" in check_kv_min_share(fabric, plan).detail


@pytest.mark.parametrize("edit, check, needles", [
    ((LOW, "qos_vlarb_low 0:192,1:192,2:96,3:192"), check_weights, ["2:96", "qos_vlarb_low", "multiples of 64"]),
    ((HIGH, "qos_vlarb_high 0:192,1:200,2:0,3:192"), check_weights, ["1:200", "qos_vlarb_high"]),
    ((LOW, "qos_vlarb_low 0:192,1:192,2:0,3:192"), check_kv_no_starvation, ["KV VL 2 gets 0%", "no weight"]),
    (("qos_high_limit 240", "qos_high_limit 255"), check_kv_no_starvation, ["qos_high_limit is 255"]),
    ((LOW, "qos_vlarb_low 0:255,1:255,2:4,3:255"), check_kv_min_share, ["KV VL 2 gets", "0.04%"]),
    (("qos_high_limit 240", "qos_high_limit 8"), check_collective_share, ["collective VLs [0, 1] get", "99%"]),
    ((HIGH, "qos_vlarb_high 0:0,1:192,2:0,3:192"), check_collective_share, ["collective VLs"]),
    ((HIGH, "qos_vlarb_high 0:0,1:192,2:255,3:192"), check_model_wait, ["482 KV packets", "collective VL 0"]),
])
def test_broken_tables_are_violated_with_the_entry(tmp_path, edit, check, needles):
    fabric, plan = load(variant(tmp_path, {"opensm": [edit]}))
    result = check(fabric, plan)
    assert result.status is Status.VIOLATED
    for needle in needles:
        assert needle in result.witness, (needle, result.witness)
    assert "opensm.conf:" in result.fix


def test_kv_min_share_is_violated_when_the_plan_asks_for_more(tmp_path):
    fabric, plan = load(variant(tmp_path, {"traffic": [("kv_share_min = 0.0004", "kv_share_min = 0.01")]}))
    result = check_kv_min_share(fabric, plan)
    assert result.status is Status.VIOLATED and "required >= 1%" in result.witness


def test_model_wait_limit_from_the_plan(tmp_path):
    fabric, plan = load(variant(tmp_path, {"traffic": [("model_wait_max_ns = 500", "model_wait_max_ns = 100")]}))
    result = check_model_wait(fabric, plan)
    assert result.status is Status.VIOLATED and "163.8 ns" in result.witness


def test_collective_share_fix_is_a_limit_that_works(tmp_path):
    fabric, plan = load(variant(tmp_path, {"opensm": [("qos_high_limit 240", "qos_high_limit 8")]}))
    result = check_collective_share(fabric, plan)
    limit = int(result.fix.split("qos_high_limit ")[1].split()[0])
    arb = Arbiter.of(paper_qos(high_limit=limit), 4096, [0, 1, 2])
    assert worst_backlog(arb, {0, 1}, {0, 1, 2}, frozenset())[1] >= Fraction("0.99")
    arb = Arbiter.of(paper_qos(high_limit=limit - 1), 4096, [0, 1, 2])
    assert worst_backlog(arb, {0, 1}, {0, 1, 2}, frozenset())[1] < Fraction("0.99")


weights = st.sampled_from([0, 0, 64, 128, 192, 255, 4, 100])


@settings(max_examples=40, deadline=None)
@given(high=st.lists(weights, min_size=4, max_size=4), low=st.lists(weights, min_size=4, max_size=4),
       limit=st.sampled_from([0, 1, 8, 240, 254, 255]), target=st.sets(st.integers(0, 3), min_size=1),
       bound=st.sampled_from([Fraction(0), Fraction(1, 1000), Fraction(1, 2), Fraction(99, 100)]))
def test_z3_search_agrees_with_exhaustive_enumeration(high, low, limit, target, bound):
    qos = paper_qos(high_limit=limit, vlarb_high=tuple(enumerate(high)), vlarb_low=tuple(enumerate(low)))
    arb = Arbiter.of(qos, 4096, [0, 1, 2, 3])
    z3 = smt.z3mod()
    busy = {v: z3.Bool(f"b{v}") for v in range(4)}
    s = smt.solver()
    strict = bound > 0
    s.add(z3.Or([busy[v] for v in target]), arb.share_below(busy, target, bound, or_equal=not strict))
    found = smt.check(s).sat
    _, worst = worst_backlog(arb, target, range(4), frozenset())
    assert found == (worst < bound if strict else worst <= 0)


@given(st.lists(st.integers(0, 255), min_size=4, max_size=4), st.lists(st.integers(0, 255), min_size=4, max_size=4),
       st.integers(0, 255), st.sets(st.integers(0, 3), min_size=1))
def test_shares_of_all_vls_sum_to_one_whenever_something_is_served(high, low, limit, backlog):
    qos = paper_qos(high_limit=limit, vlarb_high=tuple(enumerate(high)), vlarb_low=tuple(enumerate(low)))
    arb = Arbiter.of(qos, 4096, [0, 1, 2, 3])
    total = arb.share(set(range(4)), backlog)
    served = any(arb.high[v] or arb.low[v] for v in backlog)
    assert total == (1 if served else 0)
    assert all(0 <= arb.share({v}, backlog) <= 1 for v in range(4))
