"""The verbs transport against real RDMA devices: `make test-rdma` runs these in a QEMU guest on two
soft-RoCE devices (rxe0 on veth0, rxe1 on veth1), where a skip counts as a failure.

Transports on different devices talk through the veth pair, addressed by their link-local GIDs: in
the guest both veth ends' IPv4 addresses are local, so the kernel routes to them through lo and rxe
finds no MAC for the peer's IPv4-mapped GID (RTR fails with ETIMEDOUT); a link-local address is
bound to its interface. The shared contract (test_tcp_transport.py, over tcp and verbs) and the
automatic GID choice run on one device, where the IPv4-mapped GID carries loopback traffic.
"""

from __future__ import annotations

import ipaddress
import os
import random
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from dualpath.runtime.engines.buffers import Memory
from dualpath.runtime.transports.transport import TransportError, WriteOp, create_transport
from dualpath.runtime.transports.verbs_gid import gid_text
from dualpath.runtime.transports.verbs_qp import device_unavailable_reason, rdma_devices, verbs_enums

SECRET = b"test-cluster-secret-0123456789"
REASON = device_unavailable_reason()
DEVICES = rdma_devices() if REASON is None else []
pytestmark = [pytest.mark.rdma, pytest.mark.skipif(REASON is not None, reason=f"needs an RDMA device: {REASON}")]
two_devices = pytest.mark.skipif(len(DEVICES) < 2, reason=f"needs two RDMA devices, found {DEVICES or 'none'}")


def _sysfs_gids(device: str, port: int = 1) -> dict[int, tuple[str, str]]:
    """The port's valid GIDs as the kernel lists them in sysfs: index -> (gid, type), read apart from pyverbs."""
    root = Path(f"/sys/class/infiniband/{device}/ports/{port}")
    table = {}
    for path in (root / "gids").iterdir():
        gid = path.read_text().strip()
        if gid != "0000:0000:0000:0000:0000:0000:0000:0000":
            table[int(path.name)] = (gid, (root / "gid_attrs/types" / path.name).read_text().strip())
    return table


def _on(device: str) -> dict:
    """Transport options for `device` addressed by its link-local GID (see the module's docstring)."""
    gids = [gid for _, (gid, _) in sorted(_sysfs_gids(device).items()) if gid.startswith("fe80:")]
    assert gids, f"{device} has no link-local GID"
    return {"device": device, "gid": gids[0]}


def _connected(a_kw: dict, b_kw: dict):
    a = create_transport("verbs", "a", SECRET, **a_kw)
    b = create_transport("verbs", "b", SECRET, **b_kw)
    b.listen()
    return a, b, a.connect(b.address)


def _pattern(nbytes: int, seed: int) -> bytearray:
    return bytearray(random.Random(seed).randbytes(nbytes))


def test_automatic_gid_is_roce_v2_and_prefers_the_routable_address():
    print(f"RDMA devices: {DEVICES}")
    for device in DEVICES:
        sysfs = _sysfs_gids(device)
        with create_transport("verbs", "t", SECRET, device=device) as t:
            nic = t.nic
            print(f"{device}: GID index {nic.gid_index} {nic.gid} ({nic.gid_type}) of {sysfs}")
            assert {e.index: (e.gid, e.gid_type.replace("RoCEv", "RoCE v")) for e in nic.gid_table()} == sysfs
            assert sysfs[nic.gid_index] == (nic.gid, "RoCE v2")
            mapped = [i for i, (gid, kind) in sysfs.items() if gid.startswith("0000:0000:0000:0000:0000:ffff:")
                      and kind == "RoCE v2"]
            if mapped:  # the guest gives each veth an IPv4 address: its GID, not the link-local one, wins
                assert nic.gid_index == min(mapped)


