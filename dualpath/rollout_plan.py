"""The rollout plan: what an offline planner fixes for a whole RL rollout, executed turn by turn.

A rollout is every agent's chain of turns; turn t+1 exists only once turn t's last token is out, so a
plan cannot name times or a global order of requests. What it can fix, per agent, and what every
executor (simulator, real runtime) applies to each of the agent's turns as it arrives:
- `priority`: 0 goes first, in admission and in forward batches; equal priorities keep the rules' own
  order (FIFO for the paper's rules, least compute first for `optimized`);
- per turn, `turn_priority` (one rule for the whole rollout): turns of agents that, from what the turn
  shows when it arrives, have many turns left go before the others of the same agent priority;
- `pe_group` / `de`: where the agent's turns go (None: the rules choose);
- `pe_read_fraction`: the share of each turn's hit bytes read through the PE node's SNIC (None: the
  rules choose the side or the split).
Everything the plan leaves open is decided by the named online `rules` with their `options`, so a
plan with no directives executes exactly as that online policy. The plan also records what it was
made for (cluster, model, workload, agents, seed), so `dualpath simulate --plan` needs no other flag,
and what the planner knew (`knowledge`: first turns and an independent sample, or clairvoyant).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from dualpath.errors import InputError, shown
from dualpath.jsonio import check_versioned, read_versioned, write_json_atomic

ROLLOUT_PLAN_KIND = "rollout-plan"
ROLLOUT_PLAN_SCHEMA_VERSION = 1
RULES = ("dualpath", "dualpath-srpt", "optimized")  # the online rules a plan may defer to
KNOWLEDGE = ("first-turns", "clairvoyant")


@dataclass(frozen=True)
class AgentDirective:
    """What the plan fixes for one agent's turns (None: the rules decide)."""

    agent: int
    priority: int = 0
    pe_group: int | None = None
    de: str | None = None
    pe_read_fraction: float | None = None

    def is_default(self) -> bool:
        return self.priority == 0 and self.pe_group is None and self.de is None and self.pe_read_fraction is None


@dataclass(frozen=True)
class TurnPriority:
    """Turns of agents predicted to have at least `min_remaining_turns` left go first.

    The prediction uses only what a turn shows on arrival: i turns since the agent's first one (whose
    prompt was c0) and its prompt c. The agent grew (c - c0) / i tokens a turn, so it fills
    `context_tokens` in about (context_tokens - c) * i / (c - c0) more turns (why: most agentic tasks
    run until their context is full). First turns show no growth: they get `first_turn_priority`.
    """

    context_tokens: int
    min_remaining_turns: float
    first_turn_priority: int = 1

    def priority(self, turns_since_first: int, prompt_tokens: int, first_prompt_tokens: int) -> int:
        """0 (goes first) or 1, or `first_turn_priority` for a first turn."""
        if turns_since_first <= 0:
            return self.first_turn_priority
        grown = prompt_tokens - first_prompt_tokens
        if grown <= 0:
            return 0  # no growth yet: it can run as long as anyone
        left = (self.context_tokens - prompt_tokens) * turns_since_first / grown
        return 0 if left >= self.min_remaining_turns else 1


@dataclass(frozen=True)
class RolloutSource:
    """The rollout a plan is for: enough to rebuild its true workload."""

    cluster: str
    model: str
    workload: str
    agents: int
    seed: int
    block_tokens: int = 64


