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


def test_requests_and_trajectories_refuse_nan_inf_and_absurd_values():
    from dualpath.request import Request

    for arrival in (float("nan"), float("inf"), 1e300, -1.0):
        with pytest.raises(SpecError, match="arrival_s"):
            Request("r", 0, 0, 0, 10, 1, arrival)
    with pytest.raises(SpecError, match="start_s"):
        Trajectory(0, (Turn(1, 1),), float("nan"))
    with pytest.raises(SpecError, match="new_tokens = True"):
        Request("r", 0, 0, 0, True, 1)  # bool is not a count
    with pytest.raises(SpecError, match="MAX_TOKENS"):
        Turn(2**40, 1)


def test_check_context_names_the_request_and_the_models_maximum():
    from dualpath.request import Request, check_context

    ok = Request("a0t0", 0, 0, 0, 1_000, 10)
    long = Request("a3t5", 3, 5, 163_000, 37_000, 100)  # 200,100 tokens with its output
    check_context(Workload("w", (ok,)), 163_840, "m")
    with pytest.raises(SpecError) as info:
        check_context(Workload("w", (ok, long)), 163_840, "deepseek-v3.2")
    text = str(info.value)
    assert "request a3t5 (agent 3, turn 5) context = 200100" in text
    assert "at most 163,840 tokens, model deepseek-v3.2's max_context_tokens" in text
