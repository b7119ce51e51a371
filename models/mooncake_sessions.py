"""Session traces (Dynamo's multi-turn and agentic Mooncake rows) as agents: one session, one agent.

A session's rows are its turns in file order: rows sharing a `session_id`, or a row without one whose
`wait_for` names the last request of a chain. `wait_for` may name only the previous turn: our agents
are chains (the paper's model), so branches and joins are refused at their line.

Timing, as Dynamo reads it: the first turn opens at `timestamp`; a later turn waits `delay`
(+ `tool_wait_ms`) after the previous turn, or gives a later absolute `timestamp`. Our requests carry
one arrival time and the simulator starts a turn at max(previous turn done, arrival), so a delay
becomes the arrival previous arrival + delay: a lower bound on Dynamo's dispatch time.

Hits. A turn *continues* its session when its prompt holds the previous prompt and output
(input >= previous input + output) and starts with the previous prompt's full blocks. When every
later turn continues and waits 0 ms (the paper's zero tool latency), the sessions are trajectories:
turn t appends input_t - (input_{t-1} + output_{t-1}) tokens, and hits follow our block size as for the
generators. Otherwise the requests keep the trace's hits: leading blocks that earlier lines produced
(`PrefixTrie`), and for a continuing turn at least the previous context's complete blocks, which
decode persisted (design.md section 3).
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import pairwise

from dualpath.errors import InputError, shown
from dualpath.kvlayout import PrefixTrie
from dualpath.models.mooncake import MAX_MS, MooncakeRow
from dualpath.models.workloads import from_requests, from_trajectories
from dualpath.request import Request, Trajectory, Turn, Workload


def _chains(source: str, rows: Sequence[MooncakeRow]) -> list[list[MooncakeRow]]:
    chains: list[list[MooncakeRow]] = []
    by_session: dict[str, int] = {}
    by_request: dict[str, int] = {}
    for row in rows:
        if row.session is not None:
            index = by_session.get(row.session)
        elif row.wait_for:
            index = by_request.get(row.wait_for[0])
            if index is None:
                raise InputError(source, f"wait_for = {shown(list(row.wait_for))}: names no earlier request_id",
                                 row.line)
        else:
            index = None
        if index is None:
            index = len(chains)
            chains.append([])
            if row.session is not None:
                by_session[row.session] = index
        chain = chains[index]
        previous = chain[-1].request_id if chain else None
        if row.wait_for and (previous is None or row.wait_for != (previous,)):
            expected = f"[] or [{shown(previous)}], the previous turn" if previous else "[] (the session's first turn)"
            raise InputError(source, f"wait_for = {shown(list(row.wait_for))}: expected {expected}; agents are chains, "
                                     "branches and joins are not modelled", row.line)
        if row.request_id is not None:
            if row.request_id in by_request:
                raise InputError(source, f"duplicate request_id {shown(row.request_id)}", row.line)
            by_request[row.request_id] = index
        chain.append(row)
    return chains


def _arrivals_ms(source: str, chain: Sequence[MooncakeRow]) -> list[float]:
    first = chain[0]
    if first.timestamp_ms is None:
        raise InputError(source, "missing field 'timestamp' (a session's first turn opens at it)", first.line)
    out = [first.timestamp_ms]
    for row in chain[1:]:
        if row.delay_ms is not None:
            out.append(out[-1] + row.delay_ms)
            if out[-1] > MAX_MS:  # each delay is bounded; their sum must be too
                raise InputError(source, f"the turn arrives {out[-1] / 1000:.3g} s after the start: expected at most "
                                         f"{MAX_MS / 1000:g} s (dualpath.limits.MAX_SECONDS)", row.line)
        elif row.timestamp_ms is not None:
            if row.timestamp_ms < out[-1]:
                raise InputError(source, f"timestamp = {shown(row.timestamp_ms)}: expected milliseconds >= {out[-1]} "
                                         "(the session's previous turn)", row.line)
            out.append(row.timestamp_ms)
        else:
            raise InputError(source, "missing field 'delay' or 'timestamp' (a later turn needs one)", row.line)
    return out


def continues(previous: MooncakeRow, row: MooncakeRow, block_tokens: int) -> bool:
    """True when `row`'s prompt is `previous`'s prompt and output plus more, block ids agreeing."""
    full = previous.input_tokens // block_tokens
    return (row.input_tokens >= previous.input_tokens + previous.output_tokens
            and row.hash_ids[:full] == previous.hash_ids[:full])


def session_workload(source: str, name: str, rows: Sequence[MooncakeRow], block_tokens: int,
                     workload_block_tokens: int) -> Workload:
    chains = _chains(source, rows)
    arrivals = [_arrivals_ms(source, chain) for chain in chains]
    chained = all(continues(a, b, block_tokens) and times[i + 1] == times[0]
                  for chain, times in zip(chains, arrivals) for i, (a, b) in enumerate(pairwise(chain)))
    if chained:
        trajectories = []
        for agent, (chain, times) in enumerate(zip(chains, arrivals)):
            turns = [Turn(chain[0].input_tokens, chain[0].output_tokens)]
            turns += [Turn(b.input_tokens - a.input_tokens - a.output_tokens, b.output_tokens)
                      for a, b in pairwise(chain) if b.input_tokens > a.input_tokens + a.output_tokens]
            if len(turns) != len(chain):
                break  # a turn appending nothing cannot be a Turn (append >= 1): keep the trace's requests
            trajectories.append(Trajectory(agent, tuple(turns), times[0] / 1000.0))
        else:
            return from_trajectories(name, trajectories, workload_block_tokens)
    place = {id(row): (agent, turn) for agent, chain in enumerate(chains) for turn, row in enumerate(chain)}
    trie = PrefixTrie()
    requests = []
    for row in rows:  # file order: a hit counts blocks that earlier lines produced
        agent, turn = place[id(row)]
        hit = trie.hit_tokens(row.hash_ids, row.input_tokens, block_tokens)
        if turn and continues(previous := chains[agent][turn - 1], row, block_tokens):
            persisted = previous.input_tokens + previous.output_tokens
            hit = max(hit, persisted // block_tokens * block_tokens)
        hit = min(hit, row.input_tokens - 1)
        trie.insert(row.hash_ids)
        rid = row.request_id or f"s{agent}t{turn}"
        requests.append(Request(rid, agent, turn, hit, row.input_tokens - hit, row.output_tokens,
                                arrivals[agent][turn] / 1000.0))
    return from_requests(name, requests)
