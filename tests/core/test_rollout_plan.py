"""The rollout plan type: JSON round trip, one-line errors on bad files, the per-turn priority rule."""

import json
from typing import Any

import pytest

from dualpath.errors import InputError
from dualpath.rollout_plan import AgentDirective, RolloutPlan, RolloutSource, TurnPriority

SOURCE = RolloutSource("1P1D", "ds-27b", "agentic-64k", 4, 7)


def plan(**changes) -> RolloutPlan:
    fields: dict[str, Any] = {"source": SOURCE, "rules": "optimized",
              "agents": (AgentDirective(0, 1), AgentDirective(2, 0, pe_group=0, de="DE1", pe_read_fraction=0.25)),
              "options": {"batch_order": "fifo"}, "turn_priority": TurnPriority(65536, 50.0),
              "candidate": "optimized+turns>=50", "executed_jct_s": 110.0, "lower_bound_s": 100.0,
              "solve_time_s": 3.5, "baselines": {"dualpath": 130.0, "optimized": 120.0},
              "meta": {"sample_seeds": [1007]}}
    return RolloutPlan(**(fields | changes))


def test_round_trip_keeps_every_field_and_reports_the_gap(tmp_path):
    p = plan()
    path = tmp_path / "rollout.json"
    p.save(str(path))
    data = json.loads(path.read_text())
    assert data["kind"] == "rollout-plan" and data["schema_version"] == 1
    assert data["gap"] == pytest.approx(0.1) and data["baselines"] == {"dualpath": 130.0, "optimized": 120.0}
    back = RolloutPlan.load(str(path))
    assert back == p
    assert plan(executed_jct_s=None).gap is None


def test_agents_without_a_directive_are_left_out_of_the_file():
    data = plan(agents=(AgentDirective(0), AgentDirective(1, 1))).to_json()
    assert data["agents"] == [{"agent": 1, "priority": 1}]


@pytest.mark.parametrize(("edit", "message"), [
    (lambda d: d.update(kind="plan"), "expected a dualpath rollout-plan document"),
    (lambda d: d.update(schema_version=99), "schema_version 99 not supported"),
    (lambda d: d.update(rules="fastest"), "rules 'fastest'"),
    (lambda d: d.update(knowledge="psychic"), "knowledge 'psychic'"),
    (lambda d: d.pop("source"), "malformed rollout plan"),
    (lambda d: d["source"].update(agents="four"), "source.agents: expected an integer"),
    (lambda d: d["agents"].append({"agent": 3, "colour": "red"}), "agents[2]: unknown keys ['colour']"),
    (lambda d: d["agents"].append({"agent": 0}), "agent 0 has two directives"),
    (lambda d: d["agents"].append({"agent": 5, "pe_read_fraction": 1.5}), "pe_read_fraction 1.5 is not in [0, 1]"),
    (lambda d: d.update(executed_jct_s="fast"), "executed_jct_s: expected a finite number"),
    (lambda d: d.update(agents=[3]), "agents[0]: expected an object"),
])
def test_bad_files_give_one_line_naming_the_file(tmp_path, edit, message):
    data = plan().to_json()
    edit(data)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(data))
    with pytest.raises(InputError) as info:
        RolloutPlan.load(str(path))
    text = str(info.value)
    assert message in text and str(path) in text and "\n" not in text


def test_turn_priority_predicts_turns_left_from_the_growth_so_far():
    rule = TurnPriority(context_tokens=10_000, min_remaining_turns=50, first_turn_priority=1)
    assert rule.priority(0, 500, 500) == 1  # a first turn shows no growth
    # 10 turns grew 1,000 tokens: 100 a turn, 8,500 left -> 85 turns: goes first.
    assert rule.priority(10, 1_500, 500) == 0
    # 10 turns grew 5,000 tokens: 500 a turn, 4,500 left -> 9 turns: waits.
    assert rule.priority(10, 5_500, 500) == 1
    assert rule.priority(3, 500, 500) == 0  # no growth yet
    assert TurnPriority(10_000, 50, first_turn_priority=0).priority(0, 9_000, 9_000) == 0


def test_a_huge_or_non_finite_value_is_cut_or_refused_in_one_line(tmp_path):
    data = plan().to_json()
    data["rules"] = "x" * 100_000
    data["turn_priority"]["min_remaining_turns"] = "nan"
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(data))
    with pytest.raises(InputError) as err:
        RolloutPlan.load(str(path))
    assert "\n" not in str(err.value) and len(str(err.value)) < 300 and str(path) in str(err.value)
    data["turn_priority"]["min_remaining_turns"] = 50.0
    path.write_text(json.dumps(data))
    with pytest.raises(InputError, match=r"chars\)"):
        RolloutPlan.load(str(path))
