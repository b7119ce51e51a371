import pytest

from dualpath.errors import SpecError
from dualpath.request import Trajectory, Turn, Workload, by_agent, requests_of


def test_requests_hit_the_previous_context_in_whole_blocks():
    traj = Trajectory(agent=7, turns=(Turn(100, 20), Turn(30, 10), Turn(5, 3)))
    reqs = requests_of(traj, block_tokens=64)
    assert [(r.hit_tokens, r.new_tokens, r.output_tokens) for r in reqs] == [
        (0, 100, 20),  # nothing cached on the first turn
        (64, 86, 10),  # context 120 -> one whole block cached, 56 + 30 new
        (128, 37, 3),  # context 160 -> two whole blocks
    ]
    assert reqs[1].id == "a7t1" and reqs[2].prompt_tokens == 165 and reqs[2].context_tokens == 168


def test_stats_are_per_turn_means():
    trajs = (Trajectory(0, (Turn(100, 20), Turn(30, 10))), Trajectory(1, (Turn(50, 50),)))
    reqs = tuple(r for t in trajs for r in requests_of(t, 64))
    s = Workload("w", reqs, trajs).stats()
    assert s.num_agents == 2 and s.num_requests == 3 and s.turns_mean == 1.5
    assert s.append_mean == pytest.approx(60) and s.generate_mean == pytest.approx(80 / 3)
    assert s.total_tokens_mean == pytest.approx(130)
    assert s.context_mean == pytest.approx((100 + 150 + 50) / 3)
    assert s.hit_rate == pytest.approx(64 / 300)
    assert [r.turn for r in by_agent(reqs)[0]] == [0, 1]


def test_bad_turns_and_empty_workloads_are_refused():
    with pytest.raises(SpecError, match="append_tokens"):
        Turn(0, 5)
    with pytest.raises(SpecError, match="requests"):
        Workload("empty", ()).stats()
