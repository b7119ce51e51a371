"""benchmarks/baseline_batching.py: the baselines under each batch rule are what its tables say they are."""

import importlib.util

import pytest

from dualpath.calibration import calibrated_llm
from dualpath.models.llms import llm_preset
from dualpath.models.registry import resolve_cluster
from dualpath.policy import BatchItem
from dualpath.solver.baselines import BasicPolicy
from dualpath.solver.paper_rules import DualPathPolicy
from tests.paths import BENCHMARKS


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("baseline_batching", BENCHMARKS / "baseline_batching.py")
    module = importlib.util.module_from_spec(spec)
    with pytest.MonkeyPatch.context() as mp:
        mp.syspath_prepend(str(BENCHMARKS))  # it shares reproduce_paper.py's figures, as when run as a script
        spec.loader.exec_module(module)
    return module


def test_quota_rule_batches_as_the_paper_and_ready_takes_everything(bench):
    llm = calibrated_llm(llm_preset("deepseek-v3.2"))
    cluster = resolve_cluster("2P4D")
    queue = [BatchItem(f"r{i}", 60_000, 20_000) for i in range(6)]  # far past 300 ms of attention
    quota = bench.with_quota(BasicPolicy)(cluster, llm)
    expected = DualPathPolicy(cluster, llm).form_batch(queue)
    assert quota.form_batch(queue) == expected
    assert len(expected) < len(queue) and not quota.execution.layerwise  # still Basic's executor
    assert BasicPolicy(cluster, llm).form_batch(queue) == queue


def test_token_rule_reaches_the_executor(bench):
    assert bench.calibration_for("tokens:512").max_batch_new_tokens == 512
    assert bench.calibration_for("ready").max_batch_new_tokens is None
    ready, capped = bench.run(48, "basic", "ready"), bench.run(48, "basic", "tokens:256")
    assert capped["jct_s"] != ready["jct_s"]  # 256 new tokens per step chunks most turns' 429


def test_scorecard_marks_figures_outside_tolerance(bench):
    rows = [{"agents": 2048, "policy": p, "rule": rule, "jct_s": jct}
            for rule, jcts in {"a": (10_000, 8_300, 6_200), "b": (6_000, 5_900, 5_800)}.items()
            for p, jct in zip(("basic", "layerwise", "dualpath-rr"), jcts)]
    rows.append({"agents": 2048, "policy": "dualpath", "rule": "own", "jct_s": 5_400})
    lines = bench.scorecard(rows, [])
    layerwise = next(line for line in lines if "layerwise" in line).split()
    assert layerwise[-2] == "0.830" and layerwise[-1] == "0.983*"  # 0.828 +-10%: a in, b out
    ratio = next(line for line in lines if "basic / dualpath" in line).split()
    assert ratio[-2] == "1.85" and ratio[-1] == "1.11*"
