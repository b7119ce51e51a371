"""Policy registry: `make_policy(name, cluster, llm)` for the CLI and benchmarks.

Other modules (the optimizer) add theirs with `register_policy`; the names listed in
`POLICY_NAMES` are the paper's scheduler and its baselines, in the ablation's order.
"""

from __future__ import annotations

from collections.abc import Callable

from dualpath.cluster import ClusterSpec
from dualpath.errors import UnknownNameError
from dualpath.llm import LLMSpec
from dualpath.policy import Policy
from dualpath.solver.baselines import (
    BasicPolicy,
    DualPathRRPolicy,
    LayerwisePolicy,
    OraclePolicy,
    RoundRobinPolicy,
)
from dualpath.solver.paper_rules import DualPathPolicy

PolicyFactory = Callable[[ClusterSpec, LLMSpec, int], Policy]

_FACTORIES: dict[str, PolicyFactory] = {
    "basic": BasicPolicy,
    "layerwise": LayerwisePolicy,
    "dualpath-rr": DualPathRRPolicy,
    "dualpath": DualPathPolicy,
    "oracle": OraclePolicy,
    "round-robin": RoundRobinPolicy,
}
POLICY_NAMES: tuple[str, ...] = tuple(_FACTORIES)


def register_policy(name: str, factory: PolicyFactory) -> None:
    """Make `factory(cluster, llm, block_tokens)` available as `name` (replacing any previous one)."""
    global POLICY_NAMES
    _FACTORIES[name] = factory
    POLICY_NAMES = tuple(_FACTORIES)


def policy_names() -> tuple[str, ...]:
    return tuple(_FACTORIES)


def make_policy(name: str, cluster: ClusterSpec, llm: LLMSpec, block_tokens: int = 64) -> Policy:
    """A fresh policy object (policies keep round-robin pointers: one per simulation)."""
    try:
        factory = _FACTORIES[name.strip().lower()]
    except KeyError:
        raise UnknownNameError("policy", name, list(_FACTORIES)) from None
    return factory(cluster, llm, block_tokens)
