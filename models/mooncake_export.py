"""Export a workload as a Mooncake trace with Dynamo's session fields (`dualpath workload --mooncake F`).

One line per request: `session_id` (one per agent), `request_id`, `input_length`, `output_length` and
`hash_ids`. An agent's first turn carries `timestamp` (ms); a later turn carries `wait_for` (the previous
turn) and `delay` 0 ms for trajectories (the paper's zero tool latency: a turn starts when the previous
one ends), or its own `timestamp` for a trace's requests. `python -m dynamo.replay` reads `session_id`
and `delay` (`wait_for` as its agentic rows do); `load_mooncake` reads all of them back.

`hash_ids`: an agent's context is one token sequence, so its full `block_tokens` blocks keep one id
across turns (the shared prefix a replay's cache can hit) while a partial last block gets a fresh id
(its content changes when the next turn fills it). Agents share no ids, as the generators share no
prefixes. Lines go agent by agent (a session's turns in order), the order the importer numbers
agents in. Trajectories round-trip exactly (`load_mooncake` rebuilds the turns); a trace's requests
keep their lengths, order and arrivals, and their hits as far as an agent's own earlier prompts and
persisted context explain them (our requests hold a hit count, not the blocks behind it).
"""

from __future__ import annotations

import itertools
from pathlib import Path

from dualpath.errors import SpecError
from dualpath.models.jsonl import write_rows
from dualpath.models.mooncake import MOONCAKE_BLOCK_TOKENS
from dualpath.request import Workload, by_agent


def _ms(seconds: float) -> float | int:
    ms = seconds * 1000.0
    return int(ms) if ms.is_integer() else ms  # Mooncake's own traces write whole milliseconds


class _Blocks:
    """Block ids of each agent's token sequence: full blocks stable per position, partial ones fresh."""

    def __init__(self, block_tokens: int):
        self.block_tokens = block_tokens
        self.next_id = itertools.count()
        self.full: dict[int, list[int]] = {}

    def ids(self, agent: int, prompt_tokens: int) -> list[int]:
        stable = self.full.setdefault(agent, [])
        whole, partial = divmod(prompt_tokens, self.block_tokens)
        while len(stable) < whole:
            stable.append(next(self.next_id))
        return stable[:whole] + ([next(self.next_id)] if partial else [])


def mooncake_rows(workload: Workload, block_tokens: int = MOONCAKE_BLOCK_TOKENS) -> list[dict]:
    if isinstance(block_tokens, bool) or not isinstance(block_tokens, int) or block_tokens < 1:
        raise SpecError("--mooncake-block-tokens", "block_tokens", block_tokens, "an integer >= 1")
    blocks = _Blocks(block_tokens)
    rows: list[dict] = []
    if workload.trajectories:
        for traj in sorted(workload.trajectories, key=lambda t: t.agent):
            context = 0
            for turn, step in enumerate(traj.turns):
                prompt = context + step.append_tokens
                timing: dict[str, object] = {"timestamp": _ms(traj.start_s)} if turn == 0 else {
                    "wait_for": [f"a{traj.agent}t{turn - 1}"], "delay": 0}
                rows.append(_row(traj.agent, f"a{traj.agent}t{turn}", prompt, step.generate_tokens,
                                 blocks.ids(traj.agent, prompt), timing))
                context = prompt + step.generate_tokens
        return rows
    for chain in by_agent(workload.requests).values():  # by agent: the importer numbers agents as they appear
        for index, request in enumerate(chain):
            wait = {"wait_for": [chain[index - 1].id]} if index else {}
            at = {"timestamp": _ms(request.arrival_s), **wait}
            rows.append(_row(request.agent, request.id, request.prompt_tokens, request.output_tokens,
                             blocks.ids(request.agent, request.prompt_tokens), at))
    return rows


def _row(agent: int, request_id: str, prompt: int, output: int, ids: list[int], timing: dict) -> dict:
    return {"session_id": f"agent-{agent}", "request_id": request_id, **timing, "input_length": prompt,
            "output_length": output, "hash_ids": ids}


def write_mooncake(workload: Workload, path: str | Path, block_tokens: int = MOONCAKE_BLOCK_TOKENS) -> int:
    """Write the trace atomically; returns the number of lines."""
    rows = mooncake_rows(workload, block_tokens)
    write_rows(path, rows, separators=(", ", ": "))  # Mooncake's own files are spaced like this
    return len(rows)
