"""Listeners and frames under abuse: accept floods, oversized and malformed frames, tampered bytes, log floods."""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass
from typing import ClassVar

import pytest

from dualpath.runtime.engines.buffers import Memory
from dualpath.runtime.transports.accepts import RefusalLog
from dualpath.runtime.transports.auth import client_handshake
from dualpath.runtime.transports.control import FRAME, MAX_PAYLOAD_BYTES, ControlError, ControlServer, connect
from dualpath.runtime.transports.tcp_frames import HEADER, LOOKUP, MAX_MESSAGE_BYTES, WRITE
from dualpath.runtime.transports.transport import WriteOp, create_transport

SECRET = b"test-cluster-secret-0123456789"


@dataclass(frozen=True)
class Ping:
    op: ClassVar[str] = "ping"

    def to_wire(self) -> dict:
        return {}


def _server(max_pending: int = 64) -> ControlServer:
    server = ControlServer("srv", SECRET, lambda channel, msg, payload: ({"pong": True}, payload),
                           lambda header: Ping())
    server.max_pending = max_pending
    server.listen()
    return server


def _raw_session(port: int) -> tuple[socket.socket, object]:
    """An authenticated raw socket and its session: a peer holding the secret that misbehaves."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    _, session = client_handshake(sock, SECRET, "rogue")
    return sock, session


def _closed_by_peer(sock: socket.socket, within_s: float = 5.0) -> bool:
    sock.settimeout(within_s)
    try:
        while data := sock.recv(65536):
            del data
    except TimeoutError:
        return False
    except OSError:
        return True
    return True


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _control_frame(session, header: dict, payload: bytes = b"", flip_at: int | None = None) -> bytes:
    raw = json.dumps(header).encode()
    head = FRAME.pack(len(raw), len(payload))
    frame = head + raw + payload + session.send.tag(head, raw, payload)
    if flip_at is not None:
        frame = frame[:flip_at] + bytes([frame[flip_at] ^ 1]) + frame[flip_at + 1 :]
    return frame


# -- accept loop ---------------------------------------------------------------------------------


def test_idle_connections_beyond_the_cap_cannot_lock_a_peer_out():
    server = _server(max_pending=8)
    flood = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(40)]
    try:
        channel = connect(("127.0.0.1", server.port), SECRET, "legit", timeout_s=5)
        assert channel.call(Ping(), timeout_s=5)[0] == {"pong": True}
        channel.close()
        deadline = time.monotonic() + 5
        while server.num_refused < 32 and time.monotonic() < deadline:  # the oldest idle ones were dropped
            time.sleep(0.01)
        assert server.num_refused >= 32
    finally:
        for sock in flood:
            sock.close()
        server.close()


def test_handshake_threads_that_cannot_start_do_not_end_the_accept_loop(monkeypatch, caplog):
    from dualpath.runtime.transports import accepts

    failures = []

    class FlakyThread(accepts.threading.Thread):
        def start(self) -> None:
            if self.name.endswith(":handshake") and len(failures) < 3:
                failures.append(self.name)
                raise RuntimeError("can't start new thread")
            super().start()

    monkeypatch.setattr(accepts.threading, "Thread", FlakyThread)
    server = _server()
    try:
        with caplog.at_level(logging.WARNING, logger="dualpath.runtime"):
            for _ in range(3):  # each is accepted, its thread fails, it is closed
                with pytest.raises(ControlError):
                    connect(("127.0.0.1", server.port), SECRET, "unlucky", timeout_s=5)
            channel = connect(("127.0.0.1", server.port), SECRET, "legit", timeout_s=5)
            assert channel.call(Ping(), timeout_s=5)[0] == {"pong": True}
            channel.close()
        assert len(failures) == 3
        messages = [r.getMessage() for r in caplog.records]
        assert sum("accept failed (RuntimeError" in m for m in messages) == 1  # once per burst
    finally:
        server.close()


FD_STARVED_SERVER = textwrap.dedent(
    """
    import resource, sys, time
    from dataclasses import dataclass
    from dualpath.runtime.transports.control import ControlServer

    @dataclass(frozen=True)
    class Ping:
        op = "ping"
        def to_wire(self): return {}

    server = ControlServer("starved", sys.argv[1].encode(), lambda c, m, p: {"pong": True}, lambda h: Ping())
    host, port = server.listen()
    resource.setrlimit(resource.RLIMIT_NOFILE, (48, 48))
    print(port, flush=True)
    time.sleep(60)
    """
)


def test_a_listener_out_of_file_descriptors_keeps_accepting():
    proc = subprocess.Popen([sys.executable, "-c", FD_STARVED_SERVER, SECRET.decode()], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    flood = []
    try:
        port = int(proc.stdout.readline())
        flood = [socket.create_connection(("127.0.0.1", port)) for _ in range(100)]  # twice its descriptors
        time.sleep(0.3)
        channel = connect(("127.0.0.1", port), SECRET, "legit", timeout_s=10)
        assert channel.call(Ping(), timeout_s=10)[0] == {"pong": True}
        channel.close()
        assert proc.poll() is None
    finally:
        for sock in flood:
            sock.close()
        proc.kill()
        stderr = proc.communicate(timeout=10)[1]
    assert stderr.count("accept failed") >= 1 and "Traceback" not in stderr


def test_refusals_are_logged_once_per_peer_per_interval(caplog):
    server = _server()
    try:
        with caplog.at_level(logging.WARNING, logger="dualpath.runtime"):
            for _ in range(5):
                with pytest.raises(ControlError):
                    connect(("127.0.0.1", server.port), b"not-the-cluster-secret-at-all", "intruder", timeout_s=5)
            deadline = time.monotonic() + 5
            while server.num_refused < 5 and time.monotonic() < deadline:
                time.sleep(0.01)
        assert server.num_refused == 5
        refusals = [r.getMessage() for r in caplog.records if "refused peer" in r.getMessage()]
        assert len(refusals) == 1 and "intruder" in refusals[0]
    finally:
        server.close()


def test_the_refusal_log_counts_what_it_did_not_log(caplog):
    log = RefusalLog(logging.getLogger("dualpath.test.refusals"), interval_s=0.2)
    with caplog.at_level(logging.WARNING, logger="dualpath.test.refusals"):
        assert log.warn("10.0.0.1", "refused 1")
        assert not log.warn("10.0.0.1", "refused 2") and not log.warn("10.0.0.1", "refused 3")
        assert log.warn("10.0.0.2", "another host")
        time.sleep(0.25)
        assert log.warn("10.0.0.1", "refused 4")
    assert [r.getMessage() for r in caplog.records] == [
        "refused 1", "another host", "refused 4 (2 more from 10.0.0.1 not logged in the last 0.2 s)"]


# -- control frames ------------------------------------------------------------------------------


def test_large_tagged_payloads_round_trip():
    server = _server()
    channel = connect(("127.0.0.1", server.port), SECRET, "legit", timeout_s=5)
    try:
        data = os.urandom(5 << 20)  # past the 1 MiB a read starts with: the buffer grows as bytes come
        assert channel.call(Ping(), payload=data, timeout_s=30) == ({"pong": True}, data)
    finally:
        channel.close()
        server.close()


def test_an_oversized_control_frame_is_refused_before_anything_is_allocated(caplog):
    server = _server()
    sock, _ = _raw_session(server.port)
    try:
        before = _rss_bytes()
        with caplog.at_level(logging.WARNING, logger="dualpath.runtime"):
            sock.sendall(FRAME.pack(16, 1 << 40))  # a terabyte announced
            assert _closed_by_peer(sock)
        assert any("at most" in r.getMessage() for r in caplog.records)
        # Under the cap, an announcement alone costs nothing: memory grows with the bytes that arrive.
        sock2, _ = _raw_session(server.port)
        sock2.sendall(FRAME.pack(16, MAX_PAYLOAD_BYTES))
        time.sleep(0.3)
        assert _rss_bytes() - before < 64 << 20
        sock2.close()
    finally:
        sock.close()
        server.close()


@pytest.mark.parametrize("raw", [b"[1, 2]", b"not json", b"\xff\xfe", b"[" * 100_000])
def test_a_malformed_control_frame_closes_the_connection_with_a_logged_reason(raw, caplog):
    server = _server()
    sock, session = _raw_session(server.port)
    try:
        head = FRAME.pack(len(raw), 0)
        with caplog.at_level(logging.WARNING, logger="dualpath.runtime"):
            sock.sendall(head + raw + session.send.tag(head, raw, b""))
            assert _closed_by_peer(sock)
        assert any("closing the control connection to rogue" in r.getMessage() for r in caplog.records)
    finally:
        sock.close()
        server.close()


def test_a_flipped_control_byte_after_the_handshake_is_refused():
    server = _server()
    sock, session = _raw_session(server.port)
    try:
        good = _control_frame(session, {"op": "ping", "id": 1})
        sock.sendall(good)  # a well-formed call is answered...
        sock.settimeout(5)
        assert b"pong" in sock.recv(4096)
        sock.sendall(_control_frame(session, {"op": "ping", "id": 2}, flip_at=FRAME.size + 3))
        assert _closed_by_peer(sock)  # ...a tampered one ends the connection
    finally:
        sock.close()
        server.close()


def test_a_replayed_control_frame_is_refused():
    server = _server()
    sock, session = _raw_session(server.port)
    try:
        frame = _control_frame(session, {"op": "ping", "id": 1})
        sock.sendall(frame)
        sock.settimeout(5)
        assert b"pong" in sock.recv(4096)
        sock.sendall(frame)  # byte for byte the same: its sequence number is spent
        assert _closed_by_peer(sock)
    finally:
        sock.close()
        server.close()


# -- data frames ---------------------------------------------------------------------------------


@pytest.fixture
def receiver():
    b = create_transport("tcp", "b", SECRET)
    region = b.register("kv", Memory.allocate(1 << 16))
    b.listen()
    yield b, region
    b.close()


def _wait_lost(b, peer: str = "rogue", within_s: float = 5.0) -> bool:
    deadline = time.monotonic() + within_s
    while peer in b.peers() and time.monotonic() < deadline:
        time.sleep(0.01)
    return peer not in b.peers()


def test_a_flipped_data_byte_is_refused_and_never_acknowledged(receiver, caplog):
    b, region = receiver
    sock, session = _raw_session(b.port)
    payload = b"k" * 4096
    header = HEADER.pack(WRITE, 3, 0, region.region_id, 0, len(payload), 7, 1)  # F_IMM | F_ACK
    tampered = payload[:100] + b"K" + payload[101:]
    with caplog.at_level(logging.WARNING, logger="dualpath.runtime"):
        sock.sendall(header + session.send.tag(header) + tampered + session.send.tag(payload))
        assert _closed_by_peer(sock)
    sock.close()
    assert _wait_lost(b)
    assert b.poll() == []  # no completion for bytes that failed their tag (and no ACK went back)
    assert any("fails its integrity tag" in r.getMessage() for r in caplog.records)


def test_data_frames_with_a_bad_kind_or_an_oversized_message_close_the_connection(receiver, caplog):
    b, _ = receiver
    for header in (HEADER.pack(99, 0, 0, 0, 0, 0, 0, 1), HEADER.pack(LOOKUP, 0, 0, 0, 0, MAX_MESSAGE_BYTES + 1, 0, 1)):
        sock, session = _raw_session(b.port)
        with caplog.at_level(logging.WARNING, logger="dualpath.runtime"):
            sock.sendall(header + session.send.tag(header))
            assert _closed_by_peer(sock)
        sock.close()
        assert _wait_lost(b)
    messages = [r.getMessage() for r in caplog.records]
    assert any("unknown frame kind 99" in m for m in messages)
    assert any(f"at most {MAX_MESSAGE_BYTES}" in m for m in messages)


def test_tagged_writes_still_land_and_untagged_peers_agree():
    for mac in (True, False):
        a = create_transport("tcp", "a", SECRET, frame_mac=mac)
        b = create_transport("tcp", "b", SECRET, frame_mac=mac)
        region = b.register("kv", Memory.allocate(1 << 20))
        b.listen()
        try:
            peer = a.connect(b.address)
            remote = a.remote_region(peer, "kv")
            data = bytes(range(256)) * 1024
            a.post([WriteOp(remote, 0, data, imm=5), WriteOp(remote, 1 << 19, data[:0])]).wait(5)
            assert bytes(region.memory.view[: len(data)]) == data
        finally:
            a.close()
            b.close()


def test_verbs_side_channel_messages_are_tagged_and_capped():
    from dualpath.runtime.transports.session import Session
    from dualpath.runtime.transports.transport_types import TransportError
    from dualpath.runtime.transports.verbs_wire import LOOKUP, MAX_MSG_BYTES, MSG, recv_msg, send_msg

    server = Session.derive(SECRET, b"s" * 32, b"c" * 32, server=True)
    client = Session.derive(SECRET, b"s" * 32, b"c" * 32, server=False)
    a, b = socket.socketpair()
    with a, b:
        send_msg(a, client.send, LOOKUP, b"kv")
        assert recv_msg(b, server.recv) == (LOOKUP, b"kv")
        send_msg(a, client.send, LOOKUP, b"kv")
        assert recv_msg(b, server.recv) == (LOOKUP, b"kv")  # the same bytes again: a fresh sequence number
        head = MSG.pack(LOOKUP, 2)
        a.sendall(head + b"kw" + client.send.tag(head, b"kv"))  # altered on the way
        with pytest.raises(TransportError, match="integrity tag"):
            recv_msg(b, server.recv)
        a.sendall(MSG.pack(LOOKUP, MAX_MSG_BYTES + 1))
        with pytest.raises(TransportError, match=f"at most {MAX_MSG_BYTES}"):
            recv_msg(b, server.recv)


def test_a_connection_that_lands_after_close_is_closed_with_its_threads():
    """close() racing a handshake that just finished: the late connection must not outlive the transport."""
    import threading

    from dualpath.runtime.transports.session import Session

    a = create_transport("tcp", "a", SECRET)
    listener = socket.create_server(("127.0.0.1", 0))
    right = socket.create_connection(listener.getsockname()[:2])
    left, _ = listener.accept()
    listener.close()
    try:
        a.close()
        assert a._add_connection(left, "late-peer", Session.untagged()) is None
        assert a.peers() == []
        deadline = time.monotonic() + 5
        while any(t.name.endswith("<-late-peer") or t.name.endswith("->late-peer") for t in threading.enumerate()):
            assert time.monotonic() < deadline, "the late connection's threads lived on"
            time.sleep(0.02)
    finally:
        right.close()
