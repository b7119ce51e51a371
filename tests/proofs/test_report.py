"""`verify`: the paper's configuration holds in <= 5 s, every shipped broken example fails for its
reason with a witness naming the entry, exit codes, JSON/HTML, bad input with file and line."""

import json
import time

import pytest

from dualpath.errors import SpecError, UnknownNameError
from dualpath.proofs import protocol_check
from dualpath.proofs.example_files import broken_examples, example, examples_dir, variant
from dualpath.proofs.report import VerificationReport, verify
from dualpath.proofs.result import PropertyResult, Status, proved, unknown, violated


def run(paths, **kw):
    return verify(paths["opensm"], paths["traffic"], roce_path=paths["roce"], **kw)


def test_paper_configuration_proves_every_property_within_five_seconds():
    protocol_check._cache.clear()  # time the deadlock proof too, not an earlier test's answer
    start = time.perf_counter()
    report = run(example())
    elapsed = time.perf_counter() - start
    assert [p.name for p in report.properties if p.status is not Status.PROVED] == []
    assert len(report.properties) == 18 and report.exit_code() == 0  # 18: roce_library_tc (issue 17)
    assert elapsed <= 5.0, elapsed
    assert report.summary.startswith("verify: all hold; 18 properties: 18 proved")


def test_at_least_five_broken_examples_each_failing_for_a_different_reason():
    cases = broken_examples()
    assert len(cases) >= 5 and len({expect["property"] for _, expect in cases}) == len(cases)


@pytest.mark.parametrize("name, expect", broken_examples(), ids=[n for n, _ in broken_examples()])
def test_broken_example_is_violated_with_a_witness_naming_the_entry(name, expect):
    report = run(example(name))
    result = next(p for p in report.properties if p.name == expect["property"])
    assert result.status is Status.VIOLATED and report.exit_code() == 1
    assert expect["offending"] in json.dumps(result.witness) and result.fix


def test_json_and_html_reports(tmp_path):
    report = run(example("broken-nccl-sl"))
    data = report.to_json()
    assert {"properties", "summary", "exit_code", "schema_version"} <= set(data)
    assert all({"name", "status", "witness", "question", "fix", "time_s"} <= set(p) for p in data["properties"])
    json.dumps(data)
    html = report.to_html()
    assert html.startswith("<!DOCTYPE html>") and "<script" not in html and "http" not in html.replace(
        "http-equiv", "")
    assert html.count("<tr>") == len(report.properties) + 1 and "NCCL_IB_SL" in html and "violated" in html
    assert "library_settings" in report.to_text()


def test_exit_code_violation_wins_over_unknown():
    def rep(*results):
        return VerificationReport(list(results))

    ok = proved("a", "f", "q?")
    open_ = unknown("b", "f", "q?", "timeout")
    bad = violated("c", "f", "q?", "entry", "fix")
    assert rep(ok).exit_code() == 0 and rep(ok, open_).exit_code() == 3 and rep(open_, bad, ok).exit_code() == 1
    assert "UNKNOWN: b" in rep(ok, open_).summary and "VIOLATED: c" in rep(open_, bad).summary
    assert isinstance(bad, PropertyResult)


def test_protocol_without_admission_is_reported_with_its_deadlock_trace():
    report = run(example(), protocol="no-admission")
    deadlock = next(p for p in report.properties if p.name == "deadlock_free")
    assert deadlock.status is Status.VIOLATED and report.exit_code() == 1
    assert "waits for pe_hbm_slot" in deadlock.witness["cycle"]
    with pytest.raises(UnknownNameError):
        run(example(), protocol="nope")


def test_without_roce_file_the_roce_properties_are_not_asked():
    paths = example()
    report = verify(paths["opensm"], paths["traffic"])
    assert not any(p.family == "roce" for p in report.properties) and report.exit_code() == 0


@pytest.mark.parametrize("key, edit, error, needle", [
    ("opensm", ("max_op_vls 3", "max_op_vls 9"), SpecError, "max_op_vls"),  # OpenSM reads an empty value as 0
    ("traffic", ("[cluster]", "[cluster]\nracks = 2"), SpecError, "racks = 2"),
    ("traffic", ("sl = 3", "sl = 17"), SpecError, "sl = 17"),
    ("roce", ('trust = "dscp"', 'trust = "dscp"\nmode = 1'), SpecError, "mode = 1"),
    ("roce", ("[classes.management]\ndscp = 48\ntc = 6\nlossless = false\n", ""), SpecError, None),
])
def test_bad_input_raises_with_file_and_line(tmp_path, key, edit, error, needle):
    paths = variant(tmp_path, {key: [edit]})
    with pytest.raises(error) as info:
        run(paths)
    assert str(paths[key]) in str(info.value)
    if needle:
        lines = paths[key].read_text().splitlines()
        assert info.value.line == next(i for i, line in enumerate(lines, 1) if line.strip() == needle.split("\n")[0]
                                       or line.strip().startswith(needle))


