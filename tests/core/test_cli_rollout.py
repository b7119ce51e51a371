"""`dualpath plan --rollout` and `dualpath simulate --plan` on a rollout plan, end to end (a small rollout)."""

import json

import pytest

from dualpath.calibration import calibrated_llm
from dualpath.cli import main
from dualpath.cli_rollout import rollout_simulator, sample_seeds
from dualpath.models.registry import resolve_cluster, resolve_model, resolve_workload
from dualpath.rollout_plan import RolloutPlan, RolloutSource
from dualpath.runtime.sim.simulator import simulate
from dualpath.solver.policies import make_policy

ARGS = ("--cluster", "1P1D", "--model", "ds-27b", "--workload", "agentic-32k", "--agents", "4", "--seed", "3")


@pytest.fixture(scope="module")
def planned(tmp_path_factory):
    path = tmp_path_factory.mktemp("rollout") / "plan.json"
    assert main(["plan", "--rollout", *ARGS, "--json", str(path)]) == 0
    return path, json.loads(path.read_text())


def test_plan_reports_execution_bound_and_baselines(planned):
    _, data = planned
    assert data["kind"] == "rollout-plan" and data["knowledge"] == "first-turns"
    assert data["source"] == {"cluster": "1P1D", "model": "ds-27b", "workload": "agentic-32k", "agents": 4,
                              "seed": 3, "block_tokens": 64}
    assert set(data["baselines"]) == {"dualpath", "optimized"}
    assert 0 < data["lower_bound_s"] <= data["executed_jct_s"]
    assert data["gap"] == pytest.approx(data["executed_jct_s"] / data["lower_bound_s"] - 1)
    if data["candidate"] in data["baselines"]:  # an online rule set alone executes as that online policy
        assert data["executed_jct_s"] == data["baselines"][data["candidate"]]
    assert data["solve_time_s"] > 0 and data["meta"]["sample_seeds"] == sample_seeds(3, 1) == [1003]


def test_simulate_replays_the_plan_within_one_percent(planned, capsys):
    path, data = planned
    capsys.readouterr()
    assert main(["simulate", "--plan", str(path), "--json", "-"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["kind"] == "rollout-replay"
    assert out["executed_jct_s"] == pytest.approx(data["executed_jct_s"], rel=0.01)


def test_a_plan_without_directives_executes_as_its_online_policy():
    cluster, llm = resolve_cluster("1P1D"), calibrated_llm(resolve_model("ds-27b"))
    truth = resolve_workload("agentic-32k", agents=3, seed=1)
    source = RolloutSource("1P1D", "ds-27b", "agentic-32k", 3, 1)
    run = rollout_simulator(cluster, llm, 1)
    for rules in ("dualpath", "optimized"):
        online = simulate(cluster, llm, truth, make_policy(rules, cluster, llm), seed=1, progress=False)
        assert run(truth, RolloutPlan(source, rules)) == online.metrics().jct_s


def test_bad_rollout_flags_and_files_are_one_line(capsys, tmp_path):
    assert main(["plan", "--rollout", *ARGS[:-4], "--agents", "0"]) == 2
    assert "agents" in capsys.readouterr().err
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"kind": "rollout-plan", "schema_version": 1, "rules": "optimized"}))
    assert main(["simulate", "--plan", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert "malformed rollout plan" in err and len(err.splitlines()) == 1
