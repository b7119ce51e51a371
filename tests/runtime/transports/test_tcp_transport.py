"""Transport contract (tcp always; verbs where an RDMA device exists; nixl where nixl_cu12 is installed) and
tcp-specific robustness."""

from __future__ import annotations

import logging
import os
import random
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from dualpath.errors import SpecError, UnknownNameError
from dualpath.protocol import Resource
from dualpath.runtime.engines.buffers import BufferPool, Memory
from dualpath.runtime.transports.nixl_transport import unavailable_reason as nixl_unavailable_reason
from dualpath.runtime.transports.ratelimit import KV_LANE, MODEL_LANE, cnic_limiter
from dualpath.runtime.transports.transport import CopyOp, TransportError, WriteOp, create_transport
from dualpath.runtime.transports.verbs_qp import device_unavailable_reason
from tests.cuda import needs_cuda
from tests.runtime.transports.cases import connected_pair

SECRET = b"test-cluster-secret-0123456789"
VERBS_SKIP = device_unavailable_reason()
NIXL_SKIP = nixl_unavailable_reason()
KINDS = ["tcp", pytest.param("verbs", marks=[pytest.mark.rdma, pytest.mark.skipif(
    VERBS_SKIP is not None, reason=f"verbs backend: {VERBS_SKIP}")]),
    pytest.param("nixl", marks=[pytest.mark.nixl, pytest.mark.skipif(
        NIXL_SKIP is not None, reason=f"nixl backend: {NIXL_SKIP}")])]


@pytest.fixture(params=KINDS)
def pair(request):
    """(a, b, name of b as seen from a): a connected to b, both closed afterwards."""
    with connected_pair(request.param) as connected:
        yield connected


def _pattern(nbytes: int, seed: int = 1) -> bytearray:
    return bytearray(random.Random(seed).randbytes(nbytes))


def test_write_with_immediate_lands_and_notifies(pair):
    a, b, peer = pair
    dst = b.register("kv", Memory.allocate(1 << 20))
    src = a.register("src", Memory.wrap(_pattern(4096)))
    remote = a.remote_region(peer, "kv")
    assert remote.nbytes == 1 << 20
    a.write(remote, 1000, src, imm=42)
    done = b.wait(42, timeout_s=10)
    assert done.imm == 42 and done.nbytes == 4096 and done.peer == "a"
    assert bytes(dst.memory.view[1000:5096]) == bytes(src.memory.view)
    assert b.poll() == []


def test_batch_of_small_scattered_writes(pair):
    a, b, peer = pair
    dst = b.register("kv", Memory.allocate(1 << 20))
    src = a.register("src", Memory.wrap(_pattern(64 * 1000, seed=3)))
    remote = a.remote_region(peer, "kv")
    # Layer blocks land 1 KiB apart, in reverse order, as a scatter into a paged buffer would.
    ops = [WriteOp(remote, (999 - i) * 1024, src, i * 64, 64, imm=7 if i == 999 else None) for i in range(1000)]
    ticket = a.post(ops)
    ticket.wait(10)
    assert ticket.done and ticket.nbytes == 64_000
    b.wait(7, timeout_s=10)
    for i in (0, 500, 999):
        landed = dst.memory.view[(999 - i) * 1024 : (999 - i) * 1024 + 64]
        assert bytes(landed) == bytes(src.memory.view[i * 64 : (i + 1) * 64])


def test_large_writes_both_directions_at_once(pair):
    a, b, peer = pair
    size = 8 << 20
    a_src, b_src = a.register("src", Memory.wrap(_pattern(size, 5))), b.register("src", Memory.wrap(_pattern(size, 7)))
    a_dst, b_dst = a.register("dst", Memory.allocate(size)), b.register("dst", Memory.allocate(size))
    to_b = a.remote_region(peer, "dst")
    to_a = b.remote_region("a", "dst")
    tickets = [a.post([WriteOp(to_b, 0, a_src)]), b.post([WriteOp(to_a, 0, b_src)])]
    for ticket in tickets:
        ticket.wait(30)
    assert a_dst.memory.view == b_src.memory.view
    assert b_dst.memory.view == a_src.memory.view


def test_unknown_region_and_out_of_bounds_writes_are_refused(pair):
    a, b, peer = pair
    b.register("kv", Memory.allocate(4096))
    src = a.register("src", Memory.allocate(8192))
    with pytest.raises(TransportError, match="no region 'nope'"):
        a.remote_region(peer, "nope", timeout_s=5)
    remote = a.remote_region(peer, "kv")
    with pytest.raises(TransportError, match="outside region 'kv'"):
        a.post([WriteOp(remote, 1, src, 0, 4096)])
    with pytest.raises(TransportError, match="32 bits"):
        a.post([WriteOp(remote, 0, src, 0, 8, imm=2**32)])