@dataclass(frozen=True)
class RolloutPlan:
    source: RolloutSource
    rules: str
    agents: tuple[AgentDirective, ...] = ()
    options: Mapping[str, Any] = field(default_factory=dict)  # the rules' settings (OnlineOptions fields)
    turn_priority: TurnPriority | None = None
    knowledge: str = "first-turns"
    candidate: str = ""  # the planner's name for the chosen candidate
    executed_jct_s: float | None = None  # replayed on the true rollout
    lower_bound_s: float | None = None  # no execution of the rollout finishes sooner
    solve_time_s: float = 0.0
    baselines: Mapping[str, float] = field(default_factory=dict)  # online policy -> executed JCT, same rollout
    meta: Mapping[str, Any] = field(default_factory=dict)  # candidates' sample JCTs, sample seeds, bound terms

    def __post_init__(self) -> None:
        if self.rules not in RULES:
            raise InputError("rollout plan", f"rules {shown(self.rules)}: expected one of {', '.join(RULES)}")
        if self.knowledge not in KNOWLEDGE:
            raise InputError("rollout plan",
                             f"knowledge {shown(self.knowledge)}: expected one of {', '.join(KNOWLEDGE)}")
        seen: set[int] = set()
        for d in self.agents:
            if d.agent in seen:
                raise InputError("rollout plan", f"agent {d.agent} has two directives")
            seen.add(d.agent)
            f = d.pe_read_fraction
            if f is not None and not (isinstance(f, (int, float)) and 0.0 <= f <= 1.0):
                raise InputError("rollout plan", f"agent {d.agent}: pe_read_fraction {shown(f)} is not in [0, 1]")

    @property
    def gap(self) -> float | None:
        """executed / bound - 1, when both are known."""
        if self.executed_jct_s is None or not self.lower_bound_s:
            return None
        return self.executed_jct_s / self.lower_bound_s - 1.0

    def directive(self) -> dict[int, AgentDirective]:
        return {d.agent: d for d in self.agents}

    def with_results(self, **changes: Any) -> RolloutPlan:
        return replace(self, **changes)

    # ---- JSON ----------------------------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        gap = self.gap
        return {
            "kind": ROLLOUT_PLAN_KIND,
            "schema_version": ROLLOUT_PLAN_SCHEMA_VERSION,
            "source": vars(self.source) | {},
            "rules": self.rules,
            "options": dict(self.options),
            "turn_priority": None if self.turn_priority is None else vars(self.turn_priority) | {},
            "knowledge": self.knowledge,
            "candidate": self.candidate,
            "executed_jct_s": self.executed_jct_s,
            "lower_bound_s": self.lower_bound_s,
            "gap": gap,
            "solve_time_s": self.solve_time_s,
            "baselines": dict(self.baselines),
            "meta": dict(self.meta),
            # Only agents with a directive: the rest follow the rules.
            "agents": [{k: v for k, v in vars(d).items() if v is not None}
                       for d in self.agents if not d.is_default()],
        }

    @classmethod
    def from_json(cls, data: object, source: str = "rollout plan") -> RolloutPlan:
        check_versioned(source, data, ROLLOUT_PLAN_KIND, ROLLOUT_PLAN_SCHEMA_VERSION)
        assert isinstance(data, dict)  # check_versioned refused anything else
        try:
            src = data["source"]
            rollout = RolloutSource(str(src["cluster"]), str(src["model"]), str(src["workload"]),
                                    _int(src["agents"], "source.agents"), _int(src["seed"], "source.seed"),
                                    _int(src.get("block_tokens", 64), "source.block_tokens"))
            agents = tuple(_directive(row, i) for i, row in enumerate(data.get("agents", [])))
            turn = data.get("turn_priority")
            turn_priority = None if turn is None else TurnPriority(
                _int(turn["context_tokens"], "turn_priority.context_tokens"),
                _float(turn["min_remaining_turns"], "turn_priority.min_remaining_turns"),
                _int(turn.get("first_turn_priority", 1), "turn_priority.first_turn_priority"))
            return cls(rollout, str(data["rules"]), agents, dict(data.get("options", {})), turn_priority,
                       str(data.get("knowledge", "first-turns")), str(data.get("candidate", "")),
                       _opt_float(data.get("executed_jct_s"), "executed_jct_s"),
                       _opt_float(data.get("lower_bound_s"), "lower_bound_s"),
                       _float(data.get("solve_time_s", 0.0), "solve_time_s"),
                       {str(k): _float(v, f"baselines.{shown(k)}") for k, v in dict(data.get("baselines", {})).items()},
                       dict(data.get("meta", {})))
        except InputError as exc:
            raise InputError(source, str(exc).split(": ", 1)[-1]) from None
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise InputError(source, f"malformed rollout plan: {type(exc).__name__} {shown(str(exc))}") from None

    def save(self, path: str) -> None:
        write_json_atomic(path, self.to_json())

    @classmethod
    def load(cls, path: str) -> RolloutPlan:
        return cls.from_json(read_versioned(path, ROLLOUT_PLAN_KIND, ROLLOUT_PLAN_SCHEMA_VERSION), path)


_DIRECTIVE_KEYS = frozenset(("agent", "priority", "pe_group", "de", "pe_read_fraction"))


def _directive(row: object, i: int) -> AgentDirective:
    if not isinstance(row, dict):
        raise InputError("rollout plan", f"agents[{i}]: expected an object, found {type(row).__name__}")
    unknown = set(row) - _DIRECTIVE_KEYS
    if unknown:
        raise InputError("rollout plan", f"agents[{i}]: unknown keys {sorted(unknown)}")
    group, de, frac = row.get("pe_group"), row.get("de"), row.get("pe_read_fraction")
    return AgentDirective(_int(row["agent"], f"agents[{i}].agent"),
                          _int(row.get("priority", 0), f"agents[{i}].priority"),
                          None if group is None else _int(group, f"agents[{i}].pe_group"),
                          None if de is None else str(de),
                          None if frac is None else _opt_float(frac, f"agents[{i}].pe_read_fraction"))


def _int(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InputError("rollout plan", f"{name}: expected an integer, found {shown(value)}")
    return value


def _opt_float(value: object, name: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise InputError("rollout plan", f"{name}: expected a finite number, found {shown(value)}")
    return float(value)


def _float(value: object, name: str) -> float:
    number = _opt_float(value, name)
    if number is None:
        raise InputError("rollout plan", f"{name}: expected a finite number, found null")
    return number
