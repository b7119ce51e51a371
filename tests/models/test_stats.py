"""The trace-table columns on a workload small enough to compute by hand."""

import pytest

from dualpath.models.stats import trace_table_stats
from dualpath.models.workloads import from_requests, from_trajectories
from dualpath.request import Request, Trajectory, Turn


def test_columns_by_hand():
    # agent 0: 1 turn (100 + 10) -> total 110; agent 1: 3 turns (200+20, 30+5, 40+5) -> total 300
    workload = from_trajectories("w", [
        Trajectory(0, (Turn(100, 10),)),
        Trajectory(1, (Turn(200, 20), Turn(30, 5), Turn(40, 5))),
    ], block_tokens=64)
    stats = trace_table_stats(workload)
    assert stats.turns_per_turn_mean == pytest.approx((1 * 1 + 3 * 3) / 4)  # 2.5
    assert stats.turns_per_agent_mean == pytest.approx(2.0)
    assert stats.append_mean == pytest.approx((100 + 200 + 30 + 40) / 4)
    assert stats.generate_mean == pytest.approx((10 + 20 + 5 + 5) / 4)
    assert stats.total_tokens_per_turn_mean == pytest.approx((1 * 110 + 3 * 300) / 4)
    assert stats.total_tokens_per_agent_mean == pytest.approx((110 + 300) / 2)
    # prompts: 100 | 200, 220 + 30 = 250, 255 + 40 = 295
    assert stats.context_mean == pytest.approx((100 + 200 + 250 + 295) / 4)
    # hits: 0 | 0, 192 (220 in 64-token blocks), 192 (255 -> 192)
    assert stats.hit_rate == pytest.approx((192 + 192) / (100 + 200 + 250 + 295))


def test_trace_of_requests_groups_by_agent():
    workload = from_requests("t", [
        Request("x", 0, 0, 0, 100, 10), Request("y", 0, 1, 64, 66, 10), Request("z", 1, 0, 0, 50, 5)])
    stats = trace_table_stats(workload)
    assert stats.turns_per_turn_mean == pytest.approx((2 * 2 + 1) / 3)
    assert stats.total_tokens_per_turn_mean == pytest.approx((2 * 140 + 55) / 3)