def test_cli_verify_writes_reports_and_exits_by_status(tmp_path, capsys):
    from dualpath.cli import main

    paths = example()
    out_json, out_html = tmp_path / "r.json", tmp_path / "r.html"
    code = main(["verify", "--opensm", str(paths["opensm"]), "--traffic", str(paths["traffic"]), "--roce",
                 str(paths["roce"]), "--json", str(out_json), "--html", str(out_html)])
    assert code == 0 and json.loads(out_json.read_text())["exit_code"] == 0 and out_html.exists()
    assert "all hold" in capsys.readouterr().out
    bad = example("broken-high-limit-unlimited")
    assert main(["verify", "--opensm", str(bad["opensm"]), "--traffic", str(bad["traffic"])]) == 1
    broken = variant(tmp_path / "b", {"opensm": [("qos_high_limit 240", "max_op_vls 9")]})
    assert main(["verify", "--opensm", str(broken["opensm"]), "--traffic", str(broken["traffic"])]) == 2
    assert "opensm.conf:17" in capsys.readouterr().err


def test_examples_ship_as_package_data():
    assert (examples_dir() / "paper" / "opensm.conf").exists()


# One broken fixture per property, run through the whole report: (edits to the paper files, protocol).
BROKEN_FIXTURES = {
    "qos_enabled": ({"opensm": [("qos TRUE", "qos FALSE")]}, "default"),
    "class_reaches_vl": ({"opensm": [("qos_ca_sl2vl (null)", "qos_ca_sl2vl 0,0,2,3,0,1,2,3,0,1,2,3,0,1,2,3")]},
                         "default"),
    "kv_collective_isolation": ({"opensm": [("qos_sl2vl 0,1,2,3,", "qos_sl2vl 0,1,0,3,")]}, "default"),
    "sl_vl_range": ({"opensm": [("qos_sl2vl 0,1,2,3,", "qos_sl2vl 0,1,2,15,")]}, "default"),
    "weights_mtu_multiple": ({"opensm": [("2:64", "2:32")]}, "default"),
    "kv_no_starvation": ({"opensm": [("2:64", "2:0")]}, "default"),
    "kv_min_share": ({"traffic": [("kv_share_min = 0.0004", "kv_share_min = 0.001")]}, "default"),
    "collective_share": ({"opensm": [("qos_high_limit 240", "qos_high_limit 16")]}, "default"),
    "model_wait_bound": ({"traffic": [("model_wait_max_ns = 500", "model_wait_max_ns = 150")]}, "default"),
    "library_settings": ({"env": [("NVSHMEM_IB_SL=0", "NVSHMEM_IB_SL=3")]}, "default"),
    "roce_class_tc": ({"roce": [('"10" = 1', '"10" = 2')]}, "default"),
    "roce_pfc": ({"roce": [("pfc_priorities = [1, 3]", "pfc_priorities = [0, 1, 3]")]}, "default"),
    "roce_ets": ({"roce": [("[1, 4, 0, 95,", "[1, 4, 5, 95,")]}, "default"),
    "roce_strict_kv": ({"roce": [("strict_tcs = [6]", "strict_tcs = [1, 6]")]}, "default"),
    "roce_library_tc": ({"env": [("export NCCL_IB_TC=104", "export NCCL_IB_TC=40")]}, "default"),
    "deadlock_free": ({}, "no-admission"),
    "channel_dependency_acyclic": ({}, "no-admission"),
    "pd_bottleneck_free": ({"traffic": [("decode_nodes = 4", "decode_nodes = 20")]}, "default"),
}


def test_every_property_has_a_broken_fixture():
    assert set(BROKEN_FIXTURES) == {p.name for p in run(example()).properties}


@pytest.mark.parametrize("name", sorted(BROKEN_FIXTURES))
def test_broken_fixture_violates_its_property(tmp_path, name):
    edits, protocol = BROKEN_FIXTURES[name]
    report = run(variant(tmp_path, edits), protocol=protocol)
    result = next(p for p in report.properties if p.name == name)
    assert result.status is Status.VIOLATED and result.witness and result.fix, result
