"""Names the CLI accepts for clusters, models and workloads, resolved to specs.

- cluster: `xPyD` (the paper's node), `xPyD@NODE` (a node preset), or a cluster `.toml` file;
- model: a preset name, an LLM `.toml` file, or a Hugging Face `config.json` (or the folder holding one);
- workload: a generator name (`agentic-32k`, `agentic-48k`, `agentic-64k`), a `.jsonl` file in our
  format or in Mooncake's (told apart by their first record), or `mooncake:FILE`.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from dualpath.cluster import ClusterSpec, parse_shorthand
from dualpath.errors import SpecError, UnknownNameError
from dualpath.kvlayout import PAPER_BLOCK_TOKENS
from dualpath.llm import LLMSpec
from dualpath.models.cluster_file import load_cluster
from dualpath.models.generators import AGENTIC_SHAPES, agentic_workload
from dualpath.models.hf_config import is_hf_config_ref, load_hf_config
from dualpath.models.jsonl import read_jsonl
from dualpath.models.llm_file import load_llm
from dualpath.models.llms import list_models, llm_preset
from dualpath.models.mooncake import load_mooncake, looks_like_mooncake
from dualpath.models.nodes import list_nodes, node_preset
from dualpath.models.sampling import poisson_arrivals, resample
from dualpath.models.workloads import from_requests, from_trajectories
from dualpath.request import Workload
from dualpath.validate import read_lines

# The paper's default cluster per model (design.md section 3); Qwen2.5-32B ran with 320 GB buffers.
PAPER_CLUSTERS = {"deepseek-v3.2": "2P4D", "ds-27b": "1P1D", "qwen2.5-32b": "1P2D@paper-hopper-320g"}
_FILE_FORMS = ("FILE.jsonl", "mooncake:FILE")


def _is_file_ref(text: str, suffix: str) -> bool:
    return text.lower().endswith(suffix) or Path(text).is_file()


def resolve_cluster(text: str) -> ClusterSpec:
    text = text.strip()
    if _is_file_ref(text, ".toml"):
        return load_cluster(text)
    shorthand, _, node = text.partition("@")
    if node:
        # parse_shorthand names the cluster itself and cannot take a name; keep the text's node suffix
        return dataclasses.replace(parse_shorthand(shorthand, node=node_preset(node)),
                                   name=f"{shorthand.strip().upper()}@{node.strip().lower()}")
    return parse_shorthand(shorthand)


def resolve_model(text: str) -> LLMSpec:
    text = text.strip()
    # Checked before TOML: a config.json under any name would otherwise be read as invalid TOML.
    if is_hf_config_ref(text):
        return load_hf_config(text)
    if _is_file_ref(text, ".toml"):
        return load_llm(text)
    return llm_preset(text)


def resolve_workload(text: str, agents: int | None = None, seed: int = 0, *,
                     block_tokens: int = PAPER_BLOCK_TOKENS, aps: float | None = None,
                     mooncake_block_tokens: int | None = None) -> Workload:
    """A workload by name or file. `agents`: how many agents (generators default to the paper's 500;
    files past their size are resampled, traces cut to their first agents); `aps`: Poisson
    arrivals in agents per second for online runs (not for traces, which carry their own arrival times);
    `mooncake_block_tokens`: tokens per `hash_ids` entry of a Mooncake trace (default 512 or its header's)."""
    text = text.strip()
    if agents is not None and (isinstance(agents, bool) or not isinstance(agents, int) or agents < 1):
        raise SpecError("workload", "agents", agents, "a positive integer")
    if text.lower() in AGENTIC_SHAPES:
        return agentic_workload(text.lower(), agents=agents or 500, seed=seed, block_tokens=block_tokens,
                                aps=aps)
    mooncake = text.lower().startswith("mooncake:")
    path = text[len("mooncake:"):] if mooncake else text
    if not (mooncake or _is_file_ref(path, ".jsonl")):
        raise UnknownNameError("workload", text, list_workloads() + list(_FILE_FORMS))
    if mooncake or looks_like_mooncake(_first_record(path)):
        workload = load_mooncake(path, block_tokens=mooncake_block_tokens, workload_block_tokens=block_tokens)
    else:
        workload = read_jsonl(path)
    return _shape(workload, agents, seed, block_tokens, aps)


def _first_record(path: str) -> str:
    """The first non-blank line; a missing, special or non-UTF-8 file fails here, in one line."""
    return next((text for _, text in read_lines(path) if text.strip()), "")


def _shape(workload: Workload, agents: int | None, seed: int, block_tokens: int,
           aps: float | None) -> Workload:
    if workload.trajectories:
        trajectories = list(workload.trajectories)
        if agents is not None:
            trajectories = resample(trajectories, agents, seed)
        if aps is not None:
            trajectories = poisson_arrivals(trajectories, aps, seed)
        return from_trajectories(workload.name, trajectories, block_tokens)
    if aps is not None:
        raise SpecError(f"workload {workload.name}", "aps", aps,
                        "no rate for a trace of requests (it carries its own arrival times)")
    if agents is None:
        return workload
    keep = _first_agents(workload, agents)
    return from_requests(workload.name, (r for r in workload.requests if r.agent in keep))


def _first_agents(workload: Workload, agents: int) -> set[int]:
    first_seen: dict[int, int] = {}
    for index, request in enumerate(workload.requests):  # already in arrival order
        first_seen.setdefault(request.agent, index)
    return set(sorted(first_seen, key=first_seen.__getitem__)[:agents])


def list_workloads() -> list[str]:
    return list(AGENTIC_SHAPES)


def list_clusters() -> list[str]:
    """The paper's cluster shorthands; any xPyD works."""
    return ["1P1D", "1P2D", "2P4D", "48P96D"]


__all__ = ["PAPER_CLUSTERS", "list_clusters", "list_models", "list_nodes", "list_workloads",
           "resolve_cluster", "resolve_model", "resolve_workload"]
