"""Node presets: the paper's Hopper node (the default), its Qwen variant, a DGX A100, a local emulation.

Sources:
- paper-hopper: DualPath (arXiv 2602.21548) testbed, design.md section 3: 8 Hopper GPUs (80 GB HBM
  assumed), one 400 Gbps InfiniBand CNIC per GPU, one 400 Gbps SNIC per node, 80 GB KV DRAM buffer
  for the DeepSeek models, host memory bandwidth about 500 GB/s.
- paper-hopper-320g: the same node with the 320 GB DRAM buffer the paper uses for Qwen2.5-32B.
- dgx-a100: NVIDIA DGX A100 user guide: 8 x A100 80 GB, 8 x 200 Gbps HDR ConnectX-6 for the compute
  fabric, a 200 Gbps port for storage, PCIe Gen4 x16 (256 Gbps) per GPU, two EPYC 7742 with 8 DDR4-3200
  channels each (2 x 204.8 GB/s host memory bandwidth).
- local-emulated: one engine per node on a laptop or CI box; bandwidths are what the runtime's rate
  limiters emulate (a SNIC of 50 MB/s, a CNIC of 200 MB/s), small enough that loading KV of the
  `tiny` model dominates, as storage does on the real node. SNIC/CNIC = 1/4 keeps 1P1D inside the
  bottleneck-free range [1/3, 3/2].
"""

from __future__ import annotations

from dualpath.cluster import GB, PAPER_NODE, NodeSpec
from dualpath.errors import UnknownNameError

MB = 1_000_000

NODE_PRESETS: dict[str, NodeSpec] = {
    "paper-hopper": PAPER_NODE,
    "paper-hopper-320g": NodeSpec(dram_buffer_bytes=320 * GB, name="paper-hopper-320g"),
    "dgx-a100": NodeSpec(
        num_gpus=8,
        hbm_bytes_per_gpu=80 * GB,
        snic_gbps=200.0,
        cnic_gbps=200.0,
        dram_buffer_bytes=80 * GB,
        host_mem_gb_per_s=409.6,
        pcie_gbps=256.0,
        name="dgx-a100",
    ),
    "local-emulated": NodeSpec(
        num_gpus=1,
        hbm_bytes_per_gpu=2 * GB,
        snic_gbps=0.4,
        cnic_gbps=1.6,
        dram_buffer_bytes=512 * MB,
        host_mem_gb_per_s=4.0,
        pcie_gbps=16.0,
        name="local-emulated",
    ),
}

DEFAULT_NODE = "paper-hopper"


def node_preset(name: str) -> NodeSpec:
    """The preset called `name`; unknown names list the valid ones."""
    try:
        return NODE_PRESETS[name.strip().lower()]
    except KeyError:
        raise UnknownNameError("node preset", name, list(NODE_PRESETS)) from None


def list_nodes() -> list[str]:
    return list(NODE_PRESETS)
