"""Cluster model: node spec, nodes with a role, engines (one per GPU) and PE/DE groups.

Bandwidths are in Gbit/s as vendors quote NICs (`_gbps`); host memory in GB/s (`_gb_per_s`); sizes
in bytes. Engines are named PE0.. and DE0.. across the cluster; nodes P0.. and D0...
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum

from dualpath.errors import SpecError
from dualpath.limits import MAX_ROLE_GPUS
from dualpath.validate import fraction, positive

GB = 1_000_000_000


class Role(str, Enum):
    PREFILL = "prefill"
    DECODE = "decode"


@dataclass(frozen=True)
class NodeSpec:
    """One server. Defaults are the paper's node (design.md section 3)."""

    num_gpus: int = 8
    hbm_bytes_per_gpu: int = 80 * GB
    snic_gbps: float = 400.0  # one storage NIC per node
    cnic_gbps: float = 400.0  # one compute NIC per GPU
    dram_buffer_bytes: int = 80 * GB  # KV DRAM buffer (320 GB for Qwen2.5-32B in the paper)
    host_mem_gb_per_s: float = 500.0
    pcie_gbps: float = 512.0  # PCIe Gen5 x16, about 64 GB/s per GPU
    # Share of CNIC bandwidth KV traffic gets on average, what the low VL keeps when model collectives
    # run; the paper reserves ~1% as a floor, the rest depends on load. 1.0 = no model traffic modelled.
    cnic_kv_share: float = 1.0
    name: str = "paper-hopper"

    def __post_init__(self) -> None:
        src = f"NodeSpec {self.name}"
        positive(src, "num_gpus", self.num_gpus, integer=True, cap="MAX_GPUS_PER_NODE")
        for name in ("hbm_bytes_per_gpu", "dram_buffer_bytes"):
            positive(src, name, getattr(self, name), integer=True, cap="MAX_BYTES")
        for name in ("snic_gbps", "cnic_gbps", "host_mem_gb_per_s", "pcie_gbps"):
            positive(src, name, getattr(self, name), cap="MAX_GBPS")
        fraction(src, "cnic_kv_share", self.cnic_kv_share)

    @property
    def snic_bytes_per_s(self) -> float:
        return self.snic_gbps * 1e9 / 8

    @property
    def cnic_bytes_per_s(self) -> float:
        return self.cnic_gbps * 1e9 / 8

    @property
    def host_mem_bytes_per_s(self) -> float:
        return self.host_mem_gb_per_s * 1e9


PAPER_NODE = NodeSpec()


@dataclass(frozen=True)
class Engine:
    """One GPU running one engine."""

    name: str  # "PE3", "DE17"
    role: Role
    index: int  # within its role
    node: str  # "P0"
    gpu: int  # within its node
    group: int  # group index within its role