@two_devices
def test_explicit_gid_by_index_and_by_address_carry_writes():
    a_dev, b_dev = DEVICES[:2]
    link_local = {d: min(i for i, (gid, _) in _sysfs_gids(d).items() if gid.startswith("fe80:"))
                  for d in (a_dev, b_dev)}
    a_gid = _sysfs_gids(a_dev)[link_local[a_dev]][0]
    # Index on one side, the address (in its short IPv6 spelling) on the other: both must resolve.
    a, b, peer = _connected({"device": a_dev, "gid": str(ipaddress.IPv6Address(gid_text(a_gid)))},
                            {"device": b_dev, "gid_index": link_local[b_dev]})
    try:
        assert (a.nic.gid_index, b.nic.gid_index) == (link_local[a_dev], link_local[b_dev])
        dst = b.register("kv", Memory.allocate(4096))
        src = a.register("src", Memory.wrap(_pattern(4096, 1)))
        a.write(a.remote_region(peer, "kv"), 0, src, imm=5)
        b.wait(5, timeout_s=30)
        assert bytes(dst.memory.view) == bytes(src.memory.view)
    finally:
        a.close()
        b.close()
    with pytest.raises(TransportError, match="not in the port's GID table"):
        create_transport("verbs", "x", SECRET, device=a_dev, gid="2001:db8::1")
    with pytest.raises(TransportError, match="no valid GID at index 999"):
        create_transport("verbs", "x", SECRET, device=a_dev, gid_index=999)
    with pytest.raises(TransportError, match="no RDMA device 'mlx5_9'"):
        create_transport("verbs", "x", SECRET, device="mlx5_9")


@two_devices
def test_qp_setup_reaches_rts_and_writes_land_with_and_without_immediates():
    e = verbs_enums()
    a, b, peer = _connected(_on(DEVICES[0]), _on(DEVICES[1]))
    try:
        assert a.peers() == ["b"] and b.peers() == ["a"]
        for t in (a, b):
            (conn,) = t._peers.connections()
            attr, _ = conn.qp.qp.query(e.IBV_QP_STATE)
            assert attr.qp_state == e.IBV_QPS_RTS, f"{t.name}: QP state {attr.qp_state}"
        dst = b.register("kv", Memory.allocate(1 << 20))
        src = a.register("src", Memory.wrap(_pattern(256 << 10, 2)))
        remote = a.remote_region(peer, "kv")
        a.write(remote, 4096, src)  # no immediate: the target sees nothing but the bytes
        assert bytes(dst.memory.view[4096 : 4096 + (256 << 10)]) == bytes(src.memory.view)
        assert b.poll() == []
        a.write(remote, 0, src, 0, 1000, imm=77)
        done = b.wait(77, timeout_s=30)
        assert (done.peer, done.nbytes, done.imm) == ("a", 1000, 77)
    finally:
        a.close()
        b.close()


@two_devices
def test_doorbell_chain_of_thousands_of_writes():
    a, b, peer = _connected(_on(DEVICES[0]), _on(DEVICES[1]))
    try:
        num_writes = 3000  # six linked lists of at most 512 WRs, more than a send queue holds at once
        dst = b.register("kv", Memory.allocate(num_writes * 128))
        src = a.register("src", Memory.wrap(_pattern(num_writes * 64, 3)))
        remote = a.remote_region(peer, "kv")
        ops = [WriteOp(remote, (num_writes - 1 - i) * 128, src, i * 64, 64, imm=9 if i == num_writes - 1 else None)
               for i in range(num_writes)]
        a.write_batch(ops, timeout_s=120)
        b.wait(9, timeout_s=30)
        for i in range(num_writes):
            at = (num_writes - 1 - i) * 128
            assert bytes(dst.memory.view[at : at + 64]) == bytes(src.memory.view[i * 64 : (i + 1) * 64]), i
    finally:
        a.close()
        b.close()


