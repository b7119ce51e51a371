"""Fault injection: killed engines and corrupted blocks lose no turn and change no output."""

from __future__ import annotations

import pytest

from dualpath.errors import SpecError
from dualpath.kvlayout import KVLayout
from dualpath.runtime.engines.blockstore import BlockCorruptError, BlockStore
from dualpath.runtime.engines.faults import CorruptingStore, FaultPlan, KillEngine, draw, parse_faults


def test_fault_specs_parse_to_a_plan():
    plan = parse_faults(["kill-engine:DE0@5s", "corrupt-block:0.01", "kill-engine:PE1@500ms", "kill-engine:DE1@2.5"],
                        seed=3, engines=["PE0", "PE1", "DE0", "DE1"])
    assert plan.kills == (KillEngine("PE1", 0.5), KillEngine("DE1", 2.5), KillEngine("DE0", 5.0))
    assert plan.corrupt_block_rate == 0.01 and plan.seed == 3
    assert plan.describe() == ["kill-engine:PE1@0.5s", "kill-engine:DE1@2.5s", "kill-engine:DE0@5s",
                               "corrupt-block:0.01"]
    assert FaultPlan().empty and not plan.empty


@pytest.mark.parametrize("spec,field", [("kill-engine:DE9@1s", "engine"), ("corrupt-block:1.5", "corrupt-block rate"),
                                        ("explode:DE0", "fault"), ("kill-engine:DE0", "fault")])
def test_bad_fault_specs_name_what_is_wrong(spec, field):
    with pytest.raises(SpecError) as err:
        parse_faults([spec], engines=["PE0", "DE0"])
    assert err.value.field == field


def test_draws_are_reproducible_and_spread():
    values = [draw(7, "block", i) for i in range(2000)]
    assert values == [draw(7, "block", i) for i in range(2000)]
    assert 0.45 < sum(values) / len(values) < 0.55 and 0.08 < sum(v < 0.1 for v in values) / 2000 < 0.12


