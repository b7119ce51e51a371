"""The fuzz suite's inputs: the same formats, bad values and damage as `benchmarks/fuzz_cli.py` (loaded
from it, so the suite and the benchmark never drift apart), and each format's reader, called in-process."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

from tests.paths import BENCHMARKS


def _benchmark() -> ModuleType:
    spec = importlib.util.spec_from_file_location("fuzz_cli", BENCHMARKS / "fuzz_cli.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["fuzz_cli"] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


bench = _benchmark()


def _readers() -> dict[str, Callable[[Path], object]]:
    from dualpath.models.hf_config import load_hf_config
    from dualpath.models.jsonl import read_jsonl
    from dualpath.models.llm_file import load_llm
    from dualpath.models.mooncake import load_mooncake
    from dualpath.models.profile import load_profile
    from dualpath.models.registry import resolve_cluster
    from dualpath.plan import Plan
    from dualpath.proofs.envfile import load_env
    from dualpath.proofs.mlnx_qos import load_mlnx_qos
    from dualpath.proofs.opensm import load_opensm
    from dualpath.proofs.overrides import load_overrides
    from dualpath.proofs.pod_env import load_pod_envs
    from dualpath.proofs.qos_policy import load_qos_policy
    from dualpath.proofs.roce_spec import load_roce
    from dualpath.proofs.sonic import load_sonic
    from dualpath.proofs.traffic import load_traffic
    from dualpath.runtime.engine_cli import _read_secret

    return {
        "cluster-toml": lambda p: resolve_cluster(str(p)), "model-toml": load_llm, "model-toml-sim": load_llm,
        "hf-config": load_hf_config, "profile-csv": load_profile, "plan-json": lambda p: Plan.load(str(p)),
        "trace-jsonl": read_jsonl, "trace-sim": read_jsonl, "mooncake-jsonl": load_mooncake,
        "traffic-toml": load_traffic, "roce-toml": load_roce, "overrides-toml": load_overrides,
        "opensm-conf": load_opensm, "qos-policy": load_qos_policy, "mlnx-qos": load_mlnx_qos,
        "sonic-json": load_sonic, "pod-yaml": load_pod_envs, "env-file": load_env,
        "secret-file": lambda p: _read_secret(str(p)),
    }


READERS = _readers()


def plan_json() -> bytes:
    """A plan document of `bench.PLAN_TRACE`, made in-process (the benchmark makes it with the command)."""
    import json
    import tempfile

    from dualpath.models.jsonl import read_jsonl
    from dualpath.models.registry import resolve_cluster, resolve_model
    from dualpath.models.sampling import sample_batch
    from dualpath.solver.planner import plan_with_problem

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "trace.jsonl"
        path.write_bytes(bench.PLAN_TRACE)
        batch = sample_batch(read_jsonl(path), 2)
    plan, _, _ = plan_with_problem(resolve_cluster("2P4D"), resolve_model("deepseek-v3.2"), list(batch.requests),
                                   solver="greedy", split_reads=False, time_limit_s=5.0)
    return (json.dumps(plan.to_json(), indent=1) + "\n").encode()


FORMATS = {f.family: f for f in bench.formats(plan_json())}
