"""Names the CLI accepts: presets, files, and errors that list what is valid."""


import pytest

from dualpath.cluster import PAPER_NODE
from dualpath.errors import InputError, SpecError, UnknownNameError
from dualpath.models.generators import agentic_workload
from dualpath.models.jsonl import write_jsonl
from dualpath.models.registry import (
    PAPER_CLUSTERS,
    list_clusters,
    list_models,
    list_nodes,
    list_workloads,
    resolve_cluster,
    resolve_model,
    resolve_workload,
)
from tests.paths import EXAMPLES, MOONCAKE_TRACE

TRACE = MOONCAKE_TRACE


def test_cluster_shorthand_node_preset_and_file():
    assert resolve_cluster("2P4D").node == PAPER_NODE
    big = resolve_cluster("48p96d")
    assert big.num_pe + big.num_de == 1152
    qwen = resolve_cluster("1P2D@paper-hopper-320g")
    assert qwen.node.dram_buffer_bytes == 320 * 10**9 and qwen.num_decode_nodes == 2
    assert resolve_cluster(str(EXAMPLES / "clusters" / "local-1p1d.toml")).node.num_gpus == 1
    for text in list_clusters() + list(PAPER_CLUSTERS.values()):
        resolve_cluster(text)


def test_cluster_errors():
    with pytest.raises(UnknownNameError) as info:
        resolve_cluster("2P4D@b300")
    assert all(name in str(info.value) for name in list_nodes())
    with pytest.raises(SpecError) as info:
        resolve_cluster("2X4")
    assert "xPyD" in str(info.value)
    with pytest.raises(InputError):
        resolve_cluster("missing.toml")


def test_models():
    assert resolve_model("Qwen2.5-32B").kv_bytes_per_token == 262_144
    assert resolve_model(str(EXAMPLES / "models" / "qwen2.5-72b.toml")).num_layers == 80
    with pytest.raises(UnknownNameError) as info:
        resolve_model("mixtral")
    assert all(name in str(info.value) for name in list_models())


def test_paper_clusters_name_existing_models():
    assert set(PAPER_CLUSTERS) <= set(list_models())


def test_workload_names():
    assert resolve_workload("agentic-32k", agents=20).stats().num_agents == 20
    assert resolve_workload("AGENTIC-48K", agents=3, seed=4) == agentic_workload("agentic-48k", 3, seed=4)
    with pytest.raises(UnknownNameError) as info:
        resolve_workload("agentic-128k")
    assert all(name in str(info.value) for name in list_workloads())
    assert "FILE.jsonl" in str(info.value)
    with pytest.raises(SpecError):
        resolve_workload("agentic-32k", agents=0)


def test_mooncake_file_is_recognised():
    by_sniff = resolve_workload(str(TRACE))
    by_prefix = resolve_workload(f"mooncake:{TRACE}")
    assert by_sniff == by_prefix and len(by_sniff.requests) == 3993
    first = resolve_workload(str(TRACE), agents=10)
    assert [r.id for r in first.requests] == [f"r{i}" for i in range(10)]
    with pytest.raises(SpecError):
        resolve_workload(str(TRACE), aps=1.0)


def test_our_jsonl_with_resampling_and_arrivals(tmp_path):
    path = tmp_path / "mine.jsonl"
    write_jsonl(agentic_workload("agentic-32k", agents=40, seed=2), path)
    assert resolve_workload(str(path)) == agentic_workload("agentic-32k", agents=40, seed=2)
    bigger = resolve_workload(str(path), agents=100, seed=1, aps=4.0)
    assert bigger.stats().num_agents == 100
    assert min(r.arrival_s for r in bigger.requests) > 0
    with pytest.raises(InputError):
        resolve_workload(str(tmp_path / "nope.jsonl"))
