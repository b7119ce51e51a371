"""`dualpath run --transport verbs` on a real RDMA device: a short 1P1D dual-path run whose turns
match the same run over TCP. `make test-rdma` runs it in a QEMU guest on soft-RoCE (rxe0).

The run prints no token ids; `--verify` checks every turn's tokens against a full recompute on the
same model and seed, so two verified runs that complete the same requests produced the same tokens.
The workload is tiny (2 agents, 2 turns, 1/256 scale) and the engines are threads of one process
(`--in-process`, one torch import): torch under QEMU's TCG is slow.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from dualpath.runtime.transports.verbs_qp import device_unavailable_reason

REASON = device_unavailable_reason()
pytestmark = [pytest.mark.rdma, pytest.mark.skipif(REASON is not None, reason=f"needs an RDMA device: {REASON}")]
RUN = ("run", "--cluster", "1P1D", "--model", "tiny", "--agents", "2", "--turns", "2", "--scale", "256",
       "--policy", "dualpath", "--verify", "--in-process", "--timeout-s", "600")


def _run(tmp_path, transport: str) -> dict:
    out = tmp_path / f"{transport}.json"
    start = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "dualpath.cli", *RUN, "--transport", transport, "--json", str(out)],
                          capture_output=True, text=True, timeout=1200)
    print(f"dualpath run --transport {transport}: exit {proc.returncode} in {time.monotonic() - start:.0f} s\n"
          f"{proc.stdout}{proc.stderr[-3000:]}")
    assert proc.returncode == 0, f"--transport {transport} failed: {proc.stderr[-2000:]}"
    (result,) = json.loads(out.read_text())["results"]
    return result


def test_dualpath_run_over_verbs_matches_tcp(tmp_path):
    tcp, verbs = _run(tmp_path, "tcp"), _run(tmp_path, "verbs")
    for result in (tcp, verbs):
        assert not result["wrong_turns"] and result["lost_turns"] == 0 and result["turns"] > 0

    def turns(result: dict) -> list[tuple]:
        return sorted((r["request"], r["prompt_tokens"], r["output_tokens"], r["status"])
                      for r in result["trace"]["records"])

    assert turns(verbs) == turns(tcp)
    # The same history was read from storage once either way; which side read which part is the
    # dual-path scheduler's choice, made on timing, so only the total is compared.
    assert sum(verbs["read_bytes_pe_de"]) == sum(tcp["read_bytes_pe_de"]) > 0