def test_peer_without_the_secret_is_refused_and_logged(pair, caplog):
    _, b, _ = pair
    intruder = create_transport(b.kind, "intruder", b"not-the-cluster-secret-at-all")
    with caplog.at_level(logging.WARNING, logger="dualpath.runtime"):
        with pytest.raises(TransportError, match=r"refused|secret"):
            intruder.connect((b.host, b.port), timeout_s=5)
        deadline = time.monotonic() + 5
        while not any("refused" in r.getMessage() for r in caplog.records) and time.monotonic() < deadline:
            time.sleep(0.01)
    intruder.close()
    assert any("refused" in r.getMessage() and "intruder" in r.getMessage() for r in caplog.records)
    assert b.peers() == ["a"]


def test_engines_bind_to_loopback_by_default(pair):
    _, b, _ = pair
    assert b.host == "127.0.0.1"


# -- tcp specifics ---------------------------------------------------------------------------------


@pytest.fixture
def tcp_pair():
    with connected_pair("tcp", limited=True) as connected:
        yield connected


def test_tcp_writes_from_plain_buffers_and_reports_offsets(tcp_pair):
    a, b, peer = tcp_pair
    b.register("kv", bytearray(256))
    a.write(a.remote_region(peer, "kv"), 16, b"hello", imm=1)
    done = b.wait(1, timeout_s=5)
    assert (done.region, done.offset, done.nbytes) == ("kv", 16, 5)
    assert bytes(b.region("kv").memory.view[16:21]) == b"hello"


def test_tcp_receiver_refuses_a_write_to_a_deregistered_region(tcp_pair):
    a, b, peer = tcp_pair
    b.register("kv", bytearray(256))
    remote = a.remote_region(peer, "kv")
    b.deregister("kv")
    with pytest.raises(TransportError, match=r"refused a write: .*no such region"):
        a.write(remote, 0, b"x" * 10, timeout_s=5)
    assert b.peers() == ["a"]  # the connection survives a refused write


def test_tcp_sender_fails_clearly_and_frees_buffers_when_the_peer_disconnects_mid_transfer():
    slow = cnic_limiter("a", 10e6)  # 10 MB/s: the 5 MB post below takes 0.5 s
    a = create_transport("tcp", "a", SECRET, limiter=slow)
    b = create_transport("tcp", "b", SECRET)
    b.listen()
    peer = a.connect(b.address)
    pool = BufferPool()
    pool.add_paged(Resource.PE_BUFFER, "pe-node", 1 << 20, 8)
    pool.acquire("req-1", [(Resource.PE_BUFFER, "pe-node", 5 << 20)])
    lost = []
    a.on_disconnect(lambda who, err: (lost.append((who, str(err))), pool.release_all("req-1")))
    b.register("kv", Memory.allocate(8 << 20))
    remote = a.remote_region(peer, "kv")
    src = a.register("src", Memory.allocate(256 << 10))
    ticket = a.post([WriteOp(remote, i * (256 << 10), src) for i in range(20)])
    time.sleep(0.15)
    b.close()
    with pytest.raises(TransportError, match="peer b"):
        ticket.wait(10)
    deadline = time.monotonic() + 5
    while not lost and time.monotonic() < deadline:
        time.sleep(0.01)
    assert lost and lost[0][0] == "b"
    assert pool.used(Resource.PE_BUFFER, "pe-node") == 0
    with pytest.raises(TransportError, match="not connected"):
        a.post([WriteOp(remote, 0, src)])
    a.close()


KILLED_SENDER = textwrap.dedent(
    """
    import socket, sys, time
    from dualpath.runtime.transports.auth import client_handshake
    from dualpath.runtime.transports.tcp_frames import F_ACK, F_IMM, HEADER, WRITE
    sock = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
    _, session = client_handshake(sock, sys.argv[2].encode(), "killed-writer")
    length = 1 << 20
    header = HEADER.pack(WRITE, F_IMM | F_ACK, 0, int(sys.argv[3]), 0, length, 9, 1)
    sock.sendall(header + session.send.tag(header) + b"x" * (length // 2))
    print("half-sent", flush=True)
    time.sleep(60)
    """
)


