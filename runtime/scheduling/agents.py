"""Agents: multi-turn trajectories driven end to end through a scheduler, offline or online.

Each agent is a thread running its trajectory's turns back to back (zero tool latency): turn t's
prompt is the previous turn's prompt, its generated tokens, and the turn's append (tokens drawn
from a seeded generator), so the previous context is in storage and the turn hits it. Offline all
agents start together; online each starts at its trajectory's `start_s` (Poisson arrivals).

`scale_workload` shrinks any workload to the tiny model's size (token counts divided, each agent's
early turns folded into one long first prompt), `verify_turns` checks every turn's output against a
full recompute with the same seeded model, and `runtime_trace` turns the agents' turns into a `Trace`
in the simulator's format (records, spans of reads, prefills and decodes, SNIC utilisation).
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from dualpath.cluster import ClusterSpec
from dualpath.errors import DualpathError, SpecError
from dualpath.request import Trajectory, Turn, Workload, by_agent, requests_of
from dualpath.runtime.scheduling.client import turn_record
from dualpath.runtime.scheduling.scheduler import EngineHandle, Scheduler, TurnOutcome
from dualpath.trace import Span, Trace


@dataclass(frozen=True)
class TurnLog:
    """One turn as an agent ran it: the prompt it sent and what came back (or why not)."""

    request: str
    agent: int
    turn: int
    prompt: tuple[int, ...]
    outcome: TurnOutcome | None = None
    error: str = ""


def scale_workload(workload: Workload, token_divisor: float, max_turns: int | None = None,
                   block_tokens: int = 64) -> Workload:
    """`workload` with token counts divided by `token_divisor` (at least 1 each) and, with `max_turns`,
    only each agent's last `max_turns` turns, the earlier ones folded into the first kept turn's
    append (the context it starts from, computed once), so contexts and hit rates stay representative."""
    if not token_divisor >= 1:
        raise SpecError("scale_workload", "token_divisor", token_divisor, "a number >= 1")
    if max_turns is not None and (not isinstance(max_turns, int) or max_turns < 1):
        raise SpecError("scale_workload", "max_turns", max_turns, "a positive integer or None")
    trajectories = []
    for traj in trajectories_of(workload):
        turns = [Turn(max(1, round(t.append_tokens / token_divisor)), max(1, round(t.generate_tokens / token_divisor)))
                 for t in traj.turns]
        if max_turns is not None and len(turns) > max_turns:
            earlier = sum(t.append_tokens + t.generate_tokens for t in turns[:-max_turns])
            turns = turns[-max_turns:]
            turns[0] = Turn(turns[0].append_tokens + earlier, turns[0].generate_tokens)
        trajectories.append(Trajectory(traj.agent, tuple(turns), traj.start_s))
    requests = sorted((r for t in trajectories for r in requests_of(t, block_tokens)),
                      key=lambda r: (r.arrival_s, r.agent, r.turn))
    turns_note = f"x{max_turns}" if max_turns else ""
    return Workload(f"{workload.name}/{token_divisor:g}{turns_note}", tuple(requests), tuple(trajectories))


def trajectories_of(workload: Workload) -> list[Trajectory]:
    """The workload's trajectories, or ones rebuilt from its requests (a trace without them)."""
    if workload.trajectories:
        return list(workload.trajectories)
    out = []
    for agent, chain in by_agent(workload.requests).items():
        turns, context = [], 0
        for r in chain:
            turns.append(Turn(max(1, r.prompt_tokens - context), max(1, r.output_tokens)))
            context = max(context, r.prompt_tokens) + r.output_tokens
        out.append(Trajectory(agent, tuple(turns), chain[0].arrival_s))
    return out


def append_tokens(seed: int, agent: int, turn: int, count: int, vocab_size: int) -> list[int]:
    """The tokens turn `turn` of `agent` appends: the same for the same seed, in any run."""
    rng = random.Random(f"{seed}:{agent}:{turn}")
    return [rng.randrange(vocab_size) for _ in range(count)]


def timed_workload(workload: Workload, warm_turns: int, block_tokens: int) -> Workload:
    """The requests after each agent's first `warm_turns` turns, hits counted from the whole context:
    what a run with a warm-up times (and what a simulator is given to predict it)."""
    if warm_turns <= 0:
        return workload
    requests = sorted((r for t in trajectories_of(workload) for r in requests_of(t, block_tokens)
                       if r.turn >= warm_turns), key=lambda r: (r.arrival_s, r.agent, r.turn))
    if not requests:
        raise SpecError(f"workload {workload.name}", "warm_turns", warm_turns, "fewer than every agent's turns")
    return Workload(f"{workload.name}+warm{warm_turns}", tuple(requests))


