"""Bottleneck-free P:D range from the traffic equations, against the paper's closed form."""

from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dualpath.cluster import NodeSpec, bottleneck_free_pd_range
from dualpath.proofs.opensm import Where
from dualpath.proofs.pd_range import Node, check_pd_range, overflowing
from dualpath.proofs.result import Status
from dualpath.proofs.traffic import ClusterNumbers

PAPER = Node(8, Fraction(50), Fraction(50), Fraction(500))


def cluster(p, d, g=8, cnic=400, snic=400, mem=500):
    return ClusterNumbers(g, cnic, snic, mem, p, d, Where("traffic.toml", 11, "cluster"))


def test_paper_node_gives_one_seventh_to_seven_halves():
    assert PAPER.bounds() == (Fraction(1, 7), Fraction(7, 2))
    result = check_pd_range(cluster(2, 4))
    assert result.status is Status.PROVED and "[1/7, 7/2]" in result.detail


def test_just_outside_each_end_z3_names_the_link():
    verdict, low = overflowing(PAPER, Fraction(1, 7) * Fraction(999, 1000))
    assert verdict == "sat" and low == ["PE CNIC in (all hit KV into PE HBM)"]
    _, high = overflowing(PAPER, Fraction(7, 2) * Fraction(1001, 1000))
    assert [n.split(" (")[0] for n in high] == ["DE CNIC in", "DE host memory"]
    assert overflowing(PAPER, Fraction(1, 2)) == ("unsat", [])


@pytest.mark.parametrize("p, d, link", [(8, 1, "DE CNIC in"), (1, 8, "PE CNIC in")])
def test_plan_outside_the_range_is_violated_with_the_overflowing_link(p, d, link):
    result = check_pd_range(cluster(p, d))
    assert result.status is Status.VIOLATED and link in result.witness and "GB/s >" in result.witness
    assert result.fix.startswith("traffic.toml:11: [cluster]")


@settings(max_examples=30, deadline=None)
@given(g=st.integers(2, 16), cnic=st.sampled_from([100, 200, 400, 800]), snic_frac=st.sampled_from([0.25, 0.5, 1]),
       mem=st.sampled_from([200, 500, 1000]))
def test_closed_form_matches_the_core_and_the_equations(g, cnic, snic_frac, mem):
    snic = cnic * snic_frac
    if snic >= g * cnic / 2:
        return
    node = Node.of(cluster(1, 1, g, cnic, snic, mem))
    low, high = node.bounds()
    core = bottleneck_free_pd_range(NodeSpec(num_gpus=g, cnic_gbps=cnic, snic_gbps=snic, host_mem_gb_per_s=mem))
    assert float(low) == pytest.approx(core.low) and float(high) == pytest.approx(core.high)
    if low <= high:
        for ratio in (low, (low + high) / 2, high):  # inside: every link within capacity
            assert all(load <= cap for _, load, cap in node.links(ratio, Fraction(1)))
        assert overflowing(node, high * Fraction(1001, 1000))[1]
        assert overflowing(node, low * Fraction(999, 1000))[1]
