from fractions import Fraction

import pytest

from dualpath.cluster import PAPER_NODE, ClusterSpec, NodeSpec, Role, bottleneck_free_pd_range, parse_shorthand
from dualpath.errors import SpecError


def test_paper_node_pd_range_is_one_seventh_to_seven_halves():
    r = bottleneck_free_pd_range(PAPER_NODE)
    assert Fraction(r.low).limit_denominator(100) == Fraction(1, 7)
    assert Fraction(r.high).limit_denominator(100) == Fraction(7, 2)
    assert "PE CNIC" in r.low_link and "DE CNIC" in r.high_link and "host memory" in r.high_link
    assert r.contains(2 / 4) and not r.contains(4.0) and not r.contains(1 / 8)


def test_pd_range_follows_the_inequality_for_another_node():
    # g=8, s=2 (SNIC 800 vs CNIC 400), M=500 GB/s, B*s=100 GB/s: low 2/6, high min(4/2, 6/4, (5-3)/2=1) = 1
    r = bottleneck_free_pd_range(NodeSpec(snic_gbps=800.0))
    assert r.low == pytest.approx(1 / 3) and r.high == pytest.approx(1.0)
    assert r.high_link.startswith("DE host memory")


def test_shorthand_builds_engines_and_groups():
    c = parse_shorthand("2P4D", de_group_gpus=16)
    assert (c.num_pe, c.num_de) == (16, 32)
    des = c.engines(Role.DECODE)
    assert des[9].name == "DE9" and des[9].node == "D1" and des[9].gpu == 1 and des[9].group == 0
    assert des[16].group == 1  # a 16-GPU group spans two nodes
    assert c.all_nodes() == ["P0", "P1", "D0", "D1", "D2", "D3"]
    assert parse_shorthand("48p96d").num_pe == 384


@pytest.mark.parametrize("text", ["2P", "P4D", "2x4", "", "-1P2D"])
def test_bad_shorthand_names_what_is_expected(text):
    with pytest.raises(SpecError, match="xPyD"):
        parse_shorthand(text)


def test_negative_bandwidth_is_refused_with_field_and_value():
    with pytest.raises(SpecError, match=r"snic_gbps = -5.0: expected a positive number"):
        NodeSpec(snic_gbps=-5.0)


def test_group_must_divide_gpus():
    with pytest.raises(SpecError, match="de_group_gpus"):
        ClusterSpec(1, 1, de_group_gpus=3)


def test_a_tiny_host_memory_bandwidth_gives_no_range_not_negative_numbers():
    # (M / (B s) - 3) / 2 with M = 1 GB/s, B s = 50 GB/s: -1.49, under the low end 1/7 (issue 18).
    r = bottleneck_free_pd_range(NodeSpec(host_mem_gb_per_s=1.0))
    assert not r.exists and not r.contains(1.0) and not r.contains(r.low)
    text = r.describe()
    assert text.startswith("no bottleneck-free ratio") and "-" not in text.replace("bottleneck-free", "")
    assert "DE host memory" in text
    middle = bottleneck_free_pd_range(NodeSpec(host_mem_gb_per_s=155.0))  # high (3.1 - 3) / 2 = 0.05 < 1/7
    assert not middle.exists and "P/D <= 0.050" in middle.describe() and "P/D >= 0.143" in middle.describe()
    assert bottleneck_free_pd_range(PAPER_NODE).describe() == "0.143 .. 3.500"


def test_info_prints_no_bottleneck_free_ratio(capsys, tmp_path):
    from dualpath.cli import main

    path = tmp_path / "c.toml"
    path.write_text("prefill_nodes = 1\ndecode_nodes = 1\n[node]\nhost_mem_gb_per_s = 1.0\n")
    assert main(["info", "--cluster", str(path), "--model", "ds-27b"]) == 0
    row = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("bottleneck-free P/D"))
    assert "no bottleneck-free ratio" in row and "-3/2" not in row and " .. " not in row
