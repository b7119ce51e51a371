"""Group leaders fetch work from the scheduler: the outbox holds a group's work until its leader
fetches it, stale reports get no work, and a lost leader's turns are requeued and its group led on."""

from __future__ import annotations

import time

import pytest

from dualpath.cluster import ClusterSpec, NodeSpec, Role
from dualpath.errors import DualpathError
from dualpath.models.llms import llm_preset
from dualpath.plan import Assignment
from dualpath.policy import Policy
from dualpath.runtime.engines.messages import Done, Fetch, TurnResult, decode_message
from dualpath.runtime.scheduling.scheduler import EngineHandle, Scheduler
from dualpath.runtime.transports.auth import generate_secret
from dualpath.runtime.transports.control import connect

LLM = llm_preset("tiny")
BT = 16
TIMEOUT_S = 10.0
PE_REPORT = {"read_queue_bytes": 0, "requests": {}}
DE_REPORT = {"read_queue_bytes": 0, "requests": {}, "free_hbm_bytes": 10**9}


class FirstLive(Policy):
    """Every waiting request to the first live PE and DE, whole hit through the PE; keeps the states."""

    name = "first-live"

    def __init__(self, cluster_spec):
        super().__init__(cluster_spec, LLM, BT)
        self.states = []

    def schedule(self, pending, state):
        self.states.append(state)
        pe, de = state.of_role(Role.PREFILL)[0], state.of_role(Role.DECODE)[0]
        return [Assignment(r.id, pe.name, de.name, r.hit_tokens * LLM.kv_bytes_per_token, 0) for r in pending]


def until(condition, what: str, timeout_s: float = TIMEOUT_S):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.01)
    pytest.fail(f"timed out waiting for {what}")


@pytest.fixture
def sched():
    """A scheduler over PE0+PE1 (one group) and DE0, no engines behind them: the test plays the leaders."""
    spec = ClusterSpec(2, 1, node=NodeSpec(num_gpus=1), pe_group_gpus=2, de_group_gpus=1, name="fake")
    handles = [EngineHandle("PE0", Role.PREFILL, "P0", 0, ("127.0.0.1", 9)),
               EngineHandle("PE1", Role.PREFILL, "P1", 0, ("127.0.0.1", 10)),
               EngineHandle("DE0", Role.DECODE, "D0", 0, ("127.0.0.1", 11))]
    secret = generate_secret()
    scheduler = Scheduler(handles, FirstLive(spec), client=None, block_tokens=BT, hit_blocks=lambda tokens: 2,
                          interval_s=0.01, health_timeout_s=1.0, secret=secret).start()
    leaders = []

    def leader(name):
        channel = connect(scheduler.address, secret, f"{name}-leader")
        leaders.append(channel)
        return channel

    yield scheduler, leader
    for channel in leaders:
        channel.close()
    scheduler.close()


def fetch(channel, engine, reports, wait=False):
    return channel.call(Fetch(engine, reports, wait), timeout_s=TIMEOUT_S)[0]


def result_of(a):
    return TurnResult(a["attempt"], [7, 8], 32, "pe", a["pe"], a["de"], 1, {"arrival": 0.0})


