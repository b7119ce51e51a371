"""`dualpath info` and `dualpath workload`: the model of a cluster, an LLM and a workload."""

from __future__ import annotations

import argparse
import json
from fractions import Fraction

from dualpath import flags
from dualpath.cluster import bottleneck_free_pd_range
from dualpath.table import format_table, human_bytes

# The paper's trace table (design.md section 3): per-turn means over 500 trajectories.
PAPER_TRACE_TABLE = {
    "agentic-32k": (60, 608, 148, 28_639, 17_183),
    "agentic-48k": (106, 474, 172, 42_607, 25_120),
    "agentic-64k": (157, 429, 176, 55_958, 32_721),
}


def add_arguments(name: str, parser: argparse.ArgumentParser) -> None:
    if name == "info":
        parser.add_argument("--cluster", type=flags.name, default="2P4D",
                            help="xPyD shorthand or a cluster .toml (default 2P4D)")
        parser.add_argument("--model", type=flags.name, default="deepseek-v3.2",
                            help="model preset, .toml, or a Hugging Face config.json or its folder "
                                 "(default deepseek-v3.2)")
        parser.add_argument("--json", metavar="FILE", type=flags.out_file, help="also write the numbers as JSON")
    else:
        parser.add_argument("--workload", type=flags.name, default="agentic-64k",
                            help="agentic-32k|agentic-48k|agentic-64k, a .jsonl file (ours or Mooncake's), "
                                 "or mooncake:FILE")
        parser.add_argument("--agents", type=flags.agents,
                            help="number of agents (default: 500 for generators, all for files)")
        parser.add_argument("--seed", type=flags.seed, default=0)
        parser.add_argument("--aps", type=flags.aps, help="Poisson agent arrivals per second (online runs)")
        parser.add_argument("--block-tokens", type=flags.block_tokens, default=64, help="tokens per Full Block (hits)")
        parser.add_argument("--stats", action="store_true", help="print per-turn statistics")
        parser.add_argument("--jsonl", metavar="FILE", type=flags.out_file,
                            help="write the workload in dualpath JSONL format")
        parser.add_argument("--mooncake", metavar="FILE", type=flags.out_file,
                            help="write the workload as a Mooncake trace with Dynamo's session fields")
        parser.add_argument("--mooncake-block-tokens", type=flags.block_tokens, metavar="N",
                            help="tokens per hash_ids entry of Mooncake traces read or written (default 512)")


def run(name: str, args: argparse.Namespace) -> int:
    return info(args) if name == "info" else workload(args)


def info_numbers(cluster, llm) -> dict:
    layout = llm.layout()
    pd_range = bottleneck_free_pd_range(cluster.node)
    ratio = cluster.num_prefill_nodes / cluster.num_decode_nodes
    return {
        "model": llm.name,
        "num_layers": llm.num_layers,
        "attention": llm.attention.value,
        "attention_kv_bytes_per_token_per_layer": llm.attention_kv_bytes_per_token_per_layer,
        "indexer_bytes_per_token_per_layer": llm.indexer_bytes_per_token_per_layer,
        "kv_bytes_per_token_per_layer": llm.kv_bytes_per_token_per_layer,
        "kv_bytes_per_token": llm.kv_bytes_per_token,
        "block_tokens": layout.block_tokens,
        "layer_block_bytes": layout.layer_block_bytes,
        "full_block_bytes": layout.full_block_bytes,
        "cluster": cluster.name or cluster.shorthand,
        "num_prefill_nodes": cluster.num_prefill_nodes,
        "num_decode_nodes": cluster.num_decode_nodes,
        "num_pe_engines": cluster.num_pe,
        "num_de_engines": cluster.num_de,
        "snic_gbps_per_node": cluster.node.snic_gbps,
        "cnic_gbps_per_gpu": cluster.node.cnic_gbps,
        "cnic_gbps_per_node": cluster.node.cnic_gbps * cluster.node.num_gpus,
        "dram_buffer_bytes_per_node": cluster.node.dram_buffer_bytes,
        "pd_ratio": ratio,
        "pd_range_low": pd_range.low,
        "pd_range_high": pd_range.high,
        "pd_range_low_link": pd_range.low_link,
        "pd_range_high_link": pd_range.high_link,
        "pd_range_exists": pd_range.exists,  # False: low > high, no ratio is bottleneck-free
        "pd_ratio_bottleneck_free": pd_range.contains(ratio),
    }


def _ratio(value: float) -> str:
    frac = Fraction(value).limit_denominator(64)
    return f"{frac.numerator}/{frac.denominator} ({value:.3f})"


