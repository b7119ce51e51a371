"""The `dualpath` command: numbers on stdout, one-line errors and exit 2 for bad input."""

import json
import subprocess
import sys

import pytest

from dualpath.cli import main
from dualpath.proofs.example_files import broken_examples, example


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_info_prints_the_derived_numbers(capsys, tmp_path):
    code, out, _ = run(capsys, "info", "--cluster", "2P4D", "--model", "deepseek-v3.2",
                       "--json", str(tmp_path / "i.json"))
    assert code == 0
    assert "48,068 B" in out and "3,076,352 B" in out  # KV bytes per token and Full Block
    assert "1/7" in out and "7/2" in out and "inside the range" in out
    data = json.loads((tmp_path / "i.json").read_text())
    assert data["kv_bytes_per_token"] == 48_068 and data["snic_gbps_per_node"] == 400.0
    assert data["num_pe_engines"] == 16 and data["num_de_engines"] == 32
    assert data["kind"] == "info" and data["schema_version"] == 1
    code, out, err = run(capsys, "info", "--cluster", "2P4D", "--model", "deepseek-v3.2", "--json", "-")
    assert code == 0 and json.loads(out)["kv_bytes_per_token"] == 48_068 and "48,068 B" in err


def test_workload_stats_match_the_paper_table(capsys):
    code, out, _ = run(capsys, "workload", "--workload", "agentic-64k", "--agents", "500", "--stats")
    assert code == 0
    rows = {line.split("  ")[0].strip(): line for line in out.splitlines()}
    for name in ("turns", "append", "generate", "total tokens", "mean context"):
        diff = float(rows[name].split()[-1].rstrip("%"))
        assert abs(diff) <= 5.0, rows[name]


def test_workload_writes_jsonl_that_reads_back(capsys, tmp_path):
    path = tmp_path / "w.jsonl"
    assert run(capsys, "workload", "--workload", "agentic-32k", "--agents", "20", "--jsonl", str(path))[0] == 0
    code, out, _ = run(capsys, "workload", "--workload", str(path), "--stats")
    assert code == 0 and "20 agents" in out


@pytest.mark.parametrize("argv, needle", [
    (["info", "--model", "gpt-17"], "deepseek-v3.2"),  # unknown preset lists valid names
    (["info", "--cluster", "2X4"], "xPyD"),
    (["workload", "--agents", "0"], "agents"),
    (["workload", "--workload", "/no/such/file.jsonl"], "file.jsonl"),
    (["simulate-nothing"], "invalid choice"),
])
def test_bad_input_is_one_line_and_exit_2(capsys, argv, needle):
    code, _out, err = run(capsys, *argv)
    assert code == 2
    assert needle in err and err.count("\n") == 1 and "Traceback" not in err


def test_bad_cluster_file_names_file_and_line(capsys, tmp_path):
    path = tmp_path / "c.toml"
    path.write_text("prefill_nodes = 1\ndecode_nodes = 1\n[node]\nsnic_gbps = -400\n")
    code, _, err = run(capsys, "info", "--cluster", str(path))
    assert code == 2 and f"{path}:4" in err and "snic_gbps" in err and "-400" in err


def test_verify_paper_config_holds_and_broken_ones_fail(capsys, tmp_path):
    paper = example("paper")
    code, out, _ = run(capsys, "verify", "--opensm", str(paper["opensm"]), "--traffic", str(paper["traffic"]),
                       "--roce", str(paper["roce"]), "--json", str(tmp_path / "r.json"))
    assert code == 0 and "all hold" in out.splitlines()[-1]
    report = json.loads((tmp_path / "r.json").read_text())
    assert {p["status"] for p in report["properties"]} == {"proved"} and report["summary"]
    name, _expect = broken_examples()[0]
    files = example(name)
    argv = ["verify", "--opensm", str(files["opensm"]), "--traffic", str(files["traffic"]), "--quiet"]
    if files["roce"].exists():
        argv += ["--roce", str(files["roce"])]
    code, out, _ = run(capsys, *argv)
    assert code == 1 and "violated" in out


@pytest.mark.slow
def test_demo_runs_quickly(capsys, tmp_path):
    code, out, _ = run(capsys, "demo", "--quick", "--out", str(tmp_path))
    assert code == 0 and "18 proved" in out