def test_the_outbox_holds_a_groups_work_until_its_leader_fetches_it(sched):
    scheduler, leader = sched
    future = scheduler.submit("a0t1", 0, 1, list(range(40)), 2)
    time.sleep(0.1)  # no leader has reported: nobody may take work
    assert "a0t1" in scheduler.pending and not scheduler.outbox.filed and scheduler.num_ticks == 0
    pe0, pe1, de0 = leader("PE0"), leader("PE1"), leader("DE0")
    assert fetch(pe1, "PE1", {"PE1": PE_REPORT}) == {"leader": False, "retry_s": pytest.approx(0.25)}
    reply = fetch(pe0, "PE0", {"PE0": PE_REPORT, "PE1": PE_REPORT})
    assert reply["leader"] and reply["assignments"] == [] and set(reply["members"]) == {"PE0", "PE1"}
    assert fetch(de0, "DE0", {"DE0": DE_REPORT})["assignments"] == []
    filed = until(lambda: scheduler.outbox.filed.get("prefill/0"), "the assignment to be filed")
    assert [t.attempt_id for t in filed] == ["a0t1"] and not scheduler.pending
    time.sleep(0.1)  # several ticks: it stays filed, nothing is pushed to an engine
    assert [t.attempt_id for t in scheduler.outbox.filed["prefill/0"]] == ["a0t1"] and not future.done()
    (a,) = fetch(pe0, "PE0", {"PE0": PE_REPORT, "PE1": PE_REPORT})["assignments"]
    got = (a["attempt"], a["tokens"], a["max_new_tokens"], a["pe"], a["de"])
    assert got == ("a0t1", list(range(40)), 2, "PE0", "DE0")
    assert a["pe_blocks"] == 2 and a["de_address"] == ["127.0.0.1", 11] and not scheduler.outbox.filed.get("prefill/0")
    assert de0.call(Done("a0t1", result_of(a)))[0] == {"ok": False}  # only its fetcher reports it
    assert pe0.call(Done("a0t1", result_of(a)))[0] == {"ok": True}
    outcome = future.result(TIMEOUT_S)
    assert outcome.result.tokens == [7, 8] and outcome.attempts == 1 and not scheduler.in_flight


def test_a_stale_report_gets_no_work(sched):
    scheduler, leader = sched
    pe0, de0 = leader("PE0"), leader("DE0")
    fetch(de0, "DE0", {"DE0": DE_REPORT})
    fetch(pe0, "PE0", {"PE0": PE_REPORT, "PE1": PE_REPORT})
    time.sleep(1.1)  # > health_timeout_s
    # The leaders keep fetching, but PE0 reports only itself: PE1's last report is older than 1 s.
    fetch(de0, "DE0", {"DE0": DE_REPORT})
    fetch(pe0, "PE0", {"PE0": PE_REPORT})
    assert scheduler.alive("PE0") and not scheduler.alive("PE1")
    scheduler.policy.schedule = lambda pending, state: [Assignment(r.id, "PE1", "DE0", 0, 0) for r in pending]
    scheduler.submit("a0t0", 0, 0, list(range(40)), 2)
    until(lambda: scheduler.num_ticks >= 3, "three ticks")
    assert "a0t0" in scheduler.pending and not scheduler.outbox.filed.get("prefill/0")


def test_a_lost_leader_hands_back_its_turns_and_the_next_member_leads(sched):
    scheduler, leader = sched
    pe0, de0 = leader("PE0"), leader("DE0")
    fetch(de0, "DE0", {"DE0": DE_REPORT})
    fetch(pe0, "PE0", {"PE0": PE_REPORT, "PE1": PE_REPORT})
    scheduler.submit("a0t0", 0, 0, list(range(40)), 2)
    scheduler.submit("a1t0", 1, 0, list(range(50)), 2)
    until(lambda: len(scheduler.outbox.filed.get("prefill/0", [])) == 2, "both turns filed")
    assert len(fetch(pe0, "PE0", {"PE0": PE_REPORT, "PE1": PE_REPORT})["assignments"]) == 2
    pe0.close()  # PE0's process is gone: what it fetched and did not finish goes back, in FIFO order
    until(lambda: len(scheduler.retried) == 2, "the fetched turns to be requeued")
    assert not scheduler.engines["PE0"].alive and scheduler.leader("prefill/0") == "PE1"
    assert [r for r, _ in scheduler.retried] == ["a0t0", "a1t0"]
    pe1 = leader("PE1")
    fetch(de0, "DE0", {"DE0": DE_REPORT})
    got = []
    until(lambda: got.extend(fetch(pe1, "PE1", {"PE1": PE_REPORT})["assignments"]) or len(got) == 2,
          "the requeued turns to be fetched by the new leader")
    assert [(a["attempt"], a["pe"]) for a in got] == [("a0t0~1", "PE1"), ("a1t0~1", "PE1")]
    pe1.close()  # the group's last PE: the turns fail rather than wait forever
    with pytest.raises(DualpathError, match="no prefill engine answers"):
        scheduler.submit("a2t0", 2, 0, list(range(40)), 2).result(TIMEOUT_S)


