"""A rollout plan on real engines: the same `RolloutPolicy` object the simulator runs, pins and all."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("torch")

from dualpath.rollout_plan import AgentDirective, RolloutPlan, RolloutSource, TurnPriority
from dualpath.runtime.scheduling.realrun import run_real
from dualpath.solver.rollout_policy import RolloutPolicy
from tests.runtime.cases import BT, LLM, cluster, workload


def test_a_rollout_plan_runs_on_real_engines_with_its_directives():
    spec, w = cluster(1, 2), workload(3, 3)
    source = RolloutSource("1P2D", LLM.name, "test", 3, 0, BT)
    plan = RolloutPlan(source, "dualpath", (AgentDirective(0, 1, de="DE1", pe_read_fraction=0.0),
                                            AgentDirective(1, 0, de="DE0", pe_read_fraction=1.0)),
                       turn_priority=TurnPriority(LLM.max_context_tokens, 50.0), candidate="hand")
    trace = run_real(spec, LLM, w, RolloutPolicy(spec, LLM, plan, BT), in_process=True, verify=True,
                     timeout_s=60, block_tokens=BT)
    assert trace.policy == "rollout-plan:hand"
    assert len(trace.records) == len(w.requests) and not trace.meta.get("wrong_turns")
    by_agent = {a: [r for r in trace.records if r.agent == a] for a in (0, 1)}
    assert all(r.de == "DE1" and r.pe_read_bytes == 0 for r in by_agent[0])
    assert all(r.de == "DE0" and r.de_read_bytes == 0 for r in by_agent[1])


@pytest.mark.slow
def test_dualpath_run_takes_a_rollout_plan(tmp_path, capsys):
    from dualpath import cli
    from tests.paths import EXAMPLES

    path, out = tmp_path / "rollout.json", tmp_path / "run.json"
    source = RolloutSource("local-1p1d", "tiny", "agentic-64k", 2, 0)
    RolloutPlan(source, "optimized", (AgentDirective(1, 0, pe_read_fraction=1.0),), candidate="hand").save(str(path))
    code = cli.main(["run", "--cluster", str(EXAMPLES / "clusters" / "local-1p1d.toml"), "--agents", "2",
                     "--turns", "2", "--in-process", "--plan", str(path), "--json", str(out)])
    assert code == 0, capsys.readouterr()
    row = json.loads(out.read_text())["results"][0]
    assert row["policy"] == "rollout-plan:hand" and row["lost_turns"] == 0 and row["jct_s"] > 0
