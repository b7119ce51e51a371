import json
import math

import pytest

from dualpath.errors import InputError, SpecError
from dualpath.plan import Assignment, Plan
from dualpath.trace import RequestRecord, Span, Trace, percentile


def plan():
    return Plan(solver="greedy", status="feasible", fluid_bottleneck_s=12.0, lower_bound_s=10.0,
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
    for key in ("solver", "status", "fluid_bottleneck_s", "lower_bound_s", "gap", "solve_time_s",
                "greedy_fluid_bottleneck_s", "executed_jct_s"):
        assert key in data
    assert Plan.from_json({**data, "executed_jct_s": 3.5}).executed_jct_s == 3.5


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
    data["schema_version"] = 1  # v1 called the fluid bottleneck time "makespan_s"
    path.write_text(json.dumps(data))
    with pytest.raises(InputError, match="re-plan it with `dualpath plan`"):
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


@pytest.mark.parametrize(("edit", "needle"), [
    (lambda d: d["assignments"][0].update(pe_read_bytes="abc"),
     "assignments[0].pe_read_bytes = 'abc': expected an integer"),
    (lambda d: d["assignments"][1].update(de_read_bytes=-1), "assignments[1].de_read_bytes = -1"),
    (lambda d: d["assignments"][0].update(pe=None), "assignments[0].pe = None: expected a string"),
    (lambda d: d["assignments"][0].update(pe="abc"), "assignments[0].pe = 'abc': expected an engine name PE0"),
    (lambda d: d["assignments"][0].update(de="PE1"), "assignments[0].de = 'PE1': expected an engine name DE0"),
    (lambda d: d["assignments"][0].update(order=2**63 - 1), "assignments[0].order = 9223372036854775807"),
    (lambda d: d["assignments"][0].update(predicted_end_s=float("nan")), "assignments[0].predicted_end_s = nan"),
    (lambda d: d["assignments"][0].pop("de"), "assignments[0].de = None: expected a value (required)"),
    (lambda d: d["assignments"][0].update(extra=1), "assignments[0].extra = 1: expected one of the keys"),
    (lambda d: d["assignments"][1].update(request="r0"), "assignments[1].request = 'r0': expected a request planned"),
    (lambda d: d["assignments"].__setitem__(0, [1, 2]), "assignments[0] = [1, 2]: expected a JSON object"),
    (lambda d: d.update(assignments={"r0": 1}), "assignments = {'r0': 1}: expected a JSON array"),
    (lambda d: d.update(meta="x"), "meta = 'x': expected a JSON object"),
    (lambda d: d.update(solver=None), "solver = None: expected a string"),
    (lambda d: d.update(split_reads=1), "split_reads = 1: expected true or false"),
    (lambda d: d.update(fluid_bottleneck_s={}), "fluid_bottleneck_s = {}: expected a number"),
    (lambda d: d.update(lower_bound_s=float("inf")), "lower_bound_s = inf: expected a number"),
    (lambda d: d.pop("status"), "status = None: expected a value (required)"),
])
def test_plan_json_fields_are_type_checked_and_errors_name_the_file(tmp_path, edit, needle):
    data = json.loads(json.dumps(plan().to_json()))
    edit(data)
    path = tmp_path / "plan.json"
    path.write_text(json.dumps(data))
    with pytest.raises((InputError, SpecError)) as info:
        Plan.load(path)
    assert str(info.value).startswith(f"{path}: ") and needle in str(info.value)


@pytest.mark.parametrize(("edit", "needle"), [
    (lambda d: d["records"][0].update(finish_s="late"), "records[0].finish_s = 'late'"),
    (lambda d: d["records"][0].update(output_tokens=1.5), "records[0].output_tokens = 1.5"),
    (lambda d: d["spans"][0].update(start_s=None), "spans[0].start_s = None"),
    (lambda d: d.update(utilisation={"P0.snic": [[0.0]]}), "utilisation.P0.snic[0] = [0.0]"),
    (lambda d: d.update(records=None), "records = None: expected a JSON array"),
    (lambda d: d.update(meta=[]), "meta = []: expected a JSON object"),
])
def test_trace_json_fields_are_type_checked(tmp_path, edit, needle):
    t = Trace("simulator", "dualpath", [record(0, 0.0, 1.0, 2.0)], spans=[Span("P0.snic", "read", 0.0, 1.0)])
    data = json.loads(json.dumps(t.to_json()))
    edit(data)
    path = tmp_path / "t.json"
    path.write_text(json.dumps(data))
    with pytest.raises(SpecError) as info:
        Trace.load(path)
    assert str(info.value).startswith(f"{path}: ") and needle in str(info.value)


def test_ttst_runs_from_the_first_token_to_the_second():
    # The paper's Table 3 reads it so (TTST 0.228 s beside a TTFT of 1.739 s): the KV's hand-off to the DE
    # plus its first step, not the time from arrival. A one-token request has no second token.
    records = [RequestRecord("a", 0, 0, 10.0, "P", "D", 0, 0, 10.5, 12.0, 12.25, 13.0, 4),
               RequestRecord("b", 1, 0, 10.0, "P", "D", 0, 0, 10.5, 11.0, 11.0, 11.0, 1)]
    m = Trace("simulator", "x", records).metrics()
    assert m.ttst_mean_s == pytest.approx(0.25) and m.ttst_p99_s == pytest.approx(0.25)
    assert m.ttft_mean_s == pytest.approx(1.5)