def test_engine_options_name_the_scheduler(monkeypatch):
    from dualpath.errors import SpecError
    from dualpath.runtime.engine import EngineOptions
    from dualpath.runtime.engine_cli import parse_args

    options = EngineOptions(role="prefill", name="PE0", store_dir="/tmp/s", scheduler="10.0.0.2:7000")
    assert options.scheduler_address == ("10.0.0.2", 7000)
    with pytest.raises(SpecError, match="HOST:PORT"):
        EngineOptions(role="prefill", name="PE0", store_dir="/tmp/s", scheduler="nowhere")
    monkeypatch.setenv("DUALPATH_SECRET", "ab" * 16)
    assert parse_args(options.to_args())[0] == options


def test_an_engine_started_with_a_scheduler_leads_and_reports_its_members(tmp_path):
    pytest.importorskip("torch")
    import queue
    import socket

    from dualpath.runtime.engine import EngineOptions, create_engine
    from dualpath.runtime.transports.control import ControlServer

    secret, fetches = generate_secret(), queue.Queue()
    with socket.socket() as s:  # a port nobody listens on: a member that does not answer
        s.bind(("127.0.0.1", 0))
        gone = s.getsockname()[1]

    def scheduler(channel, msg, payload):
        fetches.put(msg)
        time.sleep(0.01)
        return {"leader": True, "assignments": [], "health_timeout_s": 1.0,
                "members": {"PE0": ["127.0.0.1", 1], "PE9": ["127.0.0.1", gone]}}

    server = ControlServer("scheduler", secret, scheduler, decode_message)
    host, port = server.listen()
    engine = create_engine(EngineOptions(role="prefill", name="PE0", store_dir=str(tmp_path), max_context_tokens=256,
                                         scheduler=f"{host}:{port}"), secret)
    try:
        engine.start()
        first = fetches.get(timeout=TIMEOUT_S)
        assert isinstance(first, Fetch) and first.engine == "PE0" and first.reports["PE0"]["requests"] == {}
        second = fetches.get(timeout=TIMEOUT_S)
        assert set(second.reports) == {"PE0", "PE9"} and second.reports["PE9"] is None
    finally:
        engine.close()
        server.close()


def test_killing_a_groups_leader_engine_requeues_its_turns_and_the_run_completes_right():
    pytest.importorskip("torch")
    from dualpath.runtime.engines.faults import parse_faults
    from dualpath.runtime.scheduling.realrun import run_real, runtime_for
    from dualpath.solver.policies import make_policy
    from tests.runtime.cases import LLM as SMALL
    from tests.runtime.cases import NODE, workload

    spec = ClusterSpec(2, 1, node=NODE, pe_group_gpus=2, de_group_gpus=1, name="one-pe-group")
    w = workload(8, 3, first=300)
    faults = parse_faults(["kill-engine:PE0@0.2s"], engines=["PE0", "PE1", "DE0"])
    with runtime_for(spec, SMALL, w, BT, in_process=True, faults=faults).start() as runtime:
        trace = run_real(spec, SMALL, w, make_policy("round-robin", spec, SMALL, BT), runtime=runtime,
                         faults=faults, verify=True, timeout_s=60, warm_turns=1)
        fetched = {name: runtime._running[name].leader.num_fetched for name in ("PE0", "PE1")}
    assert fetched["PE0"] > 0 and fetched["PE1"] > 0  # PE0 led the group, then PE1 (only a leader fetches)
    assert trace.meta["faults_fired"][0].startswith("PE0@") and trace.meta["retried"]
    assert trace.meta["wrong_turns"] == [] and trace.meta["turns_done"] == trace.meta["turns_expected"] == 16
