"""Plots and Chrome traces written from simulation traces."""

import json
import math

import pytest

from dualpath.runtime.sim.calibration import Calibration
from dualpath.runtime.sim.simulator import simulate
from dualpath.solver.policies import make_policy
from tests.runtime.sim.cases import TOY_MOE, agents_workload, toy_cluster

pytest.importorskip("matplotlib", reason="plots need the 'plots' extra (matplotlib)")


def test_write_plots_and_chrome_trace(tmp_path):
    from dualpath.runtime.plots import write_plots

    cluster = toy_cluster(2, 2, gpus=2, pe_group=2, de_group=4)
    workload = agents_workload(8, 4)
    cal = Calibration(cost_model=None)
    traces = [simulate(cluster, TOY_MOE, workload, make_policy(p, cluster, TOY_MOE), calibration=cal,
                       chrome_window=(0.0, math.inf) if p == "dualpath" else None, progress=False)
              for p in ("basic", "dualpath")]
    paths = write_plots(traces, tmp_path)
    names = {p.name for p in paths}
    assert {"jct.png", "ttft_cdf.png", "nic_basic.png", "nic_dualpath.png", "chrome_dualpath.json"} <= names
    for path in paths:
        if path.suffix == ".png":
            assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    events = json.loads((tmp_path / "chrome_dualpath.json").read_text())["traceEvents"]
    assert any(e.get("cat") == "prefill" for e in events) and any(e.get("cat") == "read" for e in events)