def test_tcp_receiver_releases_a_killed_senders_reservation(tcp_pair):
    _, b, _ = tcp_pair
    region = b.register("kv", Memory.allocate(1 << 20))
    pool = BufferPool()
    pool.add_paged(Resource.DE_BUFFER, "de-node", 1 << 20, 4)
    pool.acquire("req-from-killed-writer", [(Resource.DE_BUFFER, "de-node", 1 << 20)])
    lost = []
    b.on_disconnect(lambda who, err: (lost.append((who, str(err))), pool.release_all(f"req-from-{who}")))
    proc = subprocess.Popen([sys.executable, "-c", KILLED_SENDER, str(b.port), SECRET.decode(),
                             str(region.region_id)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "half-sent"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=10)
    deadline = time.monotonic() + 5
    while not lost and time.monotonic() < deadline:
        time.sleep(0.01)
    assert lost, "the receiver never reported the lost peer"
    who, message = lost[0]
    assert who == "killed-writer"
    assert "mid-write" in message and "524288 of 1048576" in message
    assert pool.used(Resource.DE_BUFFER, "de-node") == 0
    assert b.poll() == []  # a torn write never produces a completion


def test_tcp_close_fails_pending_writes(tcp_pair):
    a, b, peer = tcp_pair
    b.register("kv", Memory.allocate(1 << 20))
    remote = a.remote_region(peer, "kv")
    a.close()
    with pytest.raises(TransportError):
        a.post([WriteOp(remote, 0, b"x")])


def test_copy_local_is_paced_by_the_cnic_only_when_cnic_centric():
    limiter = cnic_limiter("e0", None)
    src, dst = Memory.wrap(_pattern(4096)), Memory.allocate(4096)
    for centric, expected in ((False, 0), (True, 4096)):
        limiter.reset_stats()
        transport = create_transport("tcp", "e0", SECRET, limiter=limiter, cnic_centric=centric)
        s, d = transport.register("host", src), transport.register("hbm", dst)
        transport.copy_local([CopyOp(d, 0, s, 0, 2048), CopyOp(d, 2048, s, 2048, 2048, lane=KV_LANE)])
        assert dst.view == src.view
        assert limiter.stats[KV_LANE].granted_bytes == expected
        transport.close()
    with pytest.raises(TransportError, match="out of bounds"):
        transport.copy_local([CopyOp(d, 4000, s, 0, 200)])


def test_lanes_are_checked_and_counted(tcp_pair):
    a, b, peer = tcp_pair
    b.register("kv", bytearray(64))
    remote = a.remote_region(peer, "kv")
    a.write(remote, 0, b"m" * 8, lane=MODEL_LANE)
    assert a.limiter.stats[MODEL_LANE].granted_bytes == 8
    with pytest.raises(SpecError, match="lane"):
        a.post([WriteOp(remote, 0, b"x", lane="storage")])


def test_registry():
    with pytest.raises(UnknownNameError, match="tcp, verbs"):
        create_transport("carrier-pigeon", "x", SECRET)
    with pytest.raises(SpecError, match="secret"):
        create_transport("tcp", "x", b"short")


def test_many_threads_posting_to_one_peer(tcp_pair):
    a, b, peer = tcp_pair
    dst = b.register("kv", Memory.allocate(64 * 4096))
    remote = a.remote_region(peer, "kv")
    errors = []

    def worker(k: int) -> None:
        try:
            for j in range(16):
                a.write(remote, (k * 16 + j) * 4096, bytes([k]) * 4096, timeout_s=10)
        except TransportError as exc:  # collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert all(dst.memory.view[(k * 16) * 4096] == k for k in range(4))



@pytest.mark.gpu
@needs_cuda  # GPU regions go through a pinned bounce buffer
def test_tcp_writes_into_and_out_of_gpu_memory(tcp_pair):
    import torch

    a, b, peer = tcp_pair
    size = 6 << 20  # more than one bounce buffer
    hbm = b.register("hbm", Memory.allocate(size, "cuda:0", host=False))
    host_src = a.register("host", Memory.wrap(_pattern(size, 11)))
    a.write(a.remote_region(peer, "hbm"), 0, host_src, imm=3)
    b.wait(3, timeout_s=30)
    assert torch.equal(hbm.memory.tensor.cpu(), torch.frombuffer(host_src.memory.view, dtype=torch.uint8))
    gpu_src = a.register("gpu", Memory.wrap(torch.arange(size, dtype=torch.int64, device="cuda:0") % 251))
    b.register("host", Memory.allocate(8 * size))
    a.write(a.remote_region(peer, "host"), 0, gpu_src)
    got = torch.frombuffer(b.region("host").memory.view, dtype=torch.uint8)
    assert torch.equal(got, gpu_src.memory.tensor.cpu())


@pytest.mark.gpu
@needs_cuda
def test_copy_local_host_to_gpu_and_back():
    limiter = cnic_limiter("e0", None)
    transport = create_transport("tcp", "e0", SECRET, limiter=limiter, cnic_centric=True)
    host = transport.register("host", Memory.allocate(1 << 20, "cuda:0"))  # pinned
    assert host.memory.pinned
    host.memory.view[:] = _pattern(1 << 20, 13)
    hbm = transport.register("hbm", Memory.allocate(1 << 20, "cuda:0", host=False))
    back = transport.register("back", Memory.allocate(1 << 20))
    transport.copy_local([CopyOp(hbm, 0, host, 0, 1 << 20)])
    transport.copy_local([CopyOp(back, 0, hbm, 0, 1 << 20)])
    assert back.memory.view == host.memory.view
    assert limiter.stats[KV_LANE].granted_bytes == 2 << 20
    transport.close()
