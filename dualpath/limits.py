"""Named upper bounds on every input: sizes of files, depth of nesting, counts and magnitudes in specs.

Each bound is far above any real system (a datasheet value times a thousand or more) and far below
what would exhaust memory or overflow arithmetic, so a bound only ever rejects a typo or an attack.
An error that cites one names the constant, so a user who really needs more knows what to raise.
"""

from __future__ import annotations

MIB = 1 << 20

# Files. TOML, config.json, OpenSM/mlnx_qos/sonic/env and profile files are hand-sized; plan and trace
# documents grow with the workload (a 20,000-request plan is ~5 MB); JSONL traces are streamed a line
# at a time, so only a line and the record count are bounded.
MAX_TEXT_FILE_BYTES = 64 * MIB
MAX_DOCUMENT_BYTES = 512 * MIB
MAX_LINE_BYTES = 4 * MIB
MAX_TRACE_RECORDS = 1_000_000
MAX_NESTING_DEPTH = 64  # arrays/tables inside one another; our formats use at most 4
MAX_SHOWN_CHARS = 80  # of a value echoed on an error line

# Counts.
MAX_NODES_PER_ROLE = 4096  # 48P96D is the paper's largest cluster
MAX_GPUS_PER_NODE = 1024
MAX_ROLE_GPUS = 65_536  # GPUs of one role (one engine object each): 85 x the paper's 48P96D
MAX_GROUP_GPUS = MAX_ROLE_GPUS  # an engine or PE/DE group spanning nodes
MAX_AGENTS = 1_000_000
MAX_TOKENS = 1 << 30  # any one token count: a context, an append, a generate
MAX_LAYERS = 10_000
MAX_WIDTH = 1 << 20  # hidden size, heads, head dims, LoRA ranks, vocabulary entries
MAX_DTYPE_BYTES = 8
MAX_PARAMS = 1e16  # 10,000 x a trillion-parameter model

# Magnitudes.
MAX_BYTES = 1 << 50  # 1 PiB: HBM, DRAM buffers, a plan's read bytes
MAX_GBPS = 1e7  # Gbit/s or GB/s of any link or memory: over 1,000 x HBM3e (8 TB/s)
MAX_TFLOPS = 1e6  # per GPU
MAX_SECONDS = 1e7  # ~116 days: any duration or arrival time on an input