@dataclass(frozen=True)
class ClusterSpec:
    """Nodes of one spec in two roles; groups of `*_group_gpus` consecutive GPUs (may span nodes)."""

    num_prefill_nodes: int
    num_decode_nodes: int
    node: NodeSpec = field(default_factory=NodeSpec)
    pe_group_gpus: int = 8
    de_group_gpus: int = 8
    name: str = ""

    def __post_init__(self) -> None:
        src = f"cluster {self.name or self.shorthand}"
        for name in ("num_prefill_nodes", "num_decode_nodes"):
            positive(src, name, getattr(self, name), integer=True, cap="MAX_NODES_PER_ROLE")
        for name in ("pe_group_gpus", "de_group_gpus"):
            positive(src, name, getattr(self, name), integer=True, cap="MAX_GROUP_GPUS")
        for role, n_nodes in (("prefill", self.num_prefill_nodes), ("decode", self.num_decode_nodes)):
            if n_nodes * self.node.num_gpus > MAX_ROLE_GPUS:  # each GPU becomes an engine object
                raise SpecError(src, f"num_{role}_nodes", n_nodes, f"at most {MAX_ROLE_GPUS // self.node.num_gpus:,} "
                                f"nodes of {self.node.num_gpus} GPUs ({MAX_ROLE_GPUS:,} GPUs per role, "
                                "dualpath.limits.MAX_ROLE_GPUS)")
        for role, n_nodes, size in (("pe", self.num_prefill_nodes, self.pe_group_gpus),
                                    ("de", self.num_decode_nodes, self.de_group_gpus)):
            if (n_nodes * self.node.num_gpus) % size:
                raise SpecError(src, f"{role}_group_gpus", size,
                                f"a divisor of the {n_nodes * self.node.num_gpus} {role.upper()} GPUs")

    @property
    def shorthand(self) -> str:
        return f"{self.num_prefill_nodes}P{self.num_decode_nodes}D"

    @property
    def num_pe(self) -> int:
        return self.num_prefill_nodes * self.node.num_gpus

    @property
    def num_de(self) -> int:
        return self.num_decode_nodes * self.node.num_gpus

    def node_names(self, role: Role) -> list[str]:
        count = self.num_prefill_nodes if role is Role.PREFILL else self.num_decode_nodes
        return [f"{'P' if role is Role.PREFILL else 'D'}{i}" for i in range(count)]

    def engines(self, role: Role) -> list[Engine]:
        prefix = "PE" if role is Role.PREFILL else "DE"
        group_gpus = self.pe_group_gpus if role is Role.PREFILL else self.de_group_gpus
        out = []
        for node_index, node in enumerate(self.node_names(role)):
            for gpu in range(self.node.num_gpus):
                index = node_index * self.node.num_gpus + gpu
                out.append(Engine(f"{prefix}{index}", role, index, node, gpu, index // group_gpus))
        return out

    def all_nodes(self) -> list[str]:
        return self.node_names(Role.PREFILL) + self.node_names(Role.DECODE)


_SHORTHAND = re.compile(r"^(\d{1,9})P(\d{1,9})D$", re.IGNORECASE | re.ASCII)  # ASCII: int() reads other digits


def parse_shorthand(text: str, node: NodeSpec = PAPER_NODE, **kwargs) -> ClusterSpec:
    """`2P4D` -> 2 prefill nodes and 4 decode nodes of `node`."""
    match = _SHORTHAND.match(text.strip())
    if not match:
        raise SpecError("cluster", "shorthand", text, "xPyD, e.g. 2P4D or 48P96D, or a .toml file")
    kwargs.setdefault("name", text.upper())
    return ClusterSpec(int(match.group(1)), int(match.group(2)), node=node, **kwargs)


@dataclass(frozen=True)
class PDRange:
    """Bottleneck-free range of P/D node ratios and the link that binds each end."""

    low: float
    high: float
    low_link: str
    high_link: str

    @property
    def exists(self) -> bool:
        """False when the upper bound falls below the lower one: every P/D ratio saturates some link."""
        return self.low <= self.high + 1e-12

    def contains(self, p_over_d: float) -> bool:
        return self.exists and self.low - 1e-12 <= p_over_d <= self.high + 1e-12

    def describe(self, ratio: Callable[[float], str] = "{:.3f}".format) -> str:
        """"low .. high", or why no ratio is bottleneck-free (never a range with a negative end)."""
        if self.exists:
            return f"{ratio(self.low)} .. {ratio(self.high)}"
        if self.high <= 0:  # the link saturates with no prefill node at all: no ratio to print
            return f"no bottleneck-free ratio: {self.high_link} saturates at any P/D"
        return (f"no bottleneck-free ratio: {self.high_link} needs P/D <= {ratio(self.high)}, "
                f"{self.low_link} needs P/D >= {ratio(self.low)}")


def bottleneck_free_pd_range(node: NodeSpec) -> PDRange:
    """The paper's inequality: s/(g-s) <= P/D <= min{(g-2s)/s, (g-s)/(2s), (M/(B*s) - 3)/2}.

    g GPUs per node, SNIC bandwidth = s x CNIC bandwidth B, host memory bandwidth M.
    """
    g = node.num_gpus
    s = node.snic_gbps / node.cnic_gbps
    bs = node.snic_bytes_per_s
    if s >= g / 2:
        raise SpecError(f"NodeSpec {node.name}", "snic_gbps", node.snic_gbps,
                        f"less than half the node's total CNIC bandwidth ({g * node.cnic_gbps / 2} Gbps)")
    low = s / (g - s)
    uppers = {
        "DE CNIC out (DE-read KV to PEs plus prompt KV H2D loopback)": (g - 2 * s) / s,
        "DE CNIC in (PE-read KV plus H2D loopback)": (g - s) / (2 * s),
        "DE host memory (SNIC in, reads out, KV in)": (node.host_mem_bytes_per_s / bs - 3) / 2,
    }
    high = min(uppers.values())
    # Ties are real on the paper's node (DE CNIC and host memory both give 7/2): name every binding link.
    high_link = " = ".join(k for k in sorted(uppers) if abs(uppers[k] - high) < 1e-9)
    return PDRange(low, high, "PE CNIC ingress (all hit KV enters PE HBM)", high_link)