@two_devices
def test_six_peers_with_immediates_pending_at_once():
    """6 x 500 writes with an immediate complete while the receiver reaps nothing: 3,000 receive
    completions wait at once, past what one 2,048-entry CQ shared by every QP could hold."""
    num_peers, num_writes = 6, 500
    b = create_transport("verbs", "b", SECRET, **_on(DEVICES[1]))
    b.listen()
    dst = b.register("kv", Memory.allocate(num_peers * num_writes * 64))
    senders = [create_transport("verbs", f"s{i}", SECRET, **_on(DEVICES[i % 2])) for i in range(num_peers)]
    try:
        remotes = [s.remote_region(s.connect(b.address), "kv") for s in senders]
        srcs = [s.register("src", Memory.wrap(_pattern(num_writes * 64, 10 + i))) for i, s in enumerate(senders)]
        errors: list[BaseException] = []

        def send(i: int) -> None:
            base = i * num_writes * 64
            ops = [WriteOp(remotes[i], base + k * 64, srcs[i], k * 64, 64, imm=i * num_writes + k)
                   for k in range(num_writes)]
            try:
                senders[i].write_batch(ops, timeout_s=120)
            except TransportError as exc:
                errors.append(exc)

        with b._sends._room:  # hold the receiver's poller off: every completion waits in a CQ
            threads = [threading.Thread(target=send, args=(i,)) for i in range(num_peers)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(180)
        assert not errors, errors
        got: set[int] = set()
        deadline = time.monotonic() + 120
        while len(got) < num_peers * num_writes and time.monotonic() < deadline:
            got.update(c.imm for c in b.poll())
            time.sleep(0.01)
        assert got == set(range(num_peers * num_writes))
        assert sorted(b.peers()) == [f"s{i}" for i in range(num_peers)]  # no QP broke
        for i in range(num_peers):
            base = i * num_writes * 64
            assert bytes(dst.memory.view[base : base + num_writes * 64]) == bytes(srcs[i].memory.view)
    finally:
        for s in senders:
            s.close()
        b.close()


KILLED_PEER = textwrap.dedent(
    """
    import sys
    from dualpath.runtime.engines.buffers import Memory
    from dualpath.runtime.transports.transport import WriteOp, create_transport
    t = create_transport("verbs", "doomed", sys.argv[2].encode(), device=sys.argv[3], gid=sys.argv[4])
    t.register("kv", Memory.allocate(8 << 20))
    peer = t.connect(("127.0.0.1", int(sys.argv[1])))
    remote = t.remote_region(peer, "kv")
    src = t.register("src", Memory.allocate(1 << 20))
    t.write(remote, 0, src, imm=1)
    print("writing", flush=True)
    while True:  # keep writes in flight until killed
        t.write_batch([WriteOp(remote, i << 20, src) for i in range(8)], timeout_s=60)
    """
)


@two_devices
def test_a_peer_killed_mid_transfer_is_reported_not_waited_for():
    survivor = create_transport("verbs", "survivor", SECRET, **_on(DEVICES[0]))
    survivor.listen()
    survivor.register("kv", Memory.allocate(8 << 20))
    lost: list[tuple[str, str]] = []
    survivor.on_disconnect(lambda who, err: lost.append((who, str(err))))
    doomed = _on(DEVICES[1])
    proc = subprocess.Popen([sys.executable, "-c", KILLED_PEER, str(survivor.port), SECRET.decode(), doomed["device"],
                             doomed["gid"]], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "writing"
        survivor.wait(1, timeout_s=60)
        remote = survivor.remote_region("doomed", "kv")
        src = survivor.register("src", Memory.allocate(1 << 20))
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        deadline = time.monotonic() + 60
        while not lost and time.monotonic() < deadline:
            time.sleep(0.05)
        assert lost and lost[0][0] == "doomed", "the survivor never reported the killed peer"
        assert survivor.peers() == []
        with pytest.raises(TransportError, match="not connected"):
            survivor.write(remote, 0, src, timeout_s=30)
    finally:
        if proc.poll() is None:
            proc.kill()
        survivor.close()
