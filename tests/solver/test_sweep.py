import pytest

from dualpath.cluster import NodeSpec
from dualpath.errors import SpecError
from dualpath.solver.sweep import sweep_pd
from tests.solver.cases import DS27B, agentic_requests


def test_sweep_ranks_every_split_and_prices_upgrades():
    reqs = agentic_requests(200, seed=1)
    result = sweep_pd(DS27B, reqs, gpu_budget=48)
    assert [r.shorthand for r in sorted(result.rows, key=lambda r: r.prefill_nodes)] == \
        ["1P5D", "2P4D", "3P3D", "4P2D", "5P1D"]
    bounds = [r.bound_s for r in result.rows]
    assert bounds == sorted(bounds)
    snic = {u.what: u for u in result.upgrades}
    # DS 27B on a 64K trace is storage bound: a faster SNIC must lower the bound, not raise it.
    assert snic["SNIC x2"].bound_gain > 0
    assert snic["DRAM buffer x2"].bound_gain >= 0
    md = result.to_markdown()
    assert "| 1 |" in md and "SNIC x2" in md
    assert result.to_json()["rows"][0]["shorthand"] == result.best.shorthand


def test_simulation_callback_decides_the_ranking():
    reqs = agentic_requests(50, seed=2)
    calls = []

    def fake_sim(cluster):
        calls.append(cluster.shorthand)
        return 100.0 - cluster.num_prefill_nodes  # prefers more prefill nodes

    result = sweep_pd(DS27B, reqs, gpu_budget=32, simulate=fake_sim, snic_factors=(2.0,), buffer_factors=())
    assert result.best.shorthand == "3P1D"
    assert len(calls) == 3 + 1
    assert result.upgrades[0].simulated_gain == pytest.approx(0.0)


def test_bad_budget_is_refused():
    with pytest.raises(SpecError, match="gpu_budget"):
        sweep_pd(DS27B, agentic_requests(5), gpu_budget=8, node=NodeSpec())
