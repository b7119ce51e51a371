"""Resampling past 500 agents, Poisson arrivals and optimizer batches."""

import math
import statistics

import pytest

from dualpath.errors import SpecError
from dualpath.models.generators import agentic_trajectories, agentic_workload
from dualpath.models.sampling import online_trajectories, poisson_arrivals, resample, sample_batch
from dualpath.models.workloads import from_trajectories
from dualpath.request import Trajectory, Turn, by_agent
from tests.paths import MOONCAKE_TRACE

TRACE = MOONCAKE_TRACE


@pytest.fixture(scope="module")
def trace_64k():
    return agentic_trajectories("agentic-64k", 500, seed=0)


def test_resampled_agents_share_no_prefix(trace_64k):
    workload = agentic_workload("agentic-64k", agents=700, seed=0)
    assert workload.stats().num_agents == 700
    agents = by_agent(workload.requests)
    for agent in range(500, 700):
        source = trace_64k[agent % 500]
        first = agents[agent][0]
        assert first.turn == 0 and first.hit_tokens == 0  # a fresh prompt: nothing of it is stored
        # its prompt is the source's context at the chosen turn k: history plus turn k's append
        k = len(source.turns) - len(agents[agent])
        history = sum(t.append_tokens + t.generate_tokens for t in source.turns[:k])
        assert first.new_tokens == history + source.turns[k].append_tokens
        assert workload.trajectories[agent].turns[1:] == source.turns[k + 1:]
    # the first 500 are the trace itself
    assert workload.trajectories[:500] == tuple(trace_64k)


def test_resampling_starts_at_random_turns(trace_64k):
    out = resample(trace_64k, 1500, seed=3)
    sizes = [len(trace_64k[i % 500].turns) for i in range(500, 1500)]
    starts = [n - len(out[i].turns) for n, i in zip(sizes, range(500, 1500))]
    assert len(set(starts)) > 50
    # uniform over the source's turns: the relative start averages one half
    assert statistics.fmean(k / n for k, n in zip(starts, sizes)) == pytest.approx(0.5, abs=0.05)
    assert [t.agent for t in out] == list(range(1500))


def test_resample_is_seeded(trace_64k):
    assert resample(trace_64k, 900, seed=1) == resample(trace_64k, 900, seed=1)
    assert resample(trace_64k, 900, seed=1) != resample(trace_64k, 900, seed=2)


def test_resample_rejects_bad_counts(trace_64k):
    with pytest.raises(SpecError):
        resample(trace_64k, 0)
    with pytest.raises(SpecError):
        resample([], 5)


def test_poisson_rate_and_exponential_gaps():
    trajs = [Trajectory(i, (Turn(10, 10),)) for i in range(4000)]
    arrived = poisson_arrivals(trajs, agents_per_s=2.5, seed=7)
    starts = [t.start_s for t in arrived]
    gaps = [b - a for a, b in zip([0.0, *starts], starts)]
    assert all(g > 0 for g in gaps)
    assert len(starts) / starts[-1] == pytest.approx(2.5, rel=0.05)
    assert statistics.pstdev(gaps) / statistics.fmean(gaps) == pytest.approx(1.0, abs=0.06)  # exponential: CV 1
    assert poisson_arrivals(trajs, 2.5, seed=7) == arrived
    with pytest.raises(SpecError):
        poisson_arrivals(trajs, 0)


def test_online_arrivals_cover_the_horizon_at_the_rate(trace_64k):
    arrived = online_trajectories(trace_64k, agents_per_s=2.0, horizon_s=1000.0, seed=3)
    starts = sorted(t.start_s for t in arrived)
    assert len(arrived) == pytest.approx(2000, rel=0.1)  # the count follows from rate x horizon
    assert starts[-1] < 1000.0 and starts[-1] > 990.0  # arrivals continue to the end of the horizon
    assert [t.agent for t in arrived] == list(range(len(arrived)))
    assert [t.start_s for t in arrived] == starts
    assert online_trajectories(trace_64k, 2.0, 1000.0, seed=3) == arrived


def test_online_agents_are_whole_trajectories_dealt_evenly(trace_64k):
    arrived = online_trajectories(trace_64k, agents_per_s=2.0, horizon_s=1000.0, seed=0)
    by_turns: dict[tuple, int] = {}
    for t in arrived:
        by_turns[t.turns] = by_turns.get(t.turns, 0) + 1
    rounds = len(arrived) / len(trace_64k)
    assert all(math.floor(rounds) <= n <= math.ceil(rounds) for n in by_turns.values())  # each served alike
    assert len(by_turns) == len({t.turns for t in trace_64k})
    early = [t for t in arrived if t.start_s < 500.0]
    mean_turns = statistics.fmean(len(t.turns) for t in trace_64k)
    assert statistics.fmean(len(t.turns) for t in early) == pytest.approx(mean_turns, rel=0.1)


def test_online_arrivals_reject_bad_values(trace_64k):
    with pytest.raises(SpecError):
        online_trajectories(trace_64k, 0.0, 100.0)
    with pytest.raises(SpecError):
        online_trajectories(trace_64k, 1.0, -1.0)
    assert len(online_trajectories(trace_64k, 1e-6, 1.0)) == 1  # at least one agent


def test_online_workload_requests_arrive_with_their_agent():
    workload = agentic_workload("agentic-32k", agents=50, seed=0, aps=1.0)
    starts = {t.agent: t.start_s for t in workload.trajectories}
    assert all(r.arrival_s == starts[r.agent] for r in workload.requests)
    assert [r.arrival_s for r in workload.requests] == sorted(r.arrival_s for r in workload.requests)


def test_batch_one_random_turn_per_agent():
    workload = agentic_workload("agentic-64k", agents=500, seed=0)
    batch = sample_batch(workload, 256, seed=5)
    assert len(batch.requests) == 256 and len({r.agent for r in batch.requests}) == 256
    assert all(r.arrival_s == 0.0 for r in batch.requests)
    assert len({r.turn for r in batch.requests}) > 50  # turns are spread, not all first turns
    originals = {r.id: r for r in workload.requests}
    assert all(originals[r.id].hit_tokens == r.hit_tokens for r in batch.requests)
    assert sample_batch(workload, 256, seed=5) == batch
    assert sample_batch(workload, 256, seed=6) != batch


def test_batch_past_the_trace_resamples():
    workload = agentic_workload("agentic-32k", agents=500, seed=0)
    batch = sample_batch(workload, 800, seed=1)
    assert len({r.agent for r in batch.requests}) == 800


def test_batch_of_a_trace_takes_its_first_requests(mooncake_trace):
    trace = mooncake_trace
    batch = sample_batch(trace, 100)
    assert [r.id for r in batch.requests] == [r.id for r in trace.requests[:100]]
    with pytest.raises(SpecError):
        sample_batch(trace, 5000)


def test_batch_rejects_bad_size():
    workload = from_trajectories("w", [Trajectory(0, (Turn(1, 1),))])
    with pytest.raises(SpecError):
        sample_batch(workload, 0)