def test_a_corrupted_read_is_caught_by_the_block_checksum(tmp_path):
    layout = KVLayout(num_layers=2, kv_bytes_per_token_per_layer=64, block_tokens=4)
    plain = BlockStore(tmp_path, layout)
    payload = bytes(range(256)) * (layout.full_block_bytes // 256)
    plain.write("ab" * 8, payload)
    always = CorruptingStore(tmp_path, layout, rate=1.0, seed=1)
    with pytest.raises(BlockCorruptError, match="checksum"):
        always.read("ab" * 8)
    assert always.corrupted == ["ab" * 8]
    never = CorruptingStore(tmp_path, layout, rate=1e-9, seed=1)
    plain.write("cd" * 8, payload)
    assert bytes(never.read("cd" * 8)) == payload


def test_corrupted_blocks_are_recomputed_and_every_turn_stays_right():
    pytest.importorskip("torch")
    from dualpath.runtime.scheduling.realrun import run_real, runtime_for
    from dualpath.solver.policies import make_policy
    from tests.runtime.cases import BT, LLM, cluster, workload

    spec, w = cluster(1, 1), workload(3, 4)
    faults = parse_faults(["corrupt-block:0.1"], seed=5)
    with runtime_for(spec, LLM, w, BT, in_process=True, faults=faults).start() as runtime:
        trace = run_real(spec, LLM, w, make_policy("dualpath", spec, LLM, BT), runtime=runtime, faults=faults,
                         verify=True, timeout_s=60)
        store = BlockStore(runtime.store_dir, runtime.layout, scan=False)
        for block_id in store.ids():
            store.verify(block_id)  # what was corrupted was dropped and written again from recomputed KV
    assert trace.meta["wrong_turns"] == [] and trace.meta["turns_done"] == trace.meta["turns_expected"] == 12
    assert sum(r.status == "recomputed" for r in trace.records) >= 2


def test_a_killed_prefill_engine_loses_no_turn():
    pytest.importorskip("torch")
    from dualpath.runtime.scheduling.realrun import run_real, runtime_for
    from dualpath.solver.policies import make_policy
    from tests.runtime.cases import BT, LLM, cluster, workload

    spec, w = cluster(2, 1), workload(12, 4, first=300)  # enough agents that both PEs always have work
    faults = parse_faults(["kill-engine:PE0@0.2s"], engines=["PE0", "PE1", "DE0"])
    with runtime_for(spec, LLM, w, BT, in_process=True, faults=faults).start() as runtime:
        # Round-robin: half the turns on PE0 at any time, whatever its queues (the paper's rules may idle it).
        trace = run_real(spec, LLM, w, make_policy("round-robin", spec, LLM, BT), runtime=runtime, faults=faults,
                         verify=True, timeout_s=60, warm_turns=1)
    assert trace.meta["faults_fired"][0].startswith("PE0@") and trace.meta["retried"]
    assert trace.meta["wrong_turns"] == [] and trace.meta["turns_done"] == trace.meta["turns_expected"] == 36
    killed_at = float(trace.meta["faults_fired"][0].split("@")[1][:-1])
    assert all(r.pe == "PE1" for r in trace.records if r.prefill_start_s > killed_at + 0.5)


@pytest.mark.slow
def test_a_killed_decode_engine_process_loses_no_turn():
    pytest.importorskip("torch")
    from dualpath.runtime.scheduling.realrun import run_real
    from dualpath.solver.policies import make_policy
    from tests.runtime.cases import BT, LLM, cluster, workload

    spec, w = cluster(1, 2), workload(12, 6, first=300)  # long enough to outlast the kill on a fast machine
    faults = parse_faults(["kill-engine:DE0@0.1s"], engines=["PE0", "DE0", "DE1"])
    trace = run_real(spec, LLM, w, make_policy("dualpath", spec, LLM, BT), faults=faults, verify=True,
                     timeout_s=120, warm_turns=1)  # engines are OS processes: the kill is a SIGKILL
    assert trace.meta["faults_fired"] and trace.meta["retried"]
    assert trace.meta["wrong_turns"] == [] and trace.meta["turns_done"] == trace.meta["turns_expected"] == 60
    killed_at = float(trace.meta["faults_fired"][0].split("@")[1][:-1])
    assert all(r.de == "DE1" for r in trace.records if r.arrival_s > killed_at + 0.5)


def test_an_injection_that_never_fired_is_reported_and_fails_the_run(capsys):
    pytest.importorskip("torch")
    from dualpath import cli
    from tests.paths import EXAMPLES

    code = cli.main(["run", "--cluster", str(EXAMPLES / "clusters" / "local-1p1d.toml"), "--agents", "1",
                     "--turns", "2", "--policy", "dualpath", "--in-process", "--verify", "--timeout-s", "60",
                     "--inject", "kill-engine:DE0@600s", "--inject", "corrupt-block:0.000001"])
    out, err = capsys.readouterr()
    assert code == 1, out + err
    assert "NEVER FIRED: kill-engine:DE0@600s, corrupt-block:1e-06" in out
    assert "0 turns lost, 0 wrong; injected but never fired: kill-engine:DE0@600s, corrupt-block:1e-06" in err


def test_lost_turns_are_not_wrong_turns_and_the_timeout_bounds_the_verification(monkeypatch):
    pytest.importorskip("torch")
    import time

    from dualpath.cli_run import summarise
    from dualpath.runtime.scheduling import realrun
    from dualpath.solver.policies import make_policy
    from tests.runtime.cases import BT, LLM, cluster, workload

    deadlines = []
    real_verify = realrun.verify_turns
    monkeypatch.setattr(realrun, "verify_turns", lambda logs, decoder, deadline: (
        deadlines.append(deadline), real_verify(logs, decoder, deadline))[1])
    spec, w = cluster(1, 1), workload(2, 10, first=300)  # the only DE dies: the turns after it are lost
    faults = parse_faults(["kill-engine:DE0@0.3s"], engines=["PE0", "DE0"])
    began = time.time()
    trace = realrun.run_real(spec, LLM, w, make_policy("dualpath", spec, LLM, BT), in_process=True, verify=True,
                             timeout_s=60, faults=faults, warm_turns=1)
    assert began + 60 - 1 < deadlines[0] <= time.time() + 60  # the run's own deadline, not a fresh one
    row = summarise(trace, 1.0, 0.1)
    assert trace.meta["faults_fired"] and row["faults_unfired"] == []
    assert row["lost_turns"] == 18 - trace.meta["turns_done"] > 0 and trace.meta["failed_turns"]
    assert row["wrong_turns"] == []  # every completed turn is right; the lost ones are not "wrong"
