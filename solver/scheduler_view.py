"""What one fetch of the paper's scheduler sees: the engines' reports as mutable lists.

`SchedulerView` holds, per engine, what the group leaders report (tok_e, seq_e, free HBM) and the
nodes' read queues, and is updated as a fetch assigns requests, exactly as the leaders would see it.
`ViewCache` rebuilds it cheaply between calls: executors rebuild the `EngineState` of the engines that
changed and keep the others, so only changed objects are read again (what makes 1,152 engines cheap).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import compress
from operator import is_not

from dualpath.cluster import Role
from dualpath.policy import ClusterState, EngineState


@dataclass
class SchedulerView:
    """A mutable copy of what the group leaders reported, updated as one fetch assigns requests."""

    pe_names: list[str]
    pe_node: list[str]
    pe_tokens: list[float]  # the greedy's simulated drain leaves fractions of tokens
    pe_seqs: list[int]
    de_names: list[str]
    de_node: list[str]
    de_tokens: list[int]
    de_seqs: list[int]
    de_free_hbm: list[int]
    de_group: list[int]
    groups: dict[int, list[int]]  # DE group -> DE indices
    read_queue_tokens: dict[str, int]
    group_tokens: dict[int, int] = field(default_factory=dict)
    z_limit: dict[int, float] = field(default_factory=dict)  # per DE group, fixed at the fetch's start
    pe_groups: dict[int, list[int]] = field(default_factory=dict)  # PE group -> PE indices

    @classmethod
    def of(cls, state: ClusterState) -> SchedulerView:
        """The view of a snapshot; live engines only, PEs and DEs each in the snapshot's order."""
        pe_names: list[str] = []
        pe_node: list[str] = []
        pe_tokens: list[float] = []
        pe_seqs: list[int] = []
        de_names: list[str] = []
        de_node: list[str] = []
        de_tokens: list[int] = []
        de_seqs: list[int] = []
        de_free: list[int] = []
        de_group: list[int] = []
        groups: dict[int, list[int]] = {}
        pe_groups: dict[int, list[int]] = {}
        group_tokens: dict[int, int] = {}
        for e in state.engines.values():
            if not e.alive:
                continue
            if e.role is Role.PREFILL:
                pe_groups.setdefault(e.group, []).append(len(pe_names))
                pe_names.append(e.name)
                pe_node.append(e.node)
                pe_tokens.append(e.num_tokens)
                pe_seqs.append(e.num_seqs)
                continue
            groups.setdefault(e.group, []).append(len(de_names))
            group_tokens[e.group] = group_tokens.get(e.group, 0) + e.num_tokens
            de_names.append(e.name)
            de_node.append(e.node)
            de_tokens.append(e.num_tokens)
            de_seqs.append(e.num_seqs)
            de_free.append(e.free_hbm_bytes)
            de_group.append(e.group)
        return cls(pe_names, pe_node, pe_tokens, pe_seqs, de_names, de_node, de_tokens, de_seqs, de_free,
                   de_group, groups, dict(state.read_queue_tokens), group_tokens, {}, pe_groups)

    def copy(self) -> SchedulerView:
        return SchedulerView(self.pe_names, self.pe_node, list(self.pe_tokens), list(self.pe_seqs), self.de_names,
                             self.de_node, list(self.de_tokens), list(self.de_seqs), list(self.de_free_hbm),
                             self.de_group, self.groups, dict(self.read_queue_tokens), dict(self.group_tokens),
                             {}, self.pe_groups)


class ViewCache:
    """The last snapshot's view and engine states: a new snapshot re-reads only the engines whose
    reported state is a different object (executors rebuild the states of engines that changed)."""

    def __init__(self) -> None:
        self.names: list[str] = []
        self.states: list = []
        self.slots: list[tuple[bool, int]] = []  # per snapshot position: (is PE, index in the view)
        self.position: dict[str, int] = {}  # engine name -> snapshot position
        self.serial = 0  # of the last snapshot read (`ClusterState.serial`)
        self.view: SchedulerView | None = None

    def view_of(self, state: ClusterState) -> SchedulerView:
        return self.own(self.peek(state), state)

    def own(self, view: SchedulerView, state: ClusterState) -> SchedulerView:
        """`peek(state)`'s answer as a view the caller may change: a copy when it is the cached one."""
        if view is not self.view:
            return view
        view = view.copy()
        view.read_queue_tokens = dict(state.read_queue_tokens)
        return view

    def peek(self, state: ClusterState) -> SchedulerView:
        """The view of `state` without the copy `view_of` makes: when it is the cache's own (`is self.view`),
        read it and do not change it (a scheduler that finds nothing to do then skips the copy)."""
        engines = state.engines
        view = self.view
        follows, self.serial = self.serial, state.serial
        if view is not None and state.follows and state.follows == follows:
            # The next snapshot of the source we read last: it names what changed, nothing else can have.
            position = self.position
            return self._refresh(view, [(position[name], engines[name]) for name in state.changed], state)
        if view is None or len(engines) != len(self.names) or list(engines) != self.names:
            return self._rebuild(state)
        values = list(engines.values())
        changed = list(compress(range(len(values)), map(is_not, values, self.states)))
        return self._refresh(view, [(pos, values[pos]) for pos in changed], state)

    def _refresh(self, view: SchedulerView, changed: list[tuple[int, EngineState]],
                 state: ClusterState) -> SchedulerView:
        # The cached view is never handed out to change (callers get copies), so it is updated in place.
        for pos, e in changed:
            if not e.alive:
                return self._rebuild(state)
            is_pe, i = self.slots[pos]
            if is_pe:
                view.pe_tokens[i], view.pe_seqs[i] = e.num_tokens, e.num_seqs
            else:
                view.group_tokens[e.group] += e.num_tokens - view.de_tokens[i]
                view.de_tokens[i], view.de_seqs[i], view.de_free_hbm[i] = e.num_tokens, e.num_seqs, e.free_hbm_bytes
            self.states[pos] = e
        return view

    def _rebuild(self, state: ClusterState) -> SchedulerView:
        view = SchedulerView.of(state)
        index = {n: (True, i) for i, n in enumerate(view.pe_names)}
        index.update({n: (False, i) for i, n in enumerate(view.de_names)})
        self.names = list(state.engines)
        self.position = {name: pos for pos, name in enumerate(self.names)}
        self.states = list(state.engines.values())
        self.slots = [index.get(n, (True, -1)) for n in self.names]
        if any(i < 0 for _, i in self.slots):  # dead engines: no incremental refresh
            self.view = None
            return view
        self.view = view
        return view