def run_agents(scheduler: Scheduler, workload: Workload, vocab_size: int, *, seed: int = 0, online: bool = False,
               warm_turns: int = 0, on_start=None, timeout_s: float | None = None) -> tuple[list[TurnLog], float]:
    """Run every agent of `workload` to its last turn (or first failure). The first `warm_turns` of
    each agent run first, all agents together and untimed (they fill storage with the agents' history);
    then `on_start(origin)` is called and the timed turns start (online: at `origin + start_s`).
    Returns the timed turns in (agent, turn) order and the origin. Raises `DualpathError` if the
    agents are not done within `timeout_s`."""
    began = time.time()
    deadline = None if timeout_s is None else began + timeout_s
    logs: list[TurnLog] = []
    lock = threading.Lock()
    trajectories = trajectories_of(workload)
    origin = [began]

    def start_timed() -> None:
        origin[0] = time.time()
        if on_start is not None:
            on_start(origin[0])

    barrier = threading.Barrier(len(trajectories), action=start_timed)

    def run_turn(traj: Trajectory, index: int, context: list[int], timed: bool) -> TurnOutcome | None:
        request = f"a{traj.agent}t{index}"
        future = scheduler.submit(request, traj.agent, index, context, traj.turns[index].generate_tokens)
        try:
            outcome = future.result(None if deadline is None else max(0.1, deadline - time.time()))
        except Exception as exc:
            with lock:
                logs.append(TurnLog(request, traj.agent, index, tuple(context), error=str(exc) or type(exc).__name__))
            return None
        if timed:
            with lock:
                logs.append(TurnLog(request, traj.agent, index, tuple(context), outcome))
        return outcome

    def agent(traj: Trajectory) -> None:
        context: list[int] = []
        alive = True
        for index in range(min(warm_turns, len(traj.turns))):
            context = context + append_tokens(seed, traj.agent, index, traj.turns[index].append_tokens, vocab_size)
            outcome = run_turn(traj, index, context, timed=False)
            if outcome is None:
                alive = False
                break
            context = context + outcome.result.tokens
        try:
            barrier.wait(None if deadline is None else max(0.0, deadline - time.time()))
        except threading.BrokenBarrierError:
            return
        if online and traj.start_s > 0:
            time.sleep(max(0.0, origin[0] + traj.start_s - time.time()))
        for index in range(warm_turns, len(traj.turns) if alive else 0):
            context = context + append_tokens(seed, traj.agent, index, traj.turns[index].append_tokens, vocab_size)
            outcome = run_turn(traj, index, context, timed=True)
            if outcome is None:
                return
            context = context + outcome.result.tokens

    threads = [threading.Thread(target=agent, args=(traj,), name=f"agent-{traj.agent}", daemon=True)
               for traj in trajectories]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(None if deadline is None else max(0.0, deadline - time.time()))
    if any(thread.is_alive() for thread in threads):
        barrier.abort()
        raise DualpathError(f"agents not done within {timeout_s} s ({len(logs)} turns finished): a hang")
    return sorted(logs, key=lambda log: (log.agent, log.turn)), origin[0]


def verify_turns(logs: Sequence[TurnLog], decoder, deadline: float | None = None) -> list[str]:
    """Each completed turn's output against a full recompute with `decoder` (the whole prompt in one
    pass, nothing from storage, then greedy decoding from that pass's KV); returns the mismatches.
    Turns without output are the run's lost turns, counted there, not here. Raises `DualpathError`
    once `deadline` (a `time.time()`) passes."""
    done = [log for log in logs if log.outcome is not None]
    bad = []
    for checked, log in enumerate(done):
        if deadline is not None and time.time() > deadline:
            raise DualpathError(f"verification not done by the run's timeout ({checked} of {len(done)} turns "
                                "checked): raise --timeout-s")
        assert log.outcome is not None  # filtered above; tells the type checker
        produced = list(log.outcome.result.tokens)
        expected = recompute(decoder, list(log.prompt), len(produced), deadline)
        if expected != produced:
            bad.append(f"{log.request}: produced {produced} but a full recompute gives {expected}")
    return bad