def info(args: argparse.Namespace) -> int:
    from dualpath.models.registry import resolve_cluster, resolve_model

    cluster, llm = resolve_cluster(args.cluster), resolve_model(args.model)
    n = info_numbers(cluster, llm)
    node = cluster.node
    rows = [
        ("model", f"{llm.name}: {llm.num_layers} layers, {llm.attention.value.upper()}"),
        ("KV bytes / token / layer", f"{n['kv_bytes_per_token_per_layer']:,} B "
         f"(attention {n['attention_kv_bytes_per_token_per_layer']:,} "
         f"+ indexer {n['indexer_bytes_per_token_per_layer']:,})"),
        ("KV bytes / token", f"{n['kv_bytes_per_token']:,} B ({human_bytes(n['kv_bytes_per_token'])})"),
        ("Layer Block", f"{n['layer_block_bytes']:,} B ({n['block_tokens']} tokens x 1 layer)"),
        ("Full Block", f"{n['full_block_bytes']:,} B ({human_bytes(n['full_block_bytes'])}, "
         f"{n['block_tokens']} tokens x {llm.num_layers} layers)"),
        ("cluster", f"{n['cluster']}: {cluster.num_prefill_nodes} prefill + {cluster.num_decode_nodes} decode nodes, "
         f"{cluster.num_pe} PE + {cluster.num_de} DE engines"),
        ("SNIC per node", f"{node.snic_gbps:g} Gbps ({node.snic_bytes_per_s / 1e9:g} GB/s)"),
        ("CNIC per node", f"{node.num_gpus} x {node.cnic_gbps:g} Gbps "
         f"({node.num_gpus * node.cnic_bytes_per_s / 1e9:g} GB/s)"),
        ("storage bandwidth, all SNICs",
         f"{(cluster.num_prefill_nodes + cluster.num_decode_nodes) * node.snic_bytes_per_s / 1e9:g} GB/s "
         f"(PE-only reading uses {cluster.num_prefill_nodes * node.snic_bytes_per_s / 1e9:g} GB/s)"),
        ("DRAM KV buffer per node", human_bytes(node.dram_buffer_bytes)),
        ("bottleneck-free P/D", bottleneck_free_pd_range(node).describe(_ratio)),
        ("  low end bound by", n["pd_range_low_link"]),
        ("  high end bound by", n["pd_range_high_link"]),
        ("this cluster's P/D", f"{_ratio(n['pd_ratio'])}: "
         + ("inside the range" if n["pd_ratio_bottleneck_free"] else "OUTSIDE the range, a link saturates")),
    ]
    from dualpath.jsonio import json_owns_stdout, versioned, write_json_atomic

    with json_owns_stdout(args.json):
        print(format_table(("quantity", "value"), rows))
    if args.json:
        write_json_atomic(args.json, versioned("info", n))
    return 0


def workload(args: argparse.Namespace) -> int:
    from dualpath.errors import SpecError
    from dualpath.models.registry import resolve_workload
    from dualpath.models.stats import COLUMNS, trace_table_stats

    if args.agents is not None and args.agents <= 0:
        raise SpecError("--agents", "agents", args.agents, "a positive integer")
    if args.mooncake_block_tokens is not None and args.mooncake_block_tokens <= 0:
        raise SpecError("--mooncake-block-tokens", "mooncake_block_tokens", args.mooncake_block_tokens,
                        "a positive integer")
    wl = resolve_workload(args.workload, agents=args.agents, seed=args.seed, aps=args.aps,
                          block_tokens=args.block_tokens, mooncake_block_tokens=args.mooncake_block_tokens)
    stats = trace_table_stats(wl)
    print(f"workload {wl.name}: {stats.num_agents:,} agents, {stats.num_requests:,} requests")
    if args.stats:
        paper = PAPER_TRACE_TABLE.get(args.workload)
        ours, names = stats.as_tuple(), COLUMNS
        if paper:
            rows = [(k, o, p, f"{(o / p - 1) * 100:+.1f}%") for k, o, p in zip(names, ours, paper)]
            print(format_table(("per-turn mean", "ours", "paper", "diff"), rows))
        else:
            print(format_table(("per-turn mean", "value"), list(zip(names, ours))))
        print(f"per trajectory: {stats.turns_per_agent_mean:,.1f} turns, "
              f"{stats.total_tokens_per_agent_mean:,.0f} tokens")
        print(f"hit rate: {stats.hit_rate:.1%} of prompt tokens")
    if args.jsonl:
        from dualpath.models.jsonl import write_jsonl

        write_jsonl(wl, args.jsonl, block_tokens=args.block_tokens)
        print(f"wrote {args.jsonl}")
    if args.mooncake:
        from dualpath.models.mooncake import MOONCAKE_BLOCK_TOKENS
        from dualpath.models.mooncake_export import write_mooncake

        lines = write_mooncake(wl, args.mooncake, block_tokens=args.mooncake_block_tokens or MOONCAKE_BLOCK_TOKENS)
        print(f"wrote {args.mooncake} ({lines:,} requests, Mooncake JSONL with session fields)")
    if not args.stats and not args.jsonl and not args.mooncake:
        print(json.dumps({"hit_rate": round(stats.hit_rate, 4), "mean_context": round(stats.context_mean, 1)}))
    return 0
