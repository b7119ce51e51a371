"""Counting abstraction of the transfer protocol: places (request positions, the pool of layers loaded
ahead, done, failed) and moves (the protocol's steps, arrivals, failures), built from `protocol_model`.

A place per request position: before each pre-loop step; in the loop with the worker idle or busy at
a loop step, with or without layers loaded ahead; before each post-loop step. Each place records the
tokens every occupant holds; `blockers` says which steps an occupant waits on.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from dualpath.proofs.protocol_model import ModelError, PathModel, ProtocolModel
from dualpath.protocol import Phase, Step


@dataclass(frozen=True)
class Place:
    key: tuple
    holds: tuple  # ((token, count), ...)
    phase: Phase | None
    request: bool = True
    terminal: bool = False

    @property
    def tokens(self) -> Counter:
        return Counter(dict(self.holds))

    @property
    def name(self) -> str:
        return "/".join(str(k) for k in self.key)


@dataclass(frozen=True)
class Move:
    label: str
    step: Step | None
    src: Place | None  # None: a new request arrives
    dst: Place | None  # None: the entity leaves (a failing request goes to `failed`)
    take_pool: int = 0  # 1: the worker takes the oldest loaded layer; -1: a failing request drops k >= 1
    add_pool: bool = False  # the loader's acquisitions become a new loaded layer
    pool: Place | None = None
    flagged_after: bool | None = None  # worker start: does the request still have layers loaded ahead

    def source(self) -> Place:
        """`src`, for a move that must leave a place (a failure, a worker start)."""
        if self.src is None:
            raise ModelError(f"{self.label}: leaves no place")
        return self.src

    def layer_pool(self) -> Place:
        """`pool`, for a move that takes loaded layers from it or adds one to it."""
        if self.pool is None:
            raise ModelError(f"{self.label}: names no layer pool")
        return self.pool


def _place(key, holds: Counter, phase, **kw) -> Place:
    return Place(key, tuple(sorted(holds.items(), key=lambda kv: (kv[0][0].value, kv[0][1].value))), phase, **kw)


class Abstraction:
    """Places and moves of one protocol variant, plus what blocks each place."""

    def __init__(self, model: ProtocolModel):
        if model.problems:
            raise ModelError("; ".join(model.problems))
        self.model = model
        self.done = _place(("done",), Counter(), Phase.DONE, terminal=True)
        self.failed = _place(("failed",), Counter(), Phase.FAILED, terminal=True)
        self.places: list[Place] = [self.done, self.failed]
        self.moves: list[Move] = []
        self.blockers: dict[tuple, tuple[Step, ...]] = {}  # place key -> steps, blocked if any is blocked
        self.pools: dict[str, tuple[Place, list[Place]]] = {}
        for path in model.paths:
            self._add_path(path)

    def _add_path(self, pm: PathModel) -> None:
        p, m = pm.path.value, len(pm.loop)
        pre = [_place((p, "pre", k), pm.held_pre[k], s.source) for k, s in enumerate(pm.pre)]
        loop = {(w, f): _place((p, "loop", w, f), pm.held_loop + (pm.layer_held[w] if w else Counter()),
                               pm.loop_phase) for w in range(m - 1) for f in (0, 1)}
        pool = _place((p, "pool"), pm.layer_held[0], pm.loop_phase, request=False)
        # Post-loop places by step index; step 0 leaves the loop straight from the loop place, so has none.
        post = {k: _place((p, "post", k), pm.held_post[k], s.source) for k, s in enumerate(pm.post) if k}
        self.places += pre + list(loop.values()) + [pool] + list(post.values())
        self.pools[p] = (pool, [loop[(w, 1)] for w in range(m - 1)])
        after_pre = [*pre[1:], loop[0, 0]]
        self.moves.append(Move(f"{p}: arrival", None, None, pre[0]))
        for k, step in enumerate(pm.pre):
            self.moves.append(Move(f"{p}: {step.name}", step, pre[k], after_pre[k]))
            self.blockers[pre[k].key] = (step,)
        after_post = [*list(post.values())[1:], self.done]
        self.moves.append(Move(f"{p}: {pm.post[0].name}", pm.post[0], loop[(0, 0)], after_post[0]
                               if len(pm.post) == 1 else post[1]))
        for k in range(1, len(pm.post)):
            self.moves.append(Move(f"{p}: {pm.post[k].name}", pm.post[k], post[k], after_post[k - 1]
                                   if k + 1 < len(pm.post) else self.done))
            self.blockers[post[k].key] = (pm.post[k],)
        for (w, f), place in loop.items():
            self.moves.append(Move(f"{p}: {pm.loop[0].name} (worker {w}, ahead {f})", pm.loop[0], place,
                                   loop[(w, 1)], add_pool=True, pool=pool))
        for f_after in (0, 1):
            target = loop[(1, f_after)] if m > 2 else loop[(0, f_after)]
            self.moves.append(Move(f"{p}: {pm.loop[1].name} (ahead after {f_after})", pm.loop[1], loop[(0, 1)],
                                   target, take_pool=1, pool=pool, flagged_after=bool(f_after)))
        for j in range(2, m):
            for f in (0, 1):
                target = loop[(j, f)] if j < m - 1 else loop[(0, f)]
                self.moves.append(Move(f"{p}: {pm.loop[j].name} (ahead {f})", pm.loop[j], loop[(j - 1, f)], target))
        self.blockers[loop[(0, 0)].key] = (pm.loop[0], pm.post[0])
        for f in (0, 1):
            for w in range(m - 1):
                if (w, f) != (0, 0):
                    self.blockers[loop[(w, f)].key] = (pm.loop[w + 1],)
        for place in pre + list(loop.values()) + list(post.values()):
            flagged = place.key[1] == "loop" and place.key[3] == 1
            self.moves.append(Move(f"{p}: failure at {place.name}", None, place, self.failed,
                                   take_pool=-1 if flagged else 0, pool=pool if flagged else None))