def recompute(decoder, prompt: list[int], num_tokens: int, deadline: float | None = None) -> list[int]:
    """Greedy tokens after `prompt`, computed from scratch (one forward over the prompt, then one per token)."""
    torch = decoder.torch
    logits, past = decoder.forward(prompt)
    out = [int(torch.argmax(logits[-1]))]
    while len(out) < num_tokens:
        if deadline is not None and time.time() > deadline:
            raise DualpathError(f"verification not done by the run's timeout (a turn of {num_tokens} tokens "
                                f"at token {len(out)}): raise --timeout-s")
        logits, new = decoder.forward([out[-1]], past=past, start_pos=len(prompt) + len(out) - 1)
        past = [(torch.cat((k, nk)), torch.cat((v, nv))) for (k, v), (nk, nv) in zip(past, new)]
        out.append(int(torch.argmax(logits[-1])))
    return out


def runtime_trace(logs: Sequence[TurnLog], cluster: ClusterSpec, engines: Mapping[str, EngineHandle], policy: str,
                  origin: float, kv_bytes_per_token: int = 0, num_buckets: int = 200) -> Trace:
    """The completed turns as a runtime `Trace`; times relative to `origin` (absolute seconds).

    Spans: each side's storage read (`<node>.snic`), the prefill on its PE and the decode on its DE;
    with `kv_bytes_per_token`, also the KV entering each node's CNICs during the prefill
    (`<node>.cnic_in`: all hit KV into the PE, the prompt KV the DE did not read into the DE)."""
    node_of = {name: handle.node for name, handle in engines.items()}
    records, spans = [], []
    for log in logs:
        if log.outcome is None:
            continue
        result = log.outcome.result
        records.append(turn_record(result, log.agent, log.turn, len(log.prompt), origin, log.outcome.arrived_at,
                                   log.request))
        t = {k: v - origin for k, v in result.times.items()}
        pe_node, de_node = node_of.get(result.pe), node_of.get(result.de)
        for node, nbytes in ((pe_node, result.pe_read_bytes), (de_node, result.de_read_bytes)):
            if nbytes:
                spans.append(Span(f"{node}.snic", "read", t["admitted"], t["read_done"], log.request, nbytes))
        spans.append(Span(result.pe, "prefill", t["prefill_start"], t["first_token"], log.request))
        spans.append(Span(result.de, "decode", t["first_token"], t["finish"], log.request))
        if kv_bytes_per_token:
            into_de = len(log.prompt) * kv_bytes_per_token - result.de_read_bytes
            for node, nbytes in ((pe_node, result.read_bytes), (de_node, into_de)):
                spans.append(Span(f"{node}.cnic_in", "transfer", t["prefill_start"], t["first_token"], log.request,
                                  nbytes))
    spec = cluster.node
    rates = {"read": spec.snic_bytes_per_s, "transfer": spec.cnic_bytes_per_s * spec.num_gpus}
    return Trace("runtime", policy, records, spans, utilisation_of(spans, cluster.all_nodes(), rates, num_buckets))


def utilisation_of(spans: Sequence[Span], nodes: Sequence[str], rates: Mapping[str, float], num_buckets: int = 200
                   ) -> dict[str, list[tuple[float, float]]]:
    """Utilisation series per resource of the spans whose kind has a rate (bytes/s): each span's bytes
    spread evenly over it, in `num_buckets` buckets over the run."""
    moving = [s for s in spans if s.kind in rates]
    if not moving:
        return {}
    end = max(s.end_s for s in moving)
    width = max(end / num_buckets, 1e-3)
    size = int(end / width) + 1
    suffix = {"read": "snic", "transfer": "cnic_in"}
    buckets = {f"{n}.{suffix[k]}": [0.0] * size for n in nodes for k in rates if k in suffix}
    kind_of = {f"{n}.{suffix[k]}": k for n in nodes for k in rates if k in suffix}
    for s in moving:
        row = buckets.setdefault(s.resource, [0.0] * size)
        kind_of.setdefault(s.resource, s.kind)
        duration = s.end_s - s.start_s
        first, last = int(s.start_s / width), min(int(s.end_s / width), size - 1)
        for i in range(first, last + 1):
            overlap = min(s.end_s, (i + 1) * width) - max(s.start_s, i * width)
            row[i] += s.num_bytes * max(0.0, overlap) / duration if duration > 1e-9 else s.num_bytes
    # At most 1: spreading a span's bytes evenly is an approximation, and the emulated NIC's burst
    # allowance lets a short span exceed the line rate within one bucket (a trace's utilisation is a share).
    return {name: [(round(i * width, 9), min(1.0, v / (rates[kind_of[name]] * width))) for i, v in enumerate(row)]
            for name, row in buckets.items()}
