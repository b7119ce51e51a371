"""Our JSONL workload format: round trips for both record kinds, and errors at their line."""

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dualpath.errors import InputError, SpecError
from dualpath.models.jsonl import read_jsonl, write_jsonl
from dualpath.models.mooncake import load_mooncake
from dualpath.models.workloads import from_trajectories
from dualpath.request import Trajectory, Turn
from tests.paths import MOONCAKE_TRACE

TRACE = MOONCAKE_TRACE

turns = st.lists(st.tuples(st.integers(1, 5000), st.integers(1, 500)), min_size=1, max_size=8)
trajectories = st.lists(st.tuples(turns, st.floats(0, 1e4, allow_nan=False)), min_size=1, max_size=6)


@settings(max_examples=30, deadline=None)
@given(trajectories, st.sampled_from([16, 64, 512]))
def test_trajectory_round_trip(tmp_path_factory, spec, block_tokens):
    trajs = [Trajectory(i, tuple(Turn(a, g) for a, g in ts), start) for i, (ts, start) in enumerate(spec)]
    workload = from_trajectories("w", trajs, block_tokens)
    path = tmp_path_factory.mktemp("rt") / "w.jsonl"
    write_jsonl(workload, path, block_tokens)
    back = read_jsonl(path)
    assert back == workload


def test_request_round_trip(tmp_path):
    workload = load_mooncake(TRACE, limit=200)
    path = tmp_path / "r.jsonl"
    write_jsonl(workload, path)
    assert read_jsonl(path) == workload


def test_defaults_of_a_minimal_file(tmp_path):
    path = tmp_path / "mini.jsonl"
    path.write_text('{"turns": [[100, 10], [20, 5]]}\n\n{"turns": [[70, 3]], "start_s": 2}\n')
    workload = read_jsonl(path)
    assert workload.name == "mini"
    assert [t.agent for t in workload.trajectories] == [0, 1]
    # agent 0, turn 1: previous context 110 tokens -> 64 hit (block 64), 46 + 20 new
    second = next(r for r in workload.requests if r.agent == 0 and r.turn == 1)
    assert (second.hit_tokens, second.new_tokens) == (64, 66)
    assert workload.requests[-1].arrival_s == 2.0


def test_request_defaults(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_text('{"hit_tokens": 0, "new_tokens": 5, "output_tokens": 2}\n')
    (request,) = read_jsonl(path).requests
    assert (request.id, request.agent, request.turn, request.arrival_s) == ("a0t0", 0, 0, 0.0)


@pytest.mark.parametrize("lines,line,kind,text", [
    (['{"turns": [[1, 1]]}', '{"turns": [[1, 0]]}'], 2, SpecError, "turns[0]"),
    (['{"turns": [[1, 1]], "agnet": 3}'], 1, SpecError, "agnet"),
    (['{"turns": [[1, 1]]}', '{"hit_tokens": 0, "new_tokens": 1, "output_tokens": 1}'], 2, InputError, "not both"),
    (['{"turns": [[1, 1]]}', '{"turns": [[1, 1]], "agent": 0}'], 2, InputError, "duplicate agent 0"),
    (['{"hit_tokens": -1, "new_tokens": 1, "output_tokens": 1}'], 1, SpecError, "hit_tokens"),
    (['{"hit_tokens": 0, "output_tokens": 1}'], 1, SpecError, "new_tokens"),
    (['{"turns": [[1, 1]]', ""], 1, InputError, "invalid JSON"),
    (['{"turns": [[1, 1]]}', '{"dualpath_workload": 1}'], 2, InputError, "first line"),
    (['{"dualpath_workload": 2}', '{"turns": [[1, 1]]}'], 1, SpecError, "dualpath_workload"),
    (['{"turns": [[1, 1]], "start_s": -1}'], 1, SpecError, "start_s"),
])
def test_errors_name_file_and_line(tmp_path, lines, line, kind, text):
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(kind) as info:
        read_jsonl(path)
    assert info.value.line == line and info.value.source == str(path)
    assert text in str(info.value)


def test_empty_file(tmp_path):
    path = tmp_path / "empty.jsonl"
    path.write_text("\n")
    with pytest.raises(InputError):
        read_jsonl(path)


def test_written_file_is_plain_jsonl(tmp_path):
    workload = from_trajectories("x", [Trajectory(0, (Turn(3, 4),))])
    path = tmp_path / "x.jsonl"
    write_jsonl(workload, path)
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert rows == [{"dualpath_workload": 1, "name": "x", "block_tokens": 64},
                    {"agent": 0, "start_s": 0.0, "turns": [[3, 4]]}]