def test_simulate_writes_results_and_plots(capsys, tmp_path):
    code, out, _ = run(capsys, "simulate", "--cluster", "2P4D", "--model", "ds-27b", "--agents", "6",
                       "--policy", "basic,dualpath", "--json", str(tmp_path / "s.json"), "--out", str(tmp_path))
    assert code == 0 and "dualpath" in out
    rows = json.loads((tmp_path / "s.json").read_text())["results"]
    assert [r["policy"] for r in rows] == ["basic", "dualpath"]
    assert all(r["jct_s"] > 0 and r["agents"] == 6 for r in rows)
    assert rows[0]["read_bytes_de"] == 0  # basic reads on the PE side only
    assert (tmp_path / "jct.png").stat().st_size > 0


def test_simulate_online_reports_the_steady_state_percentiles(capsys, tmp_path):
    code, out, _ = run(capsys, "simulate", "--cluster", "1P1D", "--model", "ds-27b", "--workload", "agentic-32k",
                       "--aps", "0.03", "--window", "30", "--policy", "dualpath", "--json", str(tmp_path / "o.json"))
    assert code == 0
    for header in ("TTFT p50 (s)", "TTST p90 (s)", "TPOT p99 (ms)", "SLO attain", "steady window (s)"):
        assert header in out
    payload = json.loads((tmp_path / "o.json").read_text())
    row = payload["results"][0]
    assert row["aps"] == 0.03 and row["steady_state_found"] and 0 <= row["slo_attainment"] <= 1
    # The agents follow from the rate and the horizon (warm-up + window), not a fixed 500.
    assert row["agents"] == pytest.approx(0.03 * payload["arrival_horizon_s"], rel=0.5)


