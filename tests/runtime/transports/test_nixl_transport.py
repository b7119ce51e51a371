"""NIXL backend: encodings and notice ordering (pure Python, always), and what the shared contract in
test_tcp_transport.py does not cover (post order, threads, a killed peer), which needs nixl_cu12.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from dualpath.errors import MissingExtraError
from dualpath.runtime.engines.buffers import Memory
from dualpath.runtime.transports.nixl_agent import nixl_module
from dualpath.runtime.transports.nixl_poller import Group, NixlPost, NixlTicket, plan_writes
from dualpath.runtime.transports.nixl_transport import unavailable_reason
from dualpath.runtime.transports.nixl_wire import Hello, NixlPeer, NixlRegion, Notice
from dualpath.runtime.transports.ratelimit import KV_LANE, MODEL_LANE
from dualpath.runtime.transports.session import Session
from dualpath.runtime.transports.transport import CopyOp, TransportError, WriteOp, create_transport
from tests.cuda import needs_cuda
from tests.runtime.transports.cases import connected_pair

pytestmark = pytest.mark.nixl  # its own pytest process: see tests/conftest.py

SECRET = b"test-cluster-secret-0123456789"
REASON = unavailable_reason()
needs_nixl = pytest.mark.skipif(REASON is not None, reason=f"nixl backend: {REASON}")
TOKEN = bytes(range(16))


def test_hello_region_and_notice_round_trip():
    hello = Hello("e0-123-abcd", 7, TOKEN, b"\x00md\xff" * 50)
    assert Hello.decode(hello.encode()) == hello
    region = NixlRegion("kv", 3, 1 << 30, 0x7F00_0000_1000, 1, True, b"meta")
    assert NixlRegion.decode(region.encode()) == region
    notice = Notice(9, TOKEN, 2**40, ((42, 3, 1000, 4096), (2**32 - 1, 3, 0, 0)))
    assert Notice.decode(notice.encode()) == notice


@pytest.mark.parametrize("cls", [Hello, NixlRegion, Notice])
def test_malformed_messages_are_refused(cls):
    good = {Hello: Hello("x", 1, TOKEN, b"m"), NixlRegion: NixlRegion("kv", 1, 8, 0, 0, False, b"m"),
            Notice: Notice(1, TOKEN, 0, ((1, 1, 0, 8),))}[cls].encode()
    for bad in (good[:5], good + b"x", b"XXXX" + good[4:]):
        with pytest.raises(TransportError):
            cls.decode(bad)


def _peer() -> NixlPeer:
    mine, theirs = Hello("me", 5, TOKEN, b""), Hello("them", 8, bytes(16), b"")
    return NixlPeer("b", None, Session.untagged(), "them", mine, theirs)  # type: ignore[arg-type]


def test_notices_are_delivered_in_post_order_whatever_order_they_arrive_in():
    peer = _peer()
    names = {3: "kv"}
    arrivals = list(range(50))
    random.Random(4).shuffle(arrivals)
    delivered = []
    for seq in arrivals:
        delivered += [c.imm for c in peer.accept(Notice(5, TOKEN, seq, ((seq, 3, seq * 8, 8),)), names)]
    assert delivered == list(range(50))
    assert peer.accept(Notice(5, TOKEN, 50, ()), names) == []  # a post without immediates
    done = peer.accept(Notice(5, TOKEN, 51, ((7, 3, 64, 8),)), names)[0]
    assert (done.peer, done.region, done.offset, done.nbytes, done.imm) == ("b", "kv", 64, 8, 7)


def test_notices_with_a_wrong_token_or_replayed_are_refused():
    peer = _peer()
    with pytest.raises(TransportError, match="wrong token"):
        peer.accept(Notice(5, bytes(16), 0, ()), {})
    peer.accept(Notice(5, TOKEN, 0, ()), {})
    with pytest.raises(TransportError, match="replay"):
        peer.accept(Notice(5, TOKEN, 0, ()), {})


def test_missing_extra_is_one_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "nixl_cu12", None)  # what an install without the extra looks like
    with pytest.raises(MissingExtraError, match=r"install the 'nixl' extra"):
        nixl_module()
    with pytest.raises(MissingExtraError, match="nixl"):
        create_transport("nixl", "a", SECRET)


def test_import_dualpath_does_not_load_nixl():
    code = ("import sys, dualpath, dualpath.runtime.transports.transport, dualpath.runtime.transports.nixl_transport; "
            "assert 'nixl_cu12' not in sys.modules, 'nixl_cu12 loaded'")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


@pytest.fixture
def pair():
    with connected_pair("nixl", limited=True) as connected:
        yield connected


@needs_nixl
def test_completions_follow_post_order_and_name_region_and_offset(pair):
    a, b, peer = pair
    dst = b.register("kv", Memory.allocate(256 * 1024))
    src = a.register("src", Memory.wrap(bytearray(random.Random(2).randbytes(256 * 1024))))
    remote = a.remote_region(peer, "kv")
    tickets = [a.post([WriteOp(remote, i * 1024, src, i * 1024, 1024, imm=i)]) for i in range(256)]
    for ticket in tickets:
        ticket.wait(10)
    deadline, got = time.monotonic() + 10, []
    while len(got) < 256 and time.monotonic() < deadline:
        got += b.poll()
        time.sleep(0.001)
    assert [c.imm for c in got] == list(range(256))
    assert (got[5].region, got[5].offset, got[5].nbytes, got[5].peer) == ("kv", 5 * 1024, 1024, "a")
    assert dst.memory.view == src.memory.view


@needs_nixl
def test_empty_writes_still_deliver_their_immediate_and_lanes_are_counted(pair):
    a, b, peer = pair
    b.register("kv", Memory.allocate(64))
    src = a.register("src", Memory.allocate(64))
    remote = a.remote_region(peer, "kv")
    a.write(remote, 0, src, 0, 0, imm=77)
    assert b.wait(77, timeout_s=10).nbytes == 0
    a.write(remote, 0, src, 0, 8, lane=MODEL_LANE)
    assert a.limiter.stats[MODEL_LANE].granted_bytes == 8
    with pytest.raises(TransportError, match="registered regions"):
        a.post([WriteOp(remote, 0, b"plain bytes")])


@needs_nixl
def test_many_threads_posting_and_local_copies(pair):
    a, b, peer = pair
    dst = b.register("kv", Memory.allocate(64 * 4096))
    srcs = [a.register(f"src{k}", Memory.wrap(bytearray([k]) * 4096)) for k in range(4)]
    remote = a.remote_region(peer, "kv")
    errors: list[Exception] = []

    def worker(k: int) -> None:
        try:
            for j in range(16):
                a.write(remote, (k * 16 + j) * 4096, srcs[k], timeout_s=10)
        except TransportError as exc:  # collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert all(dst.memory.view[(k * 16 + 15) * 4096] == k for k in range(4))
    back = a.register("back", Memory.allocate(4096))
    a.copy_local([CopyOp(back, 0, srcs[3], 0, 4096, lane=KV_LANE)])
    assert back.memory.view == srcs[3].memory.view


@needs_nixl
def test_a_post_of_several_requests_runs_them_in_turn_and_notifies_after_the_last(pair):
    # A post mixing host and GPU memory is one request per run of like memory; this runs that chain
    # on host memory (no GPU here) by splitting a planned post in two.
    a, b, peer = pair
    dst = b.register("kv", Memory.allocate(1 << 20))
    src = a.register("src", Memory.wrap(bytearray(random.Random(6).randbytes(1 << 20))))
    remote = a.remote_region(peer, "kv")
    conn = a._peers.get(peer)
    ops = [WriteOp(remote, i << 16, src, i << 16, 1 << 16, imm=3 if i == 15 else None) for i in range(16)]
    (group,), entries, total = plan_writes("a", conn, ops)
    halves = [Group(group.local[:8], group.local_kind, group.dest[:8], group.dest_kind),
              Group(group.local[8:], group.local_kind, group.dest[8:], group.dest_kind)]
    ticket = NixlTicket(peer, len(ops), total, a.poller)
    with conn.post_lock:
        notice = Notice(conn.out_conn_id, conn.out_token, conn.next_seq, tuple(entries)).encode()
        a.poller.submit(NixlPost(conn, ticket, halves, notice))
        conn.next_seq += 1
    ticket.wait(10)
    assert b.wait(3, timeout_s=10).offset == 15 << 16
    assert dst.memory.view == src.memory.view


RECEIVER = textwrap.dedent(
    """
    import sys
    from dualpath.runtime.engines.buffers import Memory
    from dualpath.runtime.transports.transport import create_transport
    t = create_transport("nixl", "victim", sys.argv[1].encode())
    t.register("kv", Memory.allocate(1 << 20))
    print(t.listen()[1], flush=True)
    sys.stdin.read()
    """
)


@needs_nixl
def test_a_killed_peer_runs_disconnect_handlers_and_fails_writes():
    proc = subprocess.Popen([sys.executable, "-c", RECEIVER, SECRET.decode()], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    a = create_transport("nixl", "a", SECRET)
    try:
        peer = a.connect(("127.0.0.1", int(proc.stdout.readline())))
        remote = a.remote_region(peer, "kv")
        src = a.register("src", Memory.allocate(1 << 20))
        a.write(remote, 0, src, imm=1)
        lost = []
        a.on_disconnect(lambda who, err: lost.append((who, str(err))))
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        deadline = time.monotonic() + 10
        while not lost and time.monotonic() < deadline:
            time.sleep(0.01)
        assert lost and lost[0][0] == "victim" and "lost" in lost[0][1]
        with pytest.raises(TransportError, match="not connected"):
            a.post([WriteOp(remote, 0, src)])
        assert a.peers() == []
    finally:
        a.close()
        a.close()  # idempotent
        if proc.poll() is None:
            proc.kill()



@needs_nixl
@pytest.mark.gpu
@needs_cuda  # a CUDA tensor region is NIXL VRAM
def test_writes_between_gpu_and_host_memory_in_one_post(pair):
    import torch

    a, b, peer = pair
    hbm = b.register("hbm", Memory.allocate(2 << 20, "cuda:0", host=False))
    gpu_src = a.register("gpu", Memory.wrap(torch.arange(1 << 20, dtype=torch.uint8, device="cuda:0")))
    host_src = a.register("host", Memory.wrap(bytearray(b"\x07") * (1 << 20)))
    remote = a.remote_region(peer, "hbm")
    a.post([WriteOp(remote, 0, gpu_src), WriteOp(remote, 1 << 20, host_src, imm=5)]).wait(30)
    b.wait(5, timeout_s=30)
    assert torch.equal(hbm.memory.tensor[: 1 << 20], gpu_src.memory.tensor)
    assert int(hbm.memory.tensor[(1 << 20) :].sum()) == 7 << 20


@needs_nixl
def test_dualpath_run_over_nixl_matches_tcp_and_a_full_recompute(tmp_path):
    from dualpath.cli import main

    outputs = {}
    for kind in ("nixl", "tcp"):
        out = tmp_path / f"{kind}.json"
        assert main(["run", "--cluster", "1P1D", "--model", "tiny", "--agents", "2", "--turns", "2", "--scale", "256",
                     "--policy", "dualpath", "--in-process", "--verify", "--transport", kind, "--json", str(out)]) == 0
        result = json.loads(out.read_text())["results"][0]
        assert result["wrong_turns"] == [] and result["lost_turns"] == 0
        records = sorted(result["trace"]["records"], key=lambda r: r["request"])
        assert any(r["pe_read_bytes"] for r in records)  # a turn whose KV went PE -> DE over the transport
        outputs[kind] = [(r["request"], r["output_tokens"]) for r in records]
    assert outputs["nixl"] == outputs["tcp"]
