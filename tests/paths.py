"""Where the repository's shipped inputs are, for tests that read them."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
MOONCAKE_TRACE = EXAMPLES / "traces" / "mooncake_synthetic_trace.jsonl"
BENCHMARKS = ROOT / "benchmarks"