def test_simulate_replays_a_timed_trace_online(capsys, tmp_path):
    trace = tmp_path / "t.jsonl"
    # 60 requests, 2 per second, each sharing a growing prefix of 512-token blocks with the earlier ones.
    rows = [{"timestamp": 500 * i, "input_length": 512 * (4 + i // 8), "output_length": 20,
             "hash_ids": list(range(4 + i // 8))} for i in range(60)]
    trace.write_text("".join(json.dumps(r) + "\n" for r in rows))
    code, out, _ = run(capsys, "simulate", "--cluster", "1P1D", "--model", "ds-27b", "--workload", f"mooncake:{trace}",
                       "--policy", "basic,dualpath", "--json", str(tmp_path / "r.json"))
    assert code == 0 and "TTFT p99 (s)" in out and "trace" in out
    result = json.loads((tmp_path / "r.json").read_text())["results"][0]
    assert result["aps"] is None and result["ttft_p90_s"] > 0 and "slo_met" in result


def test_simulate_refuses_a_rate_for_a_trace_of_requests(capsys, tmp_path):
    trace = tmp_path / "t.jsonl"
    trace.write_text(json.dumps({"timestamp": 0, "input_length": 100, "output_length": 5, "hash_ids": [0]}) + "\n")
    code, _, err = run(capsys, "simulate", "--workload", f"mooncake:{trace}", "--aps", "1")
    assert code == 2 and "arrival times" in err and len(err.strip().splitlines()) == 1
    assert run(capsys, "simulate", "--aps", "1", "--window", "0")[0] == 2


def test_plan_reports_gap_and_writes_json(capsys, tmp_path):
    code, out, _ = run(capsys, "plan", "--cluster", "1P1D", "--model", "ds-27b", "--batch", "20",
                       "--solver", "ortools", "--time-limit", "5", "--json", str(tmp_path / "p.json"))
    assert code == 0 and "gap to the fluid bound" in out and "executed JCT (s)" in out and "makespan" not in out
    plan = json.loads((tmp_path / "p.json").read_text())
    assert len(plan["assignments"]) == 20 and plan["gap"] >= 0
    assert plan["fluid_bottleneck_s"] <= plan["greedy_fluid_bottleneck_s"] * (1 + 1e-9)
    # Executed, the plan takes longer than its fluid bottleneck (decode, read -> prefill order, batching).
    assert plan["executed_jct_s"] > plan["fluid_bottleneck_s"]
    code, out, _ = run(capsys, "plan", "--cluster", "1P1D", "--model", "ds-27b", "--batch", "20", "--no-execute",
                       "--json", str(tmp_path / "q.json"))
    assert code == 0 and json.loads((tmp_path / "q.json").read_text())["executed_jct_s"] is None


def test_simulate_and_plan_refuse_bad_values(capsys):
    assert run(capsys, "simulate", "--policy", "fastest")[0] == 2
    assert run(capsys, "plan", "--batch", "0")[0] == 2
    assert run(capsys, "plan", "--solver", "cplex", "--batch", "5")[0] == 2


SIM = ("simulate", "--cluster", "1P1D", "--model", "ds-27b", "--agents", "4")


def test_simulate_json_to_stdout_is_versioned_and_alone(capsys):
    code, out, err = run(capsys, *SIM, "--policy", "basic,dualpath", "--json", "-")
    assert code == 0
    doc = json.loads(out)  # stdout carries the JSON only: the table went to stderr
    assert doc["kind"] == "simulate" and doc["schema_version"] == 1 and "JCT" in err
    row = doc["results"][0]
    for name in ("ttft", "ttst", "tpot"):
        for stat in ("mean", "p50", "p90", "p99"):
            assert row[f"{name}_{stat}_s"] >= 0
    assert row["ttft_p50_s"] <= row["ttft_p90_s"] <= row["ttft_p99_s"]
    assert 0 <= row["slo_attainment"] <= 1 and row["goodput_requests_per_s"] >= 0


def test_simulate_jobs_match_the_serial_run_and_old_slo_flags_still_parse(capsys, tmp_path):
    code, _, _ = run(capsys, *SIM, "--policy", "basic,dualpath", "--json", str(tmp_path / "a.json"))
    assert code == 0
    code, _, err = run(capsys, *SIM, "--policy", "basic,dualpath", "--jobs", "2", "--ttft-slo", "0.001",
                       "--tpot-slo", "0.001", "--json", str(tmp_path / "b.json"))
    assert code == 0 and "deprecat" not in err
    serial, pooled = (json.loads((tmp_path / f"{n}.json").read_text()) for n in "ab")
    assert [r["jct_s"] for r in serial["results"]] == [r["jct_s"] for r in pooled["results"]]
    assert pooled["slo_ttft_s"] == 0.001 and all(r["slo_attainment"] == 0 for r in pooled["results"])
    assert run(capsys, *SIM, "--jobs", "0")[0] == 2


def test_json_files_honour_the_umask_and_keep_links(tmp_path):
    import os

    from dualpath.jsonio import versioned, write_json_atomic

    old = os.umask(0o027)
    try:
        write_json_atomic(tmp_path / "new.json", versioned("x", {}))
    finally:
        os.umask(old)
    assert (tmp_path / "new.json").stat().st_mode & 0o777 == 0o640
    (tmp_path / "link.json").symlink_to(tmp_path / "new.json")
    write_json_atomic(tmp_path / "link.json", versioned("x", {"a": 1}))
    assert (tmp_path / "link.json").is_symlink() and json.loads((tmp_path / "new.json").read_text())["a"] == 1
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)  # a reader, so opening for writing does not block
    try:
        write_json_atomic(fifo, versioned("x", {"b": 2}))
        assert json.loads(os.read(reader, 1 << 16))["b"] == 2 and fifo.is_fifo()
    finally:
        os.close(reader)


def test_plan_sweep_and_verify_json_carry_kind_and_schema_version(capsys, tmp_path):
    code, out, _ = run(capsys, "plan", "--cluster", "1P1D", "--model", "ds-27b", "--batch", "10",
                       "--solver", "greedy", "--json", "-")
    assert code == 0 and json.loads(out)["kind"] == "plan"
    code, out, _ = run(capsys, "plan", "--cluster", "1P1D", "--model", "ds-27b", "--batch", "10", "--sweep", "pd",
                       "--gpus", "16", "--json", "-")
    doc = json.loads(out)
    assert code == 0 and doc["kind"] == "pd_sweep" and doc["schema_version"] == 1
    paper = example("paper")
    code, out, _ = run(capsys, "verify", "--opensm", str(paper["opensm"]), "--traffic", str(paper["traffic"]),
                       "--json", "-")
    doc = json.loads(out)
    assert doc["kind"] == "verification_report" and isinstance(doc["schema_version"], int)


def test_help_shows_examples_and_defaults(capsys):
    code, out, _ = run(capsys, "--help")
    assert code == 0 and "examples:" in out and "main(argv)" not in out
    code, out, _ = run(capsys, "simulate", "--help")
    assert code == 0 and "examples:" in out and "(default: 0)" in out and "--slo-ttft-s" in out
    assert "--ttft-slo" not in out  # the deprecated spelling parses but is not advertised


def test_a_closed_pipe_is_not_a_traceback():
    # `dualpath ... | head -1`: the reader goes away after one line.
    cmd = f"{sys.executable} -m dualpath.cli workload --workload agentic-64k --agents 50 --stats | head -1"
    out = subprocess.run(["bash", "-o", "pipefail", "-c", cmd], capture_output=True, text=True, timeout=120)
    assert out.stdout.startswith("workload agentic-64k") and "Traceback" not in out.stderr
