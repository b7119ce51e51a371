"""Bounded search for a deadlock of concrete requests: the counterexample trace for a broken protocol.

Requests are explicit (each with its read path, sizes and layers); the state is each request's
position among its request-level steps and each layer's progress through the loop steps, with the
runtime's pipelining (loads in layer order, running ahead; one worker per request, one layer at a
time). Capacities and sizes are symbolic within `max_units`, under the condition that every request
alone could finish, so a deadlock found is a wait cycle between requests. Each step of a trace moves
one request by one protocol step, so traces are at most the total step count long: searching to that
depth is exhaustive for the given requests and layers.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from itertools import pairwise

from dualpath.proofs import smt
from dualpath.proofs.protocol_model import PathModel, ProtocolModel
from dualpath.protocol import Amount, ReadPath, Resource, Step

SIZE_NAMES = ("hit", "prompt", "context")


@dataclass(frozen=True)
class Action:
    request: int
    kind: str  # "request" | "load" | "work"
    step: Step
    position: int  # request-level index, or the layer
    stage: int = 0  # loop step index taken by a work action


@dataclass(frozen=True)
class DeadlockTrace:
    paths: tuple[ReadPath, ...]
    capacities: dict
    sizes: list
    steps: list  # human-readable lines
    waits: list
    cycle: str
    actions: tuple = ()  # (request, step name, layer or None) in trace order
    blocked: tuple = ()  # (request, step name, layer or None) the runtime could take next, none of which fits
    amounts: tuple = ()  # per request: {"hit_bytes", "prompt_bytes", "context_bytes", "layer_bytes": [...]}

    def to_witness(self) -> dict:
        return {"requests": [f"r{i} ({p.value}-read, {s})" for i, (p, s) in enumerate(zip(self.paths, self.sizes))],
                "capacities": self.capacities, "trace": self.steps, "waits": self.waits, "cycle": self.cycle}


class Search:
    def __init__(self, model: ProtocolModel, paths: tuple[ReadPath, ...], num_layers: int = 2,
                 max_units: int = 16):
        z3 = smt.z3mod()
        self.z3, self.paths, self.layers = z3, paths, num_layers
        self.pms: list[PathModel] = [next(m for m in model.paths if m.path is p) for p in paths]
        self.resources = list(Resource)
        self.caps = {r: z3.Int(f"cap[{r.value}]") for r in self.resources}
        self.size = [{n: z3.Int(f"{n}[r{i}]") for n in SIZE_NAMES} for i in range(len(paths))]
        # Layer bytes as RequestSizes.of gives them: the prompt split exactly, earlier layers one larger.
        self.layer_bytes = [[z3.Int(f"layer{k}[r{i}]") for k in range(num_layers)] for i in range(len(paths))]
        self.base = [c >= 1 for c in self.caps.values()] + [c <= max_units for c in self.caps.values()]
        for sz, layers in zip(self.size, self.layer_bytes):
            self.base += [sz["hit"] >= 1, sz["hit"] <= sz["prompt"], sz["prompt"] <= sz["context"],
                          sz["context"] <= max_units, z3.Sum(layers) == sz["prompt"],
                          layers[-1] <= layers[0], layers[0] <= layers[-1] + 1]
            self.base += [a >= b for a, b in pairwise(layers)]
        self.actions = [a for i in range(len(paths)) for a in self._actions(i)]
        self.solo_fits()

    def amount(self, i: int, amount: Amount, layer: int = 0):
        sz = self.size[i]
        if amount is Amount.LAYER_BYTES:
            return self.layer_bytes[i][layer]
        return {Amount.HIT_BYTES: sz["hit"], Amount.PROMPT_BYTES: sz["prompt"], Amount.CONTEXT_BYTES: sz["context"],
                Amount.ONE: self.z3.IntVal(1)}[amount]

    def delta(self, i: int, steps, resource: Resource):
        """Net change of `resource` held by request i over `steps`: (step, layer) pairs."""
        terms = [self.amount(i, a, k) for s, k in steps for r, a in s.acquire if r is resource]
        terms += [-self.amount(i, a, k) for s, k in steps for r, a in s.release if r is resource]
        return self.z3.Sum(terms) if terms else self.z3.IntVal(0)

    @staticmethod
    def _layer(a: Action) -> int:
        return a.position if a.kind != "request" else 0

    def request_steps(self, i: int) -> tuple[Step, ...]:
        return self.pms[i].pre + self.pms[i].post

    def _actions(self, i: int) -> list[Action]:
        pm = self.pms[i]
        out = [Action(i, "request", s, k) for k, s in enumerate(self.request_steps(i))]
        out += [Action(i, "load", pm.loop[0], layer) for layer in range(self.layers)]
        out += [Action(i, "work", pm.loop[j], layer, j) for layer in range(self.layers) for j in range(1, len(pm.loop))]
        return out

    def state(self, t: int):
        """(positions, layer stages, holdings): holdings are state too, so no step replays history."""
        z3, n = self.z3, range(len(self.paths))
        return ([z3.Int(f"pc[r{i}]@{t}") for i in n],
                [[z3.Int(f"stage[r{i},l{layer}]@{t}") for layer in range(self.layers)] for i in n],
                [{r: z3.Int(f"held[r{i},{r.value}]@{t}") for r in self.resources} for i in n])

    def used(self, held, resource):
        return self.z3.Sum([h[resource] for h in held])

    def guard(self, a: Action, pcs, stages, held=None):
        z3, pm, i = self.z3, self.pms[a.request], a.request
        lo, m = len(pm.pre), len(pm.loop)
        pc, st = pcs[i], stages[i]
        if a.kind == "request":
            cond = [pc == a.position]
            if a.position == lo:
                cond += [s == m for s in st]
            return z3.And(cond)
        layer = a.position
        if a.kind == "load":
            order = [st[layer - 1] >= 1] if layer else []
            return z3.And([pc == lo, st[layer] == 0, *order])
        order = [st[layer - 1] == m] if layer and a.stage == 1 else []
        return z3.And([pc == lo, st[layer] == a.stage, *order])

    def enabled(self, a: Action, pcs, stages, used):
        fits = [used[r] + self.z3.Sum([self.amount(a.request, am, self._layer(a)) for rr, am in a.step.acquire
                                       if rr is r])
                <= self.caps[r] for r in {r for r, _ in a.step.acquire}]
        return self.z3.And([self.guard(a, pcs, stages), *fits])

    def effect(self, a: Action, now, nxt):
        (pcs, stages, held), (pcs2, stages2, held2) = now, nxt
        eqs = []
        for i in range(len(self.paths)):
            eqs.append(pcs2[i] == (pcs[i] + 1 if a.kind == "request" and a.request == i else pcs[i]))
            for layer in range(self.layers):
                moved = a.kind != "request" and a.request == i and a.position == layer
                eqs.append(stages2[i][layer] == (stages[i][layer] + 1 if moved else stages[i][layer]))
            for r in self.resources:
                change = self.delta(i, [(a.step, self._layer(a))], r) if a.request == i else None
                eqs.append(held2[i][r] == (held[i][r] + change if change is not None else held[i][r]))
        return self.z3.And(eqs)

    def solo_fits(self) -> None:
        """Every request alone, running its steps in order, stays within every capacity."""
        for i, pm in enumerate(self.pms):
            order = [(s, 0) for s in pm.pre] + [(s, k) for k in range(self.layers) for s in pm.loop]
            order += [(s, 0) for s in pm.post]
            for k in range(1, len(order) + 1):
                for r in self.resources:
                    self.base.append(self.delta(i, order[:k], r) <= self.caps[r])

    def find(self, depths=(10, 14, 20), shape=None, exhaustive: bool = True) -> DeadlockTrace | None:
        """Unroll to each depth in turn; once deadlocked a trace may only stay put, so one query per depth
        asks "deadlocked at the last step?". The last depth is the total step count: exhaustive.

        `shape(held)` may add constraints on the final holdings (to ask for a particular cycle first)."""
        full = sum(len(self.request_steps(i)) + self.layers * len(self.pms[i].loop) for i in range(len(self.paths)))
        for depth in sorted({d for d in depths if d < full} | ({full} if exhaustive else set())):
            outcome, history, choices = self._unroll(depth, shape)
            if outcome.sat:
                return self._trace(outcome.model, history, choices)
            if outcome.verdict == "unknown":
                return None
        return None

    def _unroll(self, depth: int, shape=None):
        z3 = self.z3
        s = smt.solver()
        s.add(*self.base)
        now = self.state(0)
        s.add(*[pc == 0 for pc in now[0]], *[st == 0 for sts in now[1] for st in sts],
              *[v == 0 for h in now[2] for v in h.values()])
        ends = [len(self.request_steps(i)) for i in range(len(self.paths))]
        history, choices = [now], []
        for t in range(depth + 1):
            used = {r: self.used(now[2], r) for r in self.resources}
            enabled = [self.enabled(a, now[0], now[1], used) for a in self.actions]
            stuck = z3.And([z3.Or([now[0][i] < ends[i] for i in range(len(self.paths))])]
                           + [z3.Not(e) for e in enabled])
            if t == depth:
                s.add(stuck, *(shape(now[2]) if shape else []))
                break
            nxt = self.state(t + 1)
            choice = z3.Int(f"choice@{t}")
            s.add(smt.in_range(choice, 0, len(self.actions) + 1))
            same = z3.And([a == b for a, b in zip(now[0], nxt[0])]
                          + [a == b for x, y in zip(now[1], nxt[1]) for a, b in zip(x, y)]
                          + [x[r] == y[r] for x, y in zip(now[2], nxt[2]) for r in self.resources])
            s.add(z3.Or([z3.And(choice == k, enabled[k], self.effect(a, now, nxt)) for k, a in enumerate(self.actions)]
                        + [z3.And(choice == len(self.actions), stuck, same)]))
            choices.append(choice)
            history.append(nxt)
            now = nxt
        return smt.check(s), history, choices

    def _trace(self, model, history, choices) -> DeadlockTrace:
        def ev(term):
            return smt.value(model, term)

        caps = {r.value: ev(c) for r, c in self.caps.items()}
        sizes = [", ".join([f"{n} {ev(v)}" for n, v in sz.items()] + [f"layers {[ev(x) for x in lb]}"])
                 for sz, lb in zip(self.size, self.layer_bytes)]
        lines, actions, blocked = [], [], []
        for t, choice in enumerate(choices):
            if ev(choice) == len(self.actions):
                break  # deadlocked: the rest of the unrolling stays put
            a = self.actions[ev(choice)]
            what = a.step.name + (f" layer {a.position}" if a.kind != "request" else "")
            got = ", ".join(f"{r.value} {ev(self.amount(a.request, am, self._layer(a)))}" for r, am in a.step.acquire)
            lines.append(f"{t + 1}. r{a.request} {what}" + (f" (takes {got})" if got else ""))
            actions.append((a.request, a.step.name, None if a.kind == "request" else a.position))
        pcs, stages, held = history[-1]
        holders = {r: {i: ev(held[i][r]) for i in range(len(self.paths))} for r in self.resources}
        waits: list[str] = []
        edges: Counter[tuple[int, int, str]] = Counter()
        for a in self.actions:
            if not model.eval(self.guard(a, pcs, stages), model_completion=True):
                continue
            blocked.append((a.request, a.step.name, None if a.kind == "request" else a.position))
            for r in {r for r, _ in a.step.acquire}:
                need = sum(ev(self.amount(a.request, am, self._layer(a))) for rr, am in a.step.acquire if rr is r)
                used = sum(holders[r].values())
                if used + need > caps[r.value]:
                    owners = ", ".join(f"r{i}{' (itself)' if i == a.request else ''} holds {v}"
                                       for i, v in holders[r].items() if v)
                    waits.append(f"r{a.request} {a.step.name} needs {r.value} {need}: {used}/{caps[r.value]} used "
                                 f"({owners})")
                    for i, v in holders[r].items():
                        if v and i != a.request:
                            edges[(a.request, i, r.value)] += 1
        cycle = "; ".join(f"r{a} waits for {r} held by r{b}" for a, b, r in sorted(edges))
        amounts = tuple({"hit_bytes": ev(sz["hit"]), "prompt_bytes": ev(sz["prompt"]),
                         "context_bytes": ev(sz["context"]), "layer_bytes": [ev(x) for x in lb]}
                        for sz, lb in zip(self.size, self.layer_bytes))
        return DeadlockTrace(self.paths, caps, sizes, lines, waits, cycle, tuple(actions), tuple(blocked), amounts)


def classic_cycle(held) -> list:
    """The textbook cycle: the PE-read request (r0) holds PE HBM layer slots and none of the DE buffer
    the DE-read request (r1) fills, while r1 holds no slot."""
    pe, de = held
    return [pe[Resource.PE_HBM_SLOT] >= 1, de[Resource.DE_BUFFER] >= 1, de[Resource.PE_HBM_SLOT] == 0]


def find_deadlock(model: ProtocolModel, combos=None, num_layers: int = 2, max_units: int = 16,
                  depths=(10, 16), exhaustive: bool = False):
    """First deadlock over the request mixes in `combos` (default: one PE-read with one DE-read first,
    asking for the textbook PE-slot / DE-buffer cycle before any other), searched to `depths` (and to
    the full length when `exhaustive`)."""
    if combos is None:
        trace = Search(model, (ReadPath.PE, ReadPath.DE), num_layers, max_units).find(depths, classic_cycle,
                                                                                     exhaustive)
        if trace is not None:
            return trace
        combos = [(ReadPath.PE, ReadPath.DE), (ReadPath.DE, ReadPath.DE), (ReadPath.PE, ReadPath.PE)]
    for paths in combos:
        trace = Search(model, tuple(paths), num_layers, max_units).find(depths, exhaustive=exhaustive)
        if trace is not None:
            return trace
    return None
