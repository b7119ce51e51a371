"""Mooncake trace importer: the FAST'25 release and the session/agentic form NVIDIA Dynamo's replay reads.

One JSON object per line: `timestamp` (ms from the start), `input_length` and `output_length`
(tokens), `hash_ids` (the prompt's 512-token blocks; requests sharing a prefix share leading ids).
Dynamo's aliases are accepted (`created_time`, `input_tokens`, `output_tokens`, `delay_ms`).

Flat traces (no `session_id`, no `wait_for`): each request is its own agent at turn 0; its hit is the
longest run of leading ids that earlier lines already produced, found with the core `PrefixTrie`, capped
at the prompt less one token (a prompt that is all hit still computes its last token). Chains are not
inferred: on the bundled synthetic trace only 758 of 3,993 requests extend an earlier prompt's full
blocks, parents branch up to 8 ways, and the growth does not match prompt + output + a new message.

Sessions (`models/mooncake_sessions.py`): rows sharing a `session_id`, or chained by `wait_for`, are one
agent's turns in file order; the first needs `timestamp`, later ones a `delay` (+ `tool_wait_ms`) or a
later `timestamp`. A Dynamo v2 header line (`"schema": "dynamo.agentic_mooncake"`) sets the block size;
its rows' `not_before_ms` and `dependencies` read as `timestamp` and `wait_for` + `delay`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from dualpath.errors import InputError, SpecError
from dualpath.jsonio import parse_json
from dualpath.kvlayout import PAPER_BLOCK_TOKENS, PrefixTrie
from dualpath.limits import MAX_SECONDS, MAX_TOKENS
from dualpath.models.jsonl import jsonl_rows
from dualpath.models.workloads import from_requests
from dualpath.request import Request, Workload
from dualpath.validate import integer, number

MOONCAKE_BLOCK_TOKENS = 512
MAX_BLOCK_TOKENS = 1 << 20  # a trace's tokens per hash id
MAX_MS = MAX_SECONDS * 1000  # timestamps and delays: an arrival at most MAX_SECONDS after the start
MAX_ID = 2**53 - 1  # hash ids and integer session ids: what a JSON number carries exactly (RFC 8259)
AGENTIC_SCHEMA = "dynamo.agentic_mooncake"
_ALIASES = {"created_time": "timestamp", "not_before_ms": "timestamp", "input_tokens": "input_length",
            "output_tokens": "output_length", "delay_ms": "delay"}


@dataclass(frozen=True)
class MooncakeRow:
    """One trace line, checked; `delay_ms` is `delay` + `tool_wait_ms` (None when neither is given)."""

    line: int
    input_tokens: int
    output_tokens: int
    hash_ids: tuple[int, ...]
    timestamp_ms: float | None = None
    delay_ms: float | None = None
    session: str | None = None
    request_id: str | None = None
    wait_for: tuple[str, ...] = ()


def _int_field(source: str, line: int, row: dict, key: str, minimum: int) -> int:
    if key not in row:
        raise InputError(source, f"missing field {key!r}", line)
    return integer(source, key, row[key], minimum, MAX_TOKENS, line, cap="MAX_TOKENS")


def _ms(source: str, line: int, row: dict, key: str) -> float | None:
    value = row.get(key)
    return None if value is None else number(source, key, value, 0, MAX_MS, line=line)


def _text(source: str, line: int, value: object, key: str) -> str | None:
    if value is None or (isinstance(value, int) and not isinstance(value, bool)):
        # integer session ids are common in hand-made traces; a huge one would not even print
        return None if value is None else str(integer(source, key, value, -MAX_ID, MAX_ID, line))
    if not isinstance(value, str) or not value:
        raise SpecError(source, key, value, "a non-empty string", line)
    return value


def parse_row(source: str, line: int, raw: dict, block_tokens: int = MOONCAKE_BLOCK_TOKENS) -> MooncakeRow:
    row = {_ALIASES.get(k, k): v for k, v in raw.items()}
    waits: list = row.get("wait_for") or []
    delay = _ms(source, line, row, "delay")
    deps = row.get("dependencies") or []
    if deps:  # Dynamo v2: [{"request_id", "trigger", "delay_ms", "relation"}]
        if not isinstance(deps, list) or not all(isinstance(d, dict) and "request_id" in d for d in deps):
            raise SpecError(source, "dependencies", deps, "a list of {request_id, ...}", line)
        waits = [d["request_id"] for d in deps]
        delay = max(_ms(source, line, d, "delay_ms") or 0.0 for d in deps)
    if not isinstance(waits, list):
        raise SpecError(source, "wait_for", waits, "a list of request ids", line)
    tool_wait = _ms(source, line, row, "tool_wait_ms")
    if tool_wait is not None:
        delay = (delay or 0.0) + tool_wait
    input_tokens = _int_field(source, line, row, "input_length", 1)
    output_tokens = _int_field(source, line, row, "output_length", 1)
    ids = row.get("hash_ids")
    needed = -(-input_tokens // block_tokens)
    if not isinstance(ids, list) or not all(isinstance(i, int) and not isinstance(i, bool) and abs(i) <= MAX_ID
                                            for i in ids):
        raise SpecError(source, "hash_ids", ids, f"a list of integers within ±{MAX_ID:,}", line)
    if len(ids) != needed:
        raise InputError(source, f"hash_ids has {len(ids)} ids: expected {needed}, one per "
                                 f"{block_tokens}-token block of input_length {input_tokens}", line)
    return MooncakeRow(line, input_tokens, output_tokens, tuple(ids), _ms(source, line, row, "timestamp"), delay,
                       _text(source, line, row.get("session_id"), "session_id"),
                       _text(source, line, row.get("request_id"), "request_id"),
                       tuple(_text(source, line, w, "wait_for") or "" for w in waits))


def looks_like_mooncake(first_line: str) -> bool:
    """True when a JSONL line is a Mooncake record (has `hash_ids` and a length) or Dynamo's v2 header."""
    try:
        row = parse_json("first line", first_line)
    except InputError:
        return False
    if not isinstance(row, dict):
        return False
    return row.get("schema") == AGENTIC_SCHEMA or (
        "hash_ids" in row and ("input_length" in row or "input_tokens" in row))


