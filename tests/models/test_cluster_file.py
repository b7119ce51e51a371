"""Cluster TOML files: example files load; every kind of mistake names the file, the line and the value."""


import pytest

from dualpath.cluster import PAPER_NODE, Role, bottleneck_free_pd_range
from dualpath.errors import InputError, SpecError
from dualpath.models.cluster_file import cluster_from_text, load_cluster
from dualpath.models.nodes import NODE_PRESETS, node_preset
from tests.paths import EXAMPLES

CLUSTERS = EXAMPLES / "clusters"


@pytest.mark.parametrize("path", sorted(CLUSTERS.glob("*.toml")), ids=lambda p: p.name)
def test_example_clusters_load_and_are_bottleneck_free(path):
    cluster = load_cluster(path)
    assert cluster.name == path.stem
    assert bottleneck_free_pd_range(cluster.node).contains(cluster.num_prefill_nodes / cluster.num_decode_nodes)


def test_paper_example_equals_the_shorthand():
    cluster = load_cluster(CLUSTERS / "paper-2p4d.toml")
    assert cluster.node == PAPER_NODE
    assert (cluster.num_pe, cluster.num_de) == (16, 32)


def test_local_example_matches_its_preset():
    cluster = load_cluster(CLUSTERS / "local-1p1d.toml")
    assert cluster.node == NODE_PRESETS["local-emulated"]
    assert cluster.num_pe == cluster.num_de == 1


def test_node_overrides_start_from_the_preset():
    cluster = cluster_from_text('prefill_nodes = 1\ndecode_nodes = 2\n[node]\nsnic_gbps = 200\n', "c.toml")
    assert cluster.node.snic_gbps == 200.0 and isinstance(cluster.node.snic_gbps, float)
    assert cluster.node.cnic_gbps == PAPER_NODE.cnic_gbps
    assert cluster.node.name == "paper-hopper+c"


def test_groups_span_nodes():
    cluster = cluster_from_text("prefill_nodes = 2\ndecode_nodes = 4\nde_group_gpus = 16\n", "g.toml")
    engines = cluster.engines(Role.DECODE)
    assert {e.group for e in engines} == {0, 1}
    assert {e.node for e in engines if e.group == 0} == {"D0", "D1"}


def test_syntax_error_names_file_and_line():
    with pytest.raises(InputError) as info:
        cluster_from_text("prefill_nodes = 1\ndecode_nodes = 1\n[node\nsnic_gbps = 1\n", "bad.toml")
    assert info.value.line == 3
    assert str(info.value).startswith("bad.toml:3: invalid TOML")


def test_negative_bandwidth_names_line_value_and_need():
    text = "prefill_nodes = 1\ndecode_nodes = 1\n\n[node]\ncnic_gbps = 400\nsnic_gbps = -5\n"
    with pytest.raises(SpecError) as info:
        cluster_from_text(text, "neg.toml")
    err = info.value
    assert (err.source, err.line, err.field, err.value) == ("neg.toml", 6, "node.snic_gbps", -5.0)
    assert "positive" in err.expected
    assert str(err).startswith("neg.toml:6: node.snic_gbps = -5.0")


def test_unknown_key_in_node_table():
    text = "prefill_nodes = 1\ndecode_nodes = 1\n[node]\nsnic_gbs = 100\n"
    with pytest.raises(SpecError) as info:
        cluster_from_text(text, "typo.toml")
    assert (info.value.line, info.value.field) == (4, "node.snic_gbs")
    assert "snic_gbps" in info.value.expected


def test_unknown_top_level_key():
    with pytest.raises(SpecError) as info:
        cluster_from_text("prefill_nodes = 1\ndecode_nodes = 1\nprefil_nodes = 3\n", "typo.toml")
    assert (info.value.line, info.value.field) == (3, "prefil_nodes")


@pytest.mark.parametrize("text,line,field,expected", [
    ('prefill_nodes = "two"\ndecode_nodes = 1\n', 1, "prefill_nodes", "an integer"),
    ("prefill_nodes = 1.5\ndecode_nodes = 1\n", 1, "prefill_nodes", "an integer"),
    ("prefill_nodes = 1\ndecode_nodes = 1\n[node]\nnum_gpus = true\n", 4, "node.num_gpus", "an integer"),
    ('prefill_nodes = 1\ndecode_nodes = 1\n[node]\nsnic_gbps = "fast"\n', 4, "node.snic_gbps", "a number"),
    ("prefill_nodes = 0\ndecode_nodes = 1\n", 1, "prefill_nodes", "a positive integer"),
    ("prefill_nodes = 1\ndecode_nodes = 1\npe_group_gpus = 3\n", 3, "pe_group_gpus", "a divisor of the 8 PE GPUs"),
    ("prefill_nodes = 1\ndecode_nodes = 1\nnode = 3\n", 3, "node", "a table"),
    ("prefill_nodes = 1\ndecode_nodes = 1\n[node]\ncnic_kv_share = 1.5\n", 4, "node.cnic_kv_share", "a fraction"),
])
def test_wrong_values_name_their_line(text, line, field, expected):
    with pytest.raises(SpecError) as info:
        cluster_from_text(text, "f.toml")
    assert (info.value.line, info.value.field) == (line, field)
    assert expected in info.value.expected


def test_missing_node_counts():
    with pytest.raises(SpecError) as info:
        cluster_from_text("prefill_nodes = 1\n", "f.toml")
    assert info.value.field == "decode_nodes"


def test_unknown_node_preset_lists_valid_ones():
    with pytest.raises(SpecError) as info:
        cluster_from_text('preset = "b200"\nprefill_nodes = 1\ndecode_nodes = 1\n', "f.toml")
    assert info.value.line == 1
    for name in NODE_PRESETS:
        assert name in info.value.expected


def test_missing_file_is_an_input_error(tmp_path):
    with pytest.raises(InputError):
        load_cluster(tmp_path / "nope.toml")


def test_node_presets_are_bottleneck_free_at_their_intended_ratios():
    assert bottleneck_free_pd_range(node_preset("paper-hopper")).contains(2 / 4)
    assert bottleneck_free_pd_range(node_preset("local-emulated")).contains(1.0)
    assert bottleneck_free_pd_range(node_preset("dgx-a100")).contains(1 / 2)
