"""Channel (resource) dependency graph of the transfer protocol, checked for cycles by graph search.

An edge A -> B means some agent of a request (its request-level steps, its loader, its layer worker)
waits to acquire B while holding A that only its own progress will release. With no cycle, resources
are always acquired in one global order and no set of requests can wait on each other in a circle;
a cycle is printed with the steps that create each edge.
"""

from __future__ import annotations

from collections import Counter, defaultdict

from dualpath.proofs.protocol_model import PathModel, ProtocolModel
from dualpath.proofs.result import PropertyResult, proved, violated
from dualpath.protocol import Resource, Step

NAME, FAMILY = "channel_dependency_acyclic", "deadlock"
QUESTION = "Is the protocol's channel dependency graph (hold A while waiting for B) free of cycles?"


def _resources(tokens: Counter) -> set[Resource]:
    return {token[0] for token, count in tokens.items() if count > 0}


def _waits(pm: PathModel) -> list[tuple[set[Resource], Step, str]]:
    """(resources held, step waited on, agent) for every step that acquires something."""
    out = []
    for k, step in enumerate(pm.pre):
        out.append((_resources(pm.held_pre[k]), step, "request"))
    loop_held = pm.held_loop + pm.leftover  # after a layer, anything it did not give back stays with the request
    out.append((_resources(loop_held), pm.loop[0], "loader"))
    for j in range(1, len(pm.loop)):
        out.append((_resources(loop_held + pm.layer_held[j - 1]), pm.loop[j], "worker"))
    for k, step in enumerate(pm.post):
        out.append((_resources(pm.held_post[k]), step, "request"))
    return [(held, step, agent) for held, step, agent in out if step.acquire]


def dependency_graph(model: ProtocolModel) -> dict[tuple[Resource, Resource], list[str]]:
    edges: dict[tuple[Resource, Resource], list[str]] = defaultdict(list)
    for pm in model.paths:
        for held, step, agent in _waits(pm):
            for b in sorted({r for r, _ in step.acquire}, key=lambda r: r.value):
                for a in sorted(held, key=lambda r: r.value):
                    edges[(a, b)].append(f"{pm.path.value}-read {agent} at {step.name}")
    return dict(edges)


def simple_cycles(edges) -> list[list[Resource]]:
    """Every elementary cycle, each listed once from its smallest node (the graph has a handful of nodes)."""
    nodes = sorted({n for e in edges for n in e}, key=lambda r: r.value)
    succ = {n: sorted({b for a, b in edges if a is n}, key=lambda r: r.value) for n in nodes}
    order = {n: i for i, n in enumerate(nodes)}
    cycles = []
    for start in nodes:
        stack = [(start, [start])]
        while stack:
            node, path = stack.pop()
            for nxt in reversed(succ[node]):
                if nxt is start:
                    cycles.append(path)
                elif order[nxt] > order[start] and nxt not in path:
                    stack.append((nxt, [*path, nxt]))
    return sorted(cycles, key=lambda c: (len(c) == 1, len(c), [order[n] for n in c]))


def check_channel_graph(model: ProtocolModel) -> PropertyResult:
    edges = dependency_graph(model)
    cycles = simple_cycles(edges)
    if not cycles:
        order = " -> ".join(r.value for r in _topological(edges))
        return proved(NAME, FAMILY, QUESTION, f"{len(edges)} edges, acyclic; acquisition order {order}")
    described = []
    for cycle in cycles:
        hops = []
        for a, b in zip(cycle, cycle[1:] + cycle[:1]):
            hops.append(f"{a.value} -> {b.value} ({'; '.join(_spread(edges[(a, b)]))})")
        described.append("; ".join(hops))
    names = [r.value for r in cycles[0]]
    fix = (f"use the admission rule (--protocol default; dualpath.protocol.transfer_steps(admission=True)): "
           f"reserve {names[0]} for the whole request in one all-or-nothing step before anything else, so no "
           f"step holds it while waiting for {names[-1] if len(names) > 1 else 'more of it'}")
    return violated(NAME, FAMILY, QUESTION, {"cycle": described[0], "all_cycles": described}, fix)


def _spread(labels: list[str]) -> list[str]:
    """One label per read path, so a cycle shows both sides of the wait."""
    seen, out = set(), []
    for label in labels:
        path = label.split(" ", 1)[0]
        if path not in seen:
            seen.add(path)
            out.append(label)
    return out


def _topological(edges) -> list[Resource]:
    nodes = sorted({n for e in edges for n in e}, key=lambda r: r.value)
    indegree = {n: sum(1 for a, b in edges if b is n) for n in nodes}
    ready = [n for n in nodes if indegree[n] == 0]
    out = []
    while ready:
        node = ready.pop(0)
        out.append(node)
        for a, b in sorted(edges, key=lambda e: (e[0].value, e[1].value)):
            if a is node:
                indegree[b] -= 1
                if indegree[b] == 0:
                    ready.append(b)
    return out