def read_rows(path: str | Path, limit: int | None = None,
              block_tokens: int | None = None) -> tuple[list[MooncakeRow], int]:
    """The checked rows (the first `limit`) and the block size (a v2 header's, else 512)."""
    source = str(path)
    lines = jsonl_rows(path)
    rows: list[MooncakeRow] = []
    size = block_tokens or MOONCAKE_BLOCK_TOKENS
    for line_number, raw in lines:
        if "schema" in raw and not rows:
            if raw["schema"] != AGENTIC_SCHEMA:
                raise SpecError(source, "schema", raw["schema"], repr(AGENTIC_SCHEMA), line_number)
            size = block_tokens or integer(source, "block_size", raw.get("block_size", size), 1, MAX_BLOCK_TOKENS,
                                           line_number)
            continue
        if limit is not None and len(rows) >= limit:
            break
        rows.append(parse_row(source, line_number, raw, size))
    if not rows:
        raise InputError(source, "no requests in the trace")
    return rows, size


def load_mooncake(path: str | Path, name: str | None = None, limit: int | None = None,
                  block_tokens: int | None = None, workload_block_tokens: int = PAPER_BLOCK_TOKENS) -> Workload:
    """A Mooncake trace as a workload (`limit`: its first N requests). `block_tokens`: the trace's block
    size (default: a v2 header's, else 512); `workload_block_tokens`: ours, for hits of trajectories."""
    from dualpath.models.mooncake_sessions import session_workload

    source = str(path)
    rows, size = read_rows(path, None if limit is None else max(limit, 1), block_tokens)
    rows = rows[:limit] if limit is not None else rows
    name = name or Path(path).stem
    if any(row.session is not None or row.wait_for for row in rows):
        return session_workload(source, name, rows, size, workload_block_tokens)
    trie = PrefixTrie()
    requests: list[Request] = []
    last_ms: float = 0
    for index, row in enumerate(rows):
        timestamp = row.timestamp_ms
        if timestamp is None or timestamp < last_ms:
            raise SpecError(source, "timestamp", timestamp, f"milliseconds >= {last_ms:g} (the previous request's)",
                            row.line)
        last_ms = timestamp
        # A full hit still recomputes the last token, as serving engines do, to get its logits.
        hit = min(trie.hit_tokens(row.hash_ids, row.input_tokens, size), row.input_tokens - 1)
        trie.insert(row.hash_ids)
        requests.append(Request(f"r{index}", index, 0, hit, row.input_tokens - hit, row.output_tokens,
                                timestamp / 1000.0))
    if not requests:
        raise InputError(source, "no requests in the trace")
    return from_requests(name, requests)
