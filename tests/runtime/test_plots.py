"""Plots and Chrome traces written from simulation traces."""

import json
import math

import pytest

from dualpath.calibration import Calibration
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


def _figures(monkeypatch):
    """Keep the figures `write_plots` closes, to inspect their axes."""
    from dualpath.runtime import plots

    plt = plots._pyplot()
    kept = []
    monkeypatch.setattr(plt, "close", kept.append)
    return plots, plt, kept


def test_jct_labels_keep_sub_second_values_apart():
    from dualpath.runtime.plots import _seconds_label

    assert _seconds_label(0.33) == "0.33" and _seconds_label(0.31) == "0.31"
    assert _seconds_label(12.345) == "12.3" and _seconds_label(4321.0) == "4,321"


def test_utilisation_above_one_is_shown_and_ttft_cdf_is_a_step_ecdf(monkeypatch, tmp_path):
    from dualpath.trace import RequestRecord, Trace

    plots, plt, kept = _figures(monkeypatch)
    records = [RequestRecord(f"r{i}", i, 0, 0.0, "PE0", "DE0", 0, 0, 0.0, ttft, ttft + 0.1, ttft + 1.0, 10)
               for i, ttft in enumerate((0.01, 0.5, 2.0))]
    trace = Trace("runtime", "dualpath", records, utilisation={"P0.snic": [(0.0, 0.5), (1.0, 1.4)]})
    plots._nics(plt, trace, tmp_path)
    assert kept[-1].axes[0].get_ylim()[1] >= 1.4
    plots._ttft_cdf(plt, [trace], tmp_path)
    ax = kept[-1].axes[0]
    line = ax.lines[0]
    assert line.get_drawstyle() == "steps-post" and list(line.get_ydata())[-1] == 1.0
    assert ax.get_xscale() == "log" and "log" in ax.get_xlabel()
