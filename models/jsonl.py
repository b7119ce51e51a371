"""Our JSONL workload format: one JSON object per line, agents' trajectories or a trace's requests.

    {"dualpath_workload": 1, "name": "agentic-64k", "block_tokens": 64}     optional header, first line
    {"agent": 0, "start_s": 0.0, "turns": [[9800, 130], [312, 95]]}          a trajectory: [append, generate]
    {"id": "r7", "agent": 7, "turn": 0, "hit_tokens": 1024, "new_tokens": 300,
     "output_tokens": 20, "arrival_s": 1.25}                                 a request (one line in the file)

A file holds trajectories or requests, not both. Trajectories: `turns` is required; `agent` defaults
to the line's index among records and `start_s` to 0; each turn's request is derived as in
`dualpath.request.requests_of` with the header's `block_tokens` (default 64). Requests: the three token
counts are required; `agent` defaults to the record index, `turn` to 0, `arrival_s` to 0 and `id` to
`a{agent}t{turn}`. Blank lines are skipped. examples/workloads/README.md documents the same format.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from dualpath import validate
from dualpath.errors import InputError, SpecError, shown
from dualpath.jsonio import parse_json, write_text_atomic
from dualpath.kvlayout import PAPER_BLOCK_TOKENS
from dualpath.limits import MAX_SECONDS, MAX_TOKENS, MAX_TRACE_RECORDS
from dualpath.models.workloads import from_requests, from_trajectories
from dualpath.request import MAX_AGENT_ID, Request, Trajectory, Turn, Workload
from dualpath.validate import integer, read_lines

FORMAT_VERSION = 1
_HEADER_KEYS = {"dualpath_workload", "name", "block_tokens"}
_TRAJECTORY_KEYS = {"agent", "start_s", "turns"}
_REQUEST_KEYS = {"id", "agent", "turn", "hit_tokens", "new_tokens", "output_tokens", "arrival_s"}


def _int(source, line, row, key, minimum, default=None, maximum=MAX_TOKENS):
    return integer(source, key, row.get(key, default), minimum, maximum, line,
                   "MAX_TOKENS" if maximum == MAX_TOKENS else None)


def _seconds(source, line, row, key):
    return validate.number(source, key, row.get(key, 0.0), 0, MAX_SECONDS, line=line, cap="MAX_SECONDS")


def _check_keys(source, line, row, allowed):
    for key in row:
        if key not in allowed:
            raise SpecError(source, key, row[key], "one of the keys " + ", ".join(sorted(allowed)), line)


def _trajectory(source: str, line: int, row: dict, index: int) -> Trajectory:
    _check_keys(source, line, row, _TRAJECTORY_KEYS)
    turns = row["turns"]
    if not isinstance(turns, list) or not turns:
        raise SpecError(source, "turns", turns, "a non-empty list of [append_tokens, generate_tokens]", line)
    out = []
    for t, pair in enumerate(turns):
        ok = isinstance(pair, list) and len(pair) == 2
        ok = ok and all(isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= MAX_TOKENS for v in pair)
        if not ok:
            raise SpecError(source, f"turns[{t}]", pair, "[append_tokens, generate_tokens], integers >= 1", line)
        out.append(Turn(pair[0], pair[1]))
    return Trajectory(_int(source, line, row, "agent", 0, index, MAX_AGENT_ID), tuple(out),
                      _seconds(source, line, row, "start_s"))


def _request(source: str, line: int, row: dict, index: int) -> Request:
    _check_keys(source, line, row, _REQUEST_KEYS)
    for key in ("hit_tokens", "new_tokens", "output_tokens"):
        if key not in row:
            raise SpecError(source, key, None, "an integer (required in a request record)", line)
    agent = _int(source, line, row, "agent", 0, index, MAX_AGENT_ID)
    turn = _int(source, line, row, "turn", 0, 0, MAX_TRACE_RECORDS)
    rid = row.get("id", f"a{agent}t{turn}")
    if not isinstance(rid, str) or not rid:
        raise SpecError(source, "id", rid, "a non-empty string", line)
    return Request(rid, agent, turn, _int(source, line, row, "hit_tokens", 0), _int(source, line, row, "new_tokens", 1),
                   _int(source, line, row, "output_tokens", 1), _seconds(source, line, row, "arrival_s"))


def jsonl_rows(path: str | Path) -> Iterator[tuple[int, dict]]:
    """(line number, object) for each non-blank line; errors name the file and the line.

    The file is opened now (a missing or special file fails here) and streamed: each line is read and
    parsed as it is reached, so a caller that stops early never reads, nor rejects, the lines after.
    Lines are bounded by `MAX_LINE_BYTES`, records by `MAX_TRACE_RECORDS`.
    """
    return _parsed(str(path), read_lines(path))


def _parsed(source: str, lines: Iterator[tuple[int, str]]) -> Iterator[tuple[int, dict]]:
    records = 0
    for number, text in lines:
        if not text.strip():
            continue
        records += 1
        if records > MAX_TRACE_RECORDS:
            raise InputError(source, f"more than {MAX_TRACE_RECORDS:,} records "
                                     "(dualpath.limits.MAX_TRACE_RECORDS)", number)
        row = parse_json(source, text, number)
        if not isinstance(row, dict):
            raise InputError(source, f"expected a JSON object, found {type(row).__name__}", number)
        yield number, row


def read_jsonl(path: str | Path, name: str | None = None) -> Workload:
    source = str(path)
    header: dict = {}
    trajectories: list[Trajectory] = []
    requests: list[Request] = []
    seen: dict[object, int] = {}
    num_turns = 0
    for number, row in jsonl_rows(path):
        if "dualpath_workload" in row:
            if header or trajectories or requests:
                raise InputError(source, "the header must be the first line", number)
            _check_keys(source, number, row, _HEADER_KEYS)
            if row["dualpath_workload"] != FORMAT_VERSION or isinstance(row["dualpath_workload"], bool):
                raise SpecError(source, "dualpath_workload", row["dualpath_workload"], f"{FORMAT_VERSION}", number)
            _int(source, number, row, "block_tokens", 1, PAPER_BLOCK_TOKENS)
            if not isinstance(row.get("name", "-"), str) or not row.get("name", "-"):
                raise SpecError(source, "name", row["name"], "a non-empty string", number)
            header = row
            continue
        is_trajectory = "turns" in row
        if (trajectories and not is_trajectory) or (requests and is_trajectory):
            raise InputError(source, "a file holds trajectories or requests, not both", number)
        key: object
        if is_trajectory:
            trajectory = _trajectory(source, number, row, len(trajectories))
            key = trajectory.agent
            trajectories.append(trajectory)
            num_turns += len(trajectory.turns)
            if num_turns > MAX_TRACE_RECORDS:  # one request per turn: bound them as the records are
                raise InputError(source, f"more than {MAX_TRACE_RECORDS:,} turns in all "
                                         "(dualpath.limits.MAX_TRACE_RECORDS)", number)
        else:
            request = _request(source, number, row, len(requests))
            key = request.id
            requests.append(request)
        if key in seen:
            raise InputError(source, f"duplicate {'agent' if is_trajectory else 'id'} {shown(key)} "
                                     f"(first on line {seen[key]})", number)
        seen[key] = number
    if not trajectories and not requests:
        raise InputError(source, "no trajectories or requests in the file")
    name = name or header.get("name") or Path(path).stem
    if trajectories:
        return from_trajectories(name, trajectories, header.get("block_tokens", PAPER_BLOCK_TOKENS))
    return from_requests(name, requests)


def write_jsonl(workload: Workload, path: str | Path, block_tokens: int = PAPER_BLOCK_TOKENS) -> None:
    """Trajectories when the workload has them (requests follow from them), else its requests."""
    lines = [{"dualpath_workload": FORMAT_VERSION, "name": workload.name, "block_tokens": block_tokens}]
    if workload.trajectories:
        lines += [{"agent": t.agent, "start_s": t.start_s,
                   "turns": [[turn.append_tokens, turn.generate_tokens] for turn in t.turns]}
                  for t in workload.trajectories]
    else:
        lines += [{"id": r.id, "agent": r.agent, "turn": r.turn, "hit_tokens": r.hit_tokens,
                   "new_tokens": r.new_tokens, "output_tokens": r.output_tokens, "arrival_s": r.arrival_s}
                  for r in workload.requests]
    write_rows(path, lines)


def write_rows(path: str | Path, rows: list[dict[str, Any]], separators: tuple[str, str] = (",", ":")) -> None:
    """One JSON object per line, written atomically (a crash leaves the old file or none, never a torn one)."""
    write_text_atomic(path, "".join(json.dumps(row, separators=separators) + "\n" for row in rows))
