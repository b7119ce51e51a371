import json
import math

import pytest

from dualpath.errors import InputError
from dualpath.plan import Assignment, Plan
from dualpath.trace import RequestRecord, Span, Trace, percentile


def plan():
    return Plan(solver="greedy", status="feasible", makespan_s=12.0, lower_bound_s=10.0,
                assignments=[Assignment("r0", "PE0", "DE1", 100, 0), Assignment("r1", "PE1", "DE0", 30, 70)],
                meta={"cluster": "2P4D"})


def test_plan_json_round_trip_and_gap(tmp_path):
    p = plan()
    assert p.gap == pytest.approx(0.2)
    assert [a.path for a in p.assignments] == ["pe", "split"]
    p.save(tmp_path / "plan.json")
    q = Plan.load(tmp_path / "plan.json")
    assert q.assignments == p.assignments and q.meta == p.meta and q.gap == pytest.approx(0.2)
    data = json.loads((tmp_path / "plan.json").read_text())
    for key in ("solver", "status", "makespan_s", "lower_bound_s", "gap", "solve_time_s", "greedy_makespan_s"):
        assert key in data


def test_plan_loader_rejects_other_kinds_and_versions(tmp_path):
    path = tmp_path / "x.json"
    path.write_text(json.dumps({"kind": "trace", "schema_version": 1}))
    with pytest.raises(InputError, match="expected a dualpath plan"):
        Plan.load(path)
    data = plan().to_json()
    data["schema_version"] = 99
    path.write_text(json.dumps(data))
    with pytest.raises(InputError, match="schema_version 99"):
        Plan.load(path)
    path.write_text("{not json")
    with pytest.raises(InputError, match=r"x.json:1: invalid JSON"):
        Plan.load(path)


def record(i, arrival, first, finish, out=11):
    return RequestRecord(f"r{i}", i, 0, arrival, "PE0", "DE0", 10, 0, arrival, first, first + 0.05, finish, out)


def test_trace_metrics_and_round_trip(tmp_path):
    t = Trace("simulator", "dualpath", [record(0, 0.0, 1.0, 2.0), record(1, 1.0, 4.0, 6.0)],
              spans=[Span("P0.snic", "read", 0.0, 1.0, "r0", 1e6), Span("PE0", "prefill", 5.0, 6.0)],
              utilisation={"P0.snic": [(0.0, 1.0), (1.0, 0.0)]})
    m = t.metrics()
    assert m.jct_s == 6.0 and m.output_tokens == 22 and m.tokens_per_s == pytest.approx(22 / 6)
    assert m.ttft_mean_s == pytest.approx(2.0) and m.ttft_p99_s == 3.0
    assert m.tpot_mean_s == pytest.approx((0.1 + 0.2) / 2)
    assert t.slo_attainment(ttft_s=2.0, tpot_s=0.15) == 0.5
    t.save(tmp_path / "t.json")
    u = Trace.load(tmp_path / "t.json")
    assert u.records == t.records and u.spans == t.spans and u.utilisation == t.utilisation


def test_chrome_export_windows_spans():
    t = Trace("simulator", "x", [], spans=[Span("P0.snic", "read", 0.0, 1.0, "r0"), Span("PE0", "prefill", 5.0, 6.0)])
    events = [e for e in t.to_chrome(0.0, 2.0)["traceEvents"] if e["ph"] == "X"]
    assert len(events) == 1 and events[0]["dur"] == 1e6 and events[0]["tid"] == 1
    chrome = t.to_chrome(0.0, 2.0)
    names = {(e["name"], e["pid"], e["tid"]): e["args"]["name"] for e in chrome["traceEvents"] if e["ph"] == "M"}
    assert names[("thread_name", events[0]["pid"], 1)] == "P0.snic" and names[("process_name", 1, 0)] == "P0"
    assert chrome["kind"] == "chrome_trace" and chrome["schema_version"] == 1
    assert math.isnan(Trace("simulator", "x", []).metrics().jct_s)


def test_percentile_nearest_rank():
    assert percentile([3, 1, 2, 4], 50) == 2 and percentile([1, 2, 3, 4], 99) == 4
    assert math.isnan(percentile([], 50))
