"""Deadlock freedom of the transfer protocol for any number of requests, by an inductive invariant.

The transition system is the counting abstraction of `abstraction`: per place, how many requests (or
loaded layers) are there and, per token, the total amount they hold. Moves are the protocol's steps
(an acquire happens only if it fits the capacity, as in `Ledger`), arrivals and failures. With
capacities, sizes, request and layer counts all symbolic, Z3 discharges

    Init => Inv,   Inv and Move => Inv' (each move),   Inv and Deadlock => false,

where Inv says occupants hold at least one unit of each token of their place (exactly one of unit
tokens), the pool matches the requests with layers ahead, and no resource is over capacity; Deadlock
says some request is unfinished and every occupied place's next step is blocked (a step is blocked
when one of its wants exceeds what is free).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

from dualpath.proofs import smt
from dualpath.proofs.abstraction import Abstraction, Move
from dualpath.proofs.protocol_model import ModelError, ProtocolModel, Token
from dualpath.protocol import Amount, Resource, Step


class State:
    """Z3 variables of one abstract state: occupants per place, amounts per place and token."""

    def __init__(self, abstraction: Abstraction, tag: str):
        z3 = smt.z3mod()
        self.n = {pl.key: z3.Int(f"n[{pl.name}]{tag}") for pl in abstraction.places}
        self.u = {(pl.key, t): z3.Int(f"u[{pl.name},{t[0].value}/{t[1].value}]{tag}")
                  for pl in abstraction.places for t in pl.tokens}
        self._used: dict = {}

    def used(self, abstraction: Abstraction, resource: Resource):
        if resource not in self._used:
            z3 = smt.z3mod()
            terms = [self.u[(pl.key, t)] for pl in abstraction.places for t in pl.tokens if t[0] is resource]
            self._used[resource] = z3.Sum(terms) if terms else z3.IntVal(0)
        return self._used[resource]


def invariant(a: Abstraction, s: State, caps: dict):
    z3 = smt.z3mod()
    parts = []
    for pl in a.places:
        n = s.n[pl.key]
        parts.append(n >= 0)
        if pl.terminal:
            continue
        for token, count in pl.tokens.items():
            u = s.u[(pl.key, token)]
            parts.append(u == count * n if token[1] is Amount.ONE else u >= count * n)
            parts.append(z3.Implies(n == 0, u == 0))
    for pool, flagged in a.pools.values():
        ahead = z3.Sum([s.n[f.key] for f in flagged])
        parts += [s.n[pool.key] >= ahead, z3.Implies(ahead == 0, s.n[pool.key] == 0)]
    for r, cap in caps.items():
        parts.append(s.used(a, r) <= cap)
    return z3.And(parts)


def capacities() -> dict:
    z3 = smt.z3mod()
    return {r: z3.Int(f"cap[{r.value}]") for r in Resource}


def _take(u, n, k, count: int, one: bool, name: str, cons: list):
    """Amount of a token that k of the n occupants of a place carry away (the rest keep >= 1 unit each)."""
    z3 = smt.z3mod()
    x = z3.Int(name)
    if one:
        cons.append(x == count * k)
    else:
        cons += [x >= count * k, x <= u - count * (n - k), z3.Implies(n == k, x == u)]
    return x


def encode_move(a: Abstraction, mv: Move, s: State, t: State, caps: dict, tag: str):
    """Constraints for `t` = `s` after move `mv`."""
    z3 = smt.z3mod()
    cons: list = []
    dn: Counter[tuple] = Counter()  # place key -> change in occupants
    du: dict[tuple, Any] = {}  # (place key, token) -> change in the tokens its occupants hold
    incoming: dict[Token, list] = {}
    if mv.src is not None:
        cons.append(s.n[mv.src.key] >= 1)
        dn[mv.src.key] -= 1
        for token, count in mv.src.tokens.items():
            x = _take(s.u[(mv.src.key, token)], s.n[mv.src.key], 1, count, token[1] is Amount.ONE,
                      f"x[{mv.src.name},{token[0].value}]{tag}", cons)
            du[(mv.src.key, token)] = du.get((mv.src.key, token), 0) - x
            incoming.setdefault(token, []).append((x, count))
    if mv.take_pool:
        pool = mv.layer_pool()
        k = z3.IntVal(1) if mv.take_pool == 1 else z3.Int(f"k{tag}")
        cons += [k >= 1, k <= s.n[pool.key]]
        dn[pool.key] -= 1 if mv.take_pool == 1 else 0
        if mv.take_pool == -1:
            # the failing request's own layers go with it; every other flagged request keeps >= 1
            ahead = z3.Sum([s.n[f.key] for f in a.pools[mv.source().key[0]][1]])
            cons += [t.n[pool.key] == s.n[pool.key] - k, s.n[pool.key] - k >= ahead - 1,
                     z3.Implies(ahead == 1, k == s.n[pool.key])]
        for token, count in pool.tokens.items():
            y = _take(s.u[(pool.key, token)], s.n[pool.key], k, count, token[1] is Amount.ONE,
                      f"y[{token[0].value}]{tag}", cons)
            du[(pool.key, token)] = du.get((pool.key, token), 0) - y
            incoming.setdefault(token, []).append((y, count))
    want: Counter[Resource] = Counter()
    acquired = Counter(mv.step.acquire) if mv.step is not None else Counter()
    for token, count in acquired.items():
        amount = z3.Int(f"a[{token[0].value}/{token[1].value}]{tag}")
        one = token[1] is Amount.ONE
        cons += [amount == count] if one else [amount >= count, amount <= count * caps[token[0]]]
        want[token[0]] = want[token[0]] + amount
        if mv.add_pool:
            du[(mv.layer_pool().key, token)] = du.get((mv.layer_pool().key, token), 0) + amount
        else:
            incoming.setdefault(token, []).append((amount, count))
    if mv.add_pool:
        dn[mv.layer_pool().key] += 1
    for r, w in want.items():
        cons.append(s.used(a, r) + w <= caps[r])
    if mv.dst is not None:
        dn[mv.dst.key] += 1
        if mv.add_pool and mv.src is not None:
            incoming = {tk: v for tk, v in incoming.items() if tk in mv.src.tokens}
        out = mv.dst.tokens if not mv.dst.terminal else Counter()
        for token in set(incoming) | set(out):
            pieces = incoming.get(token, [])
            c_in, c_out = sum(c for _, c in pieces), out[token]
            if c_out > c_in:
                raise ModelError(f"{mv.label}: {mv.dst.name} holds {token} that nothing brings")
            if c_out == 0:
                continue
            if c_out < c_in and token[1] is not Amount.ONE:
                raise ModelError(f"{mv.label}: partial release of byte token {token}")
            gain = z3.Sum([x for x, _ in pieces]) if c_out == c_in else z3.IntVal(c_out)
            du[(mv.dst.key, token)] = du.get((mv.dst.key, token), 0) + gain
    for key, n in s.n.items():
        if not (mv.take_pool == -1 and key == mv.layer_pool().key):
            cons.append(t.n[key] == (n + dn[key] if dn[key] else n))
    for key, u in s.u.items():
        cons.append(t.u[key] == (u + du[key] if key in du else u))
    if mv.flagged_after is not None:
        pool, flagged = a.pools[mv.source().key[0]]
        ahead = z3.Sum([s.n[f.key] for f in flagged])
        cons.append(s.n[pool.key] >= ahead + 1 if mv.flagged_after else z3.Implies(ahead == 1, s.n[pool.key] == 1))
    return cons


def blocked(a: Abstraction, s: State, step: Step, caps: dict, tag: str):
    """Some want of `step` does not fit what is free (wants are any amounts within capacity)."""
    z3 = smt.z3mod()
    need: Counter[Resource] = Counter()
    cons: list = []
    for token, count in Counter(step.acquire).items():
        amount = z3.Int(f"w[{step.name},{token[0].value}/{token[1].value}]{tag}")
        one = token[1] is Amount.ONE
        cons += [amount == count] if one else [amount >= count, amount <= count * caps[token[0]]]
        need[token[0]] = need[token[0]] + amount
    if not need:
        return z3.BoolVal(False), []
    return z3.Or([s.used(a, r) + w > caps[r] for r, w in need.items()]), cons


def deadlock(a: Abstraction, s: State, caps: dict):
    z3 = smt.z3mod()
    active = [pl for pl in a.places if pl.request and not pl.terminal]
    parts = [z3.Sum([s.n[pl.key] for pl in active]) >= 1]
    for pl in active:
        options = []
        for i, step in enumerate(a.blockers[pl.key]):
            formula, cons = blocked(a, s, step, caps, f"@{pl.name}#{i}")
            parts += cons
            options.append(formula)
        parts.append(z3.Implies(s.n[pl.key] >= 1, z3.Or(options)))
    return z3.And(parts)


@dataclass(frozen=True)
class ProofResult:
    verdict: str  # "proved" | "refuted" | "unknown"
    obligations: int
    failed: str = ""


def prove(model: ProtocolModel) -> ProofResult:
    """Discharge the three obligations; `refuted` names the first one Z3 finds a counterexample to."""
    z3 = smt.z3mod()
    a = Abstraction(model)
    caps = capacities()
    positive = [c >= 1 for c in caps.values()]
    s, t = State(a, ""), State(a, "'")
    first = (model.paths[0].path.value, "pre", 0)
    init = [s.n[k] == 0 for k in s.n if k != first] + [s.n[first] >= 0]
    init += [u == 0 for u in s.u.values()]
    inv_s, not_inv_t = invariant(a, s, caps), z3.Not(invariant(a, t, caps))
    obligations = [("init", [*init, z3.Not(inv_s)])]
    for i, mv in enumerate(a.moves):
        cons = encode_move(a, mv, s, t, caps, f"#{i}")
        obligations.append((f"move {mv.label}", [inv_s, *cons, not_inv_t]))
    obligations.append(("deadlock", [inv_s, deadlock(a, s, caps)]))
    solver = smt.solver()
    solver.add(*positive)
    # Not vacuous: the invariant allows requests in every place at once (else "proved" would mean nothing).
    solver.push()
    solver.add(inv_s, *[s.n[pl.key] >= 1 for pl in a.places if pl.request])
    if not smt.check(solver).sat:
        return ProofResult("unknown", len(obligations), "the invariant is unsatisfiable (vacuous)")
    solver.pop()
    for name, formulas in obligations:
        solver.push()
        solver.add(*formulas)
        outcome = smt.check(solver)
        solver.pop()
        if outcome.verdict == "unknown":
            return ProofResult("unknown", len(obligations), f"{name}: {outcome.reason}")
        if outcome.sat:
            return ProofResult("refuted", len(obligations), name)
    return ProofResult("proved", len(obligations))

