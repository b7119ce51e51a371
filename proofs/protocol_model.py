"""The transfer protocol as the deadlock proofs see it, built from `dualpath.protocol.transfer_steps`.

Nothing here restates the protocol: the steps, phases, resources and amounts are read from the core.
Each read path splits into request-level steps before the per-layer loop (`pre`), the loop, and the
steps after it (`post`). As the runtime runs it (runtime/engines/layerwise.py), the first loop step is a loader
that may run ahead of the rest by any number of layers, and the remaining loop steps are taken by one
worker per request, one layer at a time, in layer order.

Holdings are tracked as tokens (resource, amount symbol). The counting proof needs a token discipline:
every release returns a token held at that point, each layer gives back in the loop all it takes, and a
request holds nothing when done. `problems` lists where the protocol breaks it (the admission-free
variant does: the DE buffer is taken per layer and released as a whole).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import pairwise

from dualpath.protocol import Amount, Phase, ReadPath, Resource, Step, transfer_steps

Token = tuple[Resource, Amount]
StepsFn = Callable[[ReadPath, bool], tuple[Step, ...]]


class ModelError(Exception):
    """The protocol has a shape the proofs do not encode (reported as 'unknown', never as proved)."""


def token_name(token: Token) -> str:
    return f"{token[0].value}/{token[1].value}"


@dataclass(frozen=True)
class PathModel:
    path: ReadPath
    pre: tuple[Step, ...]
    loop: tuple[Step, ...]
    post: tuple[Step, ...]
    held_pre: tuple[Counter, ...]  # request-level tokens before each pre step
    held_loop: Counter  # request-level tokens while in the loop
    held_post: tuple[Counter, ...]  # before each post step (index 0: at loop exit)
    layer_held: tuple[Counter, ...]  # tokens one layer holds after loop step j
    leftover: Counter  # tokens each finished layer leaves on the request
    problems: tuple[str, ...] = field(default=())

    @property
    def loop_phase(self) -> Phase:
        return self.loop[0].source

    def phases(self) -> set[Phase]:
        return {s.source for s in self.pre + self.loop + self.post} | {self.post[-1].target}

    def steps(self) -> tuple[Step, ...]:
        return self.pre + self.loop + self.post


def _apply(held: Counter, step: Step, where: str, problems: list[str]) -> Counter:
    after = held + Counter(step.acquire)
    for token in step.release:
        if after[token] <= 0:
            problems.append(f"{where}: step {step.name} releases {token_name(token)}, which is not held as such")
        else:
            after[token] -= 1
    return +after


def build_path(path: ReadPath, admission: bool, steps_fn: StepsFn = transfer_steps) -> PathModel:
    steps = tuple(steps_fn(path, admission))
    if not steps or steps[0].source is not Phase.WAITING or steps[-1].target is not Phase.DONE:
        raise ModelError(f"{path.value}: steps must lead from waiting to done")
    for a, b in pairwise(steps):
        if a.target is not b.source:
            raise ModelError(f"{path.value}: step {a.name} ends in {a.target.value} but {b.name} starts in "
                             f"{b.source.value}")
    looped = [i for i, s in enumerate(steps) if s.repeats_per_layer]
    if not looped or looped != list(range(looped[0], looped[-1] + 1)):
        raise ModelError(f"{path.value}: the per-layer steps must be one contiguous block")
    lo, hi = looped[0], looped[-1]
    pre, loop, post = steps[:lo], steps[lo:hi + 1], steps[hi + 1:]
    if len(loop) < 2 or not post or any(s.source is not s.target for s in loop):
        raise ModelError(f"{path.value}: the loop needs a load step and worker steps inside one phase, then an exit")
    problems: list[str] = []
    where = f"{path.value}-read"
    held_pre: list[Counter[Token]] = [Counter()]
    for step in pre:
        held_pre.append(_apply(held_pre[-1], step, where, problems))
    held_loop = held_pre.pop()
    if loop[0].release:
        problems.append(f"{where}: loader step {loop[0].name} releases tokens")
    layer_held = [Counter(loop[0].acquire)]
    for step in loop[1:]:
        layer = layer_held[-1] + Counter(step.acquire)
        for token in step.release:
            if layer[token] > 0:
                layer[token] -= 1
            else:
                problems.append(f"{where}: loop step {step.name} releases {token_name(token)}, which the layer "
                                "did not take")
        layer_held.append(+layer)
    leftover = layer_held[-1]
    for token in leftover:
        problems.append(f"{where}: every layer takes {token_name(token)} and no loop step gives it back (it "
                        "piles up per layer)")
    # What all layers leave together: one LAYER_BYTES per layer adds up to exactly PROMPT_BYTES
    # (RequestSizes.of splits the prompt over the layers), anything else stays as it is.
    all_layers = Counter({(r, Amount.PROMPT_BYTES if a is Amount.LAYER_BYTES and n == 1 else a): n
                          for (r, a), n in leftover.items()})
    held_post = [held_loop + all_layers]
    for step in post:
        held_post.append(_apply(held_post[-1], step, where, problems))
    final = held_post.pop()
    if final:
        problems.append(f"{where}: a finished request still holds {', '.join(map(token_name, final))}")
    return PathModel(path, pre, loop, post, tuple(held_pre), held_loop, tuple(held_post), tuple(layer_held),
                     leftover, tuple(problems))


@dataclass(frozen=True)
class ProtocolModel:
    admission: bool
    paths: tuple[PathModel, ...]

    @property
    def problems(self) -> tuple[str, ...]:
        return tuple(p for m in self.paths for p in m.problems)

    def phases(self) -> set[Phase]:
        """Every phase the encoding has a place for (FAILED: any request may fail and release all)."""
        return set().union(*(m.phases() for m in self.paths)) | {Phase.FAILED}

    def step_names(self) -> set[str]:
        return {s.name for m in self.paths for s in m.steps()}

    def resources(self) -> list[Resource]:
        used = {t[0] for m in self.paths for s in m.steps() for t in s.acquire + s.release}
        return [r for r in Resource if r in used]


def build_model(admission: bool, steps_fn: StepsFn = transfer_steps) -> ProtocolModel:
    return ProtocolModel(admission, tuple(build_path(p, admission, steps_fn) for p in ReadPath))
