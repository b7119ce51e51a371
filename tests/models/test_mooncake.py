"""Mooncake trace importer: the bundled trace's hit rate, prefix hits, malformed lines."""

import json

import pytest

from dualpath.errors import InputError, SpecError
from dualpath.models.mooncake import load_mooncake
from tests.paths import MOONCAKE_TRACE

TRACE = MOONCAKE_TRACE


def test_bundled_trace_hit_rate_and_means(mooncake_trace):
    workload = mooncake_trace
    stats = workload.stats()
    assert stats.num_requests == 3993 and stats.num_agents == 3993
    assert stats.hit_rate == pytest.approx(0.651, abs=0.005)  # measured: 65.12% of input tokens
    assert stats.context_mean == pytest.approx(15325.5, abs=1)  # mean input_length
    assert sum(r.output_tokens for r in workload.requests) / 3993 == pytest.approx(149.1, abs=0.1)
    assert workload.requests[-1].arrival_s == pytest.approx(1022.025)
    assert all(r.new_tokens >= 1 and r.turn == 0 for r in workload.requests)


def _write(tmp_path, rows):
    path = tmp_path / "t.jsonl"
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def test_hits_are_leading_blocks_seen_before(tmp_path):
    rows = [
        {"timestamp": 0, "input_length": 1100, "output_length": 5, "hash_ids": [1, 2, 3]},
        {"timestamp": 10, "input_length": 1300, "output_length": 5, "hash_ids": [1, 2, 4]},  # 2 blocks hit
        {"timestamp": 20, "input_length": 600, "output_length": 5, "hash_ids": [2, 5]},  # 2 is not leading
        {"timestamp": 30, "input_length": 700, "output_length": 5, "hash_ids": [1, 2]},  # partial last block
        {"timestamp": 30, "input_length": 1024, "output_length": 5, "hash_ids": [1, 2]},  # all hit: last recomputed
    ]
    hits = [r.hit_tokens for r in load_mooncake(_write(tmp_path, rows)).requests]
    assert hits == [0, 1024, 0, 700 - 1, 1024 - 1]


def test_limit(tmp_path):
    assert len(load_mooncake(TRACE, limit=10).requests) == 10


@pytest.mark.parametrize("bad,message", [
    ("{not json", "invalid JSON"),
    ("[1, 2]", "expected a JSON object"),
    ('{"timestamp": 5, "output_length": 1, "hash_ids": [9]}', "missing field 'input_length'"),
    ('{"timestamp": 5, "input_length": 0, "output_length": 1, "hash_ids": []}', "input_length = 0"),
    ('{"timestamp": 5, "input_length": 10, "output_length": 1, "hash_ids": [9, 10]}', "hash_ids has 2 ids"),
    ('{"timestamp": 5, "input_length": 10, "output_length": 1, "hash_ids": ["a"]}', "list of integers"),
    ('{"timestamp": 1, "input_length": 10, "output_length": 1, "hash_ids": [9]}', "timestamp = 1"),
    ('{"timestamp": 5, "input_length": 10, "output_length": -1, "hash_ids": [9]}', "output_length = -1"),
    ('{"timestamp": NaN, "input_length": 10, "output_length": 1, "hash_ids": [9]}', "timestamp = nan"),
    ('{"timestamp": 5, "input_length": 10, "output_length": 1, "hash_ids": [9223372036854775807]}', "hash_ids"),
    ('{"timestamp": 1e300, "input_length": 10, "output_length": 1, "hash_ids": [9]}', "timestamp = 1e+300"),
    ('{"timestamp": 5, "input_length": 10, "output_length": 1, "hash_ids": [9], "session_id": ' + "9" * 30 + "}",
     "session_id"),
])
def test_malformed_lines_name_file_and_line(tmp_path, bad, message):
    good = {"timestamp": 2, "input_length": 10, "output_length": 1, "hash_ids": [7]}
    path = _write(tmp_path, [good, "", bad])
    with pytest.raises((InputError, SpecError)) as info:  # a bad field is a SpecError, a bad line an InputError
        load_mooncake(path)
    assert info.value.line == 3 and info.value.source == str(path)
    assert message in str(info.value)


def test_empty_and_missing_files(tmp_path):
    with pytest.raises(InputError):
        load_mooncake(_write(tmp_path, [""]))
    with pytest.raises(InputError):
        load_mooncake(tmp_path / "missing.jsonl")
