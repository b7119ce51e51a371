"""`run_real` and `dualpath run`: real engines per the cluster model, traces in the simulator's format."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("torch")

from dualpath import cli
from dualpath.cluster import Role
from dualpath.errors import SpecError
from dualpath.plan import Assignment, Plan
from dualpath.runtime.scheduling.realrun import decoder_fields, run_real, runtime_for
from dualpath.solver.policies import make_policy
from dualpath.trace import Trace
from tests.paths import EXAMPLES
from tests.runtime.cases import BT, LLM, NODE, cluster, workload


@pytest.fixture
def commands(monkeypatch):
    """`run` and `engine` in the CLI (the lead wires them; patched here when not yet)."""
    monkeypatch.setitem(cli.COMMANDS, "run", cli.COMMANDS.get("run", ("dualpath.cli_run", "run on real engines")))
    monkeypatch.setitem(cli.COMMANDS, "engine", cli.COMMANDS.get("engine", ("dualpath.cli_run", "one engine")))


def test_the_decoder_is_the_llm_spec():
    from dualpath.models.llms import llm_preset
    from dualpath.runtime.engines.decoder import DecoderConfig
    from dualpath.runtime.engines.kvcodec import KVCodec

    for llm in (LLM, llm_preset("tiny"), llm_preset("qwen2.5-7b")):
        fields = decoder_fields(llm)
        layout = KVCodec.for_model(DecoderConfig(**fields), BT).layout
        assert layout.kv_bytes_per_token == llm.kv_bytes_per_token
    assert decoder_fields(llm_preset("qwen2.5-7b"))["attention_bias"] is True
    assert decoder_fields(llm_preset("tiny"))["intermediate_size"] == 256
    with pytest.raises(SpecError, match="attention"):
        decoder_fields(llm_preset("deepseek-v3.2"))


def test_engines_are_named_and_placed_as_the_cluster_model():
    spec = cluster(2, 1)
    with runtime_for(spec, LLM, workload(2, 2), BT, in_process=True).start() as runtime:
        assert {(h.name, h.role.value, h.node) for h in runtime.handles.values()} == {
            ("PE0", "prefill", "P0"), ("PE1", "prefill", "P1"), ("DE0", "decode", "D0")}
        options = runtime.options(spec.engines(Role.PREFILL)[0])
        assert options.snic_bytes_per_s == spec.node.snic_bytes_per_s and options.cnic_centric


def test_a_plan_is_replayed_on_its_engines():
    spec, w = cluster(1, 2), workload(3, 3)
    kv = LLM.kv_bytes_per_token
    plan = Plan("hand", "feasible", [Assignment(r.id, "PE0", f"DE{r.agent % 2}", r.hit_tokens * kv, 0, order=i)
                                     for i, r in enumerate(w.requests)], 1.0, 1.0)
    trace = run_real(spec, LLM, w, plan, in_process=True, verify=True, timeout_s=60, block_tokens=BT)
    assert trace.meta["wrong_turns"] == [] and len(trace.records) == 9
    assert all(r.de == f"DE{r.agent % 2}" and r.de_read_bytes == 0 for r in trace.records)
    assert trace.policy == "plan:hand"


def test_the_oracle_cannot_run_for_real():
    spec = cluster(1, 1)
    with pytest.raises(SpecError, match="zero_io"):
        run_real(spec, LLM, workload(1, 1), make_policy("oracle", spec, LLM, BT), in_process=True)


@pytest.mark.slow
def test_dualpath_run_writes_results_and_traces(commands, tmp_path, capsys):
    out_json, out_dir = tmp_path / "run.json", tmp_path / "plots"
    code = cli.main(["run", "--cluster", str(EXAMPLES / "clusters" / "local-1p1d.toml"), "--model", "tiny",
                     "--workload", "agentic-64k", "--agents", "2", "--turns", "3", "--scale", "64",
                     "--policy", "layerwise,dualpath", "--verify", "--json", str(out_json), "--out", str(out_dir),
                     "--in-process"])
    printed = capsys.readouterr().out
    assert code == 0, printed
    data = json.loads(out_json.read_text())
    assert [r["policy"] for r in data["results"]] == ["layerwise", "dualpath"]
    for row in data["results"]:
        for key in ("jct_s", "tokens_per_s", "ttft_p50_s", "ttft_p99_s", "tpot_mean_s"):
            assert row[key] > 0
        assert set(row["snic_read_bytes"]) == {"P0", "D0"} and row["wrong_turns"] == [] and row["lost_turns"] == 0
        trace = Trace.from_json(row["trace"])
        assert trace.executor == "runtime" and len(trace.records) == 4
        assert {"P0.snic", "D0.snic", "P0.cnic_in", "D0.cnic_in"} <= set(trace.utilisation)
    layerwise = data["results"][0]
    assert layerwise["snic_read_bytes"]["D0"] == 0 and layerwise["snic_read_bytes"]["P0"] > 0  # PE reads only
    assert "layerwise: JCT" in printed
    assert (out_dir / "jct.png").exists() and (out_dir / "runtime_dualpath.trace.json").exists()


def test_a_profile_of_the_engines_calibrates_the_simulator():
    from argparse import Namespace

    from dualpath.cli_run import predict
    from dualpath.cli_run_profile import profile_engines

    spec, w = cluster(1, 1), workload(2, 3)
    with runtime_for(spec, LLM, w, BT, in_process=True).start() as runtime:
        # Three sizes, medians of 5: on a loaded machine one noisy timing must not flatten the fit.
        profile = profile_engines(runtime, LLM, sizes=(16, 128, 256), hit_blocks=(8, 24), repeats=5)
        assert list(runtime.store_dir.iterdir()) == []  # the profile leaves storage empty
    assert profile.cost.prefill_mfu > 0 and profile.cost.decode_mfu > 0 and profile.rdma_submit_s >= 0
    assert {row[0] for row in profile.rows} == {"fresh", "hit", "decode step"}
    assert profile.calibration().rdma_submit_s == profile.rdma_submit_s
    args = Namespace(warm_turns=1, aps=None, seed=0)
    predicted = predict(spec, LLM, profile, w, "dualpath", None, BT, args)
    assert predicted["jct_s"] > 0 and set(predicted["snic_read_bytes"]) == {"P0", "D0"}


def test_the_per_block_cost_is_recovered_from_the_layerwise_step():
    from dualpath.cli_run_profile import _fit_submit

    true_s = 2e-4
    layers, kv, cnic = LLM.num_layers, LLM.kv_bytes_per_token, NODE.cnic_bytes_per_s

    def step(hit, new, path):  # the simulator's layerwise step, written out
        c = LLM.prefill_time_s([(hit * BT, new)]) / layers
        t = max(hit * BT * kv / cnic, hit * layers * true_s) / layers
        out_blocks = -(-new // BT) + (hit if path == "pe" else 0)
        o = max((new + (hit * BT if path == "pe" else 0)) * kv / cnic, out_blocks * layers * true_s) / layers
        return t + c + o + (layers - 1) * max(t, c, o)

    hits = [(h, 32, p, step(h, 32, p)) for h in (8, 24, 48) for p in ("pe", "de")]
    assert _fit_submit(LLM, NODE, BT, hits) == pytest.approx(true_s, rel=0.03)


def test_dualpath_engine_takes_the_engine_flags(commands, capsys):
    assert cli.main(["engine", "--role", "sideways", "--name", "x", "--store", "/tmp/x"]) == 2
    assert "sideways" in capsys.readouterr().err


@pytest.mark.parametrize("argv, needle", [
    (["--policy", "fastest"], "policy"),
    (["--inject", "kill-engine:DE7@1s"], "DE7"),
    (["--inject", "meteor"], "kill-engine:ENGINE@SECONDS"),
    (["--turns", "2", "--warm-turns", "2"], "--warm-turns"),
    (["--model", "deepseek-v3.2"], "dense"),
])
def test_dualpath_run_refuses_bad_input_in_one_line(commands, capsys, argv, needle):
    code = cli.main(["run", "--cluster", str(EXAMPLES / "clusters" / "local-1p1d.toml"), "--agents", "2",
                     *argv])
    err = capsys.readouterr().err
    assert code == 2 and needle in err and err.count("\n") == 1, err


def test_engine_options_round_trip_through_the_command_line(monkeypatch):
    from dualpath.runtime.engine import EngineOptions
    from dualpath.runtime.engine_cli import parse_args

    monkeypatch.setenv("DUALPATH_SECRET", "ab" * 16)
    options = EngineOptions(role="decode", name="DE3", store_dir="/tmp/s", node="D1", snic_bytes_per_s=25e6,
                            cnic_bytes_per_s=2e9, cnic_centric=True, corrupt_block_rate=0.01, fault_seed=4,
                            kv_dtype="float16", buffer_blocks=77, send_credits=1, hbm_bytes=12345)
    assert parse_args(options.to_args())[0] == options
