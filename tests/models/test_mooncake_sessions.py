"""Mooncake traces with Dynamo's session fields: export of our workloads, import back, agentic rows."""

import json

import pytest

from dualpath.cli import main
from dualpath.errors import InputError, SpecError
from dualpath.models.generators import agentic_workload
from dualpath.models.mooncake import load_mooncake
from dualpath.models.mooncake_export import mooncake_rows, write_mooncake
from dualpath.models.registry import resolve_workload
from dualpath.models.workloads import from_requests
from tests.paths import EXAMPLES


def _write(tmp_path, rows):
    path = tmp_path / "t.jsonl"
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


@pytest.mark.parametrize("aps", [None, 2.0])
def test_trajectories_round_trip(tmp_path, aps):
    workload = agentic_workload("agentic-32k", agents=6, seed=1, aps=aps)
    path = tmp_path / "w.jsonl"
    assert write_mooncake(workload, path) == len(workload.requests)
    back = resolve_workload(str(path))
    assert back.trajectories == workload.trajectories and back.requests == workload.requests


def test_exported_rows_share_each_agents_prefix():
    workload = agentic_workload("agentic-32k", agents=2, seed=0)
    rows = mooncake_rows(workload, block_tokens=512)
    first, second = rows[0], rows[1]
    assert first["session_id"] == second["session_id"] == "agent-0" and first["timestamp"] == 0
    assert second["wait_for"] == [first["request_id"]] and second["delay"] == 0
    full = first["input_length"] // 512
    assert second["hash_ids"][:full] == first["hash_ids"][:full]
    assert all(len(r["hash_ids"]) == -(-r["input_length"] // 512) for r in rows)
    other = [r for r in rows if r["session_id"] == "agent-1"]
    assert not set(other[0]["hash_ids"]) & {i for r in rows if r["session_id"] == "agent-0" for i in r["hash_ids"]}


@pytest.mark.parametrize("block_tokens", [64, 512])
def test_requests_round_trip(tmp_path, block_tokens):
    trace = from_requests("x", list(agentic_workload("agentic-32k", agents=4, seed=2).requests))
    path = tmp_path / "r.jsonl"
    write_mooncake(trace, path, block_tokens=block_tokens)
    back = load_mooncake(path, name="x", block_tokens=block_tokens)
    assert back.requests == trace.requests


def test_cli_writes_mooncake(capsys, tmp_path):
    path = tmp_path / "m.jsonl"
    assert main(["workload", "--workload", "agentic-48k", "--agents", "3", "--mooncake", str(path)]) == 0
    assert "wrote" in capsys.readouterr().out
    assert main(["workload", "--workload", str(path), "--mooncake-block-tokens", "512"]) == 0
    assert "3 agents" in capsys.readouterr().out


def test_dynamo_sessions_with_delays_keep_trace_hits(tmp_path):
    rows = [
        {"session_id": "a", "timestamp": 1000, "input_length": 1100, "output_length": 50, "hash_ids": [1, 2, 3]},
        {"session_id": "b", "created_time": 1500, "input_tokens": 600, "output_tokens": 5, "hash_ids": [1, 9]},
        {"session_id": "a", "delay_ms": 250, "input_length": 1400, "output_length": 20, "hash_ids": [1, 2, 4]},
        {"session_id": "b", "timestamp": 4000, "input_length": 700, "output_length": 5, "hash_ids": [7, 8]},
    ]
    workload = load_mooncake(_write(tmp_path, rows))
    assert workload.trajectories == ()  # delays: keep the trace's requests
    got = {(r.agent, r.turn): (r.hit_tokens, r.arrival_s) for r in workload.requests}
    # a's second turn continues the first: the 1,150-token context's two full blocks were persisted
    assert got == {(0, 0): (0, 1.0), (1, 0): (512, 1.5), (0, 1): (1024, 1.25), (1, 1): (0, 4.0)}


def test_agentic_rows_chain_by_wait_for(tmp_path):
    rows = [
        {"request_id": "x", "timestamp": 0, "input_length": 600, "output_length": 10, "hash_ids": [1, 2]},
        {"request_id": "y", "wait_for": ["x"], "delay": 0, "tool_wait_ms": 0, "input_length": 700,
         "output_length": 10, "hash_ids": [1, 3]},
    ]
    workload = load_mooncake(_write(tmp_path, rows))
    assert len(workload.trajectories) == 1 and [t.append_tokens for t in workload.trajectories[0].turns] == [600, 90]


def test_dynamo_v2_header_and_dependencies(tmp_path):
    rows = [
        {"schema": "dynamo.agentic_mooncake", "version": 2, "block_size": 64, "hash_id_scope": "local"},
        {"request_id": "x", "session_id": "s", "not_before_ms": 500.0, "input_length": 100, "output_length": 10,
         "hash_ids": [1, 2]},
        {"request_id": "y", "session_id": "s", "not_before_ms": 0.0, "input_length": 150, "output_length": 10,
         "hash_ids": [1, 5, 6], "dependencies": [{"request_id": "x", "trigger": "completion", "delay_ms": 30.0,
                                                  "relation": "sequence"}]},
    ]
    path = _write(tmp_path, rows)
    workload = resolve_workload(str(path))
    assert [(r.hit_tokens, r.arrival_s) for r in workload.requests] == [(0, 0.5), (64, 0.53)]


@pytest.mark.parametrize("bad,message", [
    ({"session_id": "a", "wait_for": ["zz"], "delay": 0, "input_length": 10, "output_length": 1, "hash_ids": [3]},
     "wait_for = ['zz']"),
    ({"wait_for": ["nope"], "delay": 0, "input_length": 10, "output_length": 1, "hash_ids": [3]}, "names no earlier"),
    ({"session_id": "b", "input_length": 10, "output_length": 1, "hash_ids": [3]}, "missing field 'timestamp'"),
    ({"session_id": "a", "input_length": 10, "output_length": 1, "hash_ids": [3]}, "'delay' or 'timestamp'"),
    ({"session_id": "a", "request_id": "r0", "delay": 1, "input_length": 10, "output_length": 1, "hash_ids": [3]},
     "duplicate request_id"),
    ({"session_id": "a", "delay": -1, "input_length": 10, "output_length": 1, "hash_ids": [3]}, "delay = -1"),
])
def test_bad_session_rows_name_their_line(tmp_path, bad, message):
    good = {"session_id": "a", "request_id": "r0", "timestamp": 0, "input_length": 10, "output_length": 1,
            "hash_ids": [7]}
    path = _write(tmp_path, [good, "", bad])
    with pytest.raises((InputError, SpecError)) as info:  # a bad field is a SpecError, a bad line an InputError
        load_mooncake(path)
    assert info.value.line == 3 and message in str(info.value)


def test_flat_bundled_trace_is_unchanged():
    assert load_mooncake(EXAMPLES / "traces" / "mooncake_synthetic_trace.jsonl", limit=5).trajectories == ()


def test_example_session_trace():
    workload = resolve_workload(str(EXAMPLES / "traces" / "agentic_sessions.jsonl"))
    got = {r.id: (r.agent, r.turn, r.hit_tokens, r.arrival_s) for r in workload.requests}
    assert got["c1t1"] == (0, 1, 1536, 0.35)  # the 1,920-token context's 3 full blocks; 350 ms delay
    assert got["c2t0"][2] == 1024  # shares the system prompt's 2 blocks with coder-1
    assert got["c2t1"][3] == pytest.approx(1.6)  # delay 0 + tool_wait_ms 1200 after 400 ms
