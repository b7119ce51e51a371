"""Policy registry: `make_policy(name, cluster, llm)` for the CLI and benchmarks.

`POLICY_NAMES` lists the paper's scheduler and its baselines in the ablation's order, then this
library's `optimized` (solver/online.py) and `dualpath-srpt` (the paper's rules with `optimized`'s batch
order, to credit the batch order alone); other code adds its own with `register_policy`.
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


def _optimized(cluster: ClusterSpec, llm: LLMSpec, block_tokens: int = 64) -> Policy:
    # Imported on use: the online scheduler pulls in OR-Tools (the `solver` extra) for its LP.
    from dualpath.solver.optimized import OptimizedPolicy

    return OptimizedPolicy(cluster, llm, block_tokens)


def _dualpath_srpt(cluster: ClusterSpec, llm: LLMSpec, block_tokens: int = 64) -> Policy:
    from dualpath.solver.optimized import DualPathSRPTPolicy

    return DualPathSRPTPolicy(cluster, llm, block_tokens)


_FACTORIES: dict[str, PolicyFactory] = {
    "basic": BasicPolicy,
    "layerwise": LayerwisePolicy,
    "dualpath-rr": DualPathRRPolicy,
    "dualpath": DualPathPolicy,
    "oracle": OraclePolicy,
    "round-robin": RoundRobinPolicy,
    "optimized": _optimized,
    "dualpath-srpt": _dualpath_srpt,
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
