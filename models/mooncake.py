"""Mooncake trace importer (kvcache-ai/Mooncake, FAST'25 trace release).

One JSON object per line: `timestamp` (ms from the start), `input_length` and `output_length`
(tokens), `hash_ids` (the prompt's 512-token blocks; requests sharing a prefix share leading ids).
A request's hit is the longest run of leading ids that earlier requests already produced, found with
the core `PrefixTrie`; the last block may be partial, so the hit is capped at the prompt (less one
token: a prompt that is all hit still computes its last token).

Each request becomes its own agent at turn 0. Chains are not inferred: on the bundled synthetic
trace only 758 of 3,993 requests extend an earlier prompt's full blocks, parents branch up to 8 ways,
and the growth does not match prompt + output + a new message, so the shared prefixes are common
documents, not conversation turns.
"""

from __future__ import annotations

import json
from itertools import islice
from pathlib import Path

from dualpath.errors import InputError
from dualpath.kvlayout import PrefixTrie
from dualpath.models.jsonl import jsonl_rows
from dualpath.models.workloads import from_requests
from dualpath.request import Request, Workload

MOONCAKE_BLOCK_TOKENS = 512


def _int_field(source: str, line: int, row: dict, key: str, minimum: int) -> int:
    if key not in row:
        raise InputError(source, f"missing field {key!r}", line)
    value = row[key]
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise InputError(source, f"{key} = {value!r}: expected an integer >= {minimum}", line)
    return value


def looks_like_mooncake(first_line: str) -> bool:
    """True when a JSONL line is a Mooncake record (has `hash_ids`)."""
    try:
        row = json.loads(first_line)
    except json.JSONDecodeError:
        return False
    return isinstance(row, dict) and "hash_ids" in row and "input_length" in row


def load_mooncake(path: str | Path, name: str | None = None, limit: int | None = None,
                  block_tokens: int = MOONCAKE_BLOCK_TOKENS) -> Workload:
    """Requests of a Mooncake trace, in file order, with hits from the prefix trie (`limit`: first N)."""
    source = str(path)
    rows = jsonl_rows(path)
    trie = PrefixTrie()
    requests: list[Request] = []
    last_ms: float = 0
    # Each row becomes one request (or an error), so the first `limit` rows are the first `limit` requests.
    for number, row in islice(rows, None if limit is None else max(limit, 0)):
        timestamp = row.get("timestamp")
        if isinstance(timestamp, bool) or not isinstance(timestamp, (int, float)) or timestamp < last_ms:
            raise InputError(source, f"timestamp = {timestamp!r}: expected milliseconds >= {last_ms} "
                                     "(the previous request's)", number)
        last_ms = timestamp
        input_tokens = _int_field(source, number, row, "input_length", 1)
        output_tokens = _int_field(source, number, row, "output_length", 1)
        ids = row.get("hash_ids")
        needed = -(-input_tokens // block_tokens)
        if not isinstance(ids, list) or not all(isinstance(i, int) and not isinstance(i, bool) for i in ids):
            raise InputError(source, f"hash_ids = {ids!r:.60}: expected a list of integers", number)
        if len(ids) != needed:
            raise InputError(source, f"hash_ids has {len(ids)} ids: expected {needed}, one per "
                                     f"{block_tokens}-token block of input_length {input_tokens}", number)
        # A full hit still recomputes the last token, as serving engines do, to get its logits.
        hit = min(trie.hit_tokens(ids, input_tokens, block_tokens), input_tokens - 1)
        trie.insert(ids)
        index = len(requests)
        requests.append(Request(f"r{index}", index, 0, hit, input_tokens - hit, output_tokens,
                                timestamp / 1000.0))
    if not requests:
        raise InputError(source, "no requests in the trace")
    return from_requests(name or Path(path).stem, requests)
