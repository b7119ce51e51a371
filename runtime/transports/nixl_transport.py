"""NIXL transport: one-sided WRITEs through NVIDIA's NIXL library (UCX backend), as NVIDIA Dynamo and
vLLM's NixlConnector move KV cache.

A TCP side channel runs the same cluster-secret handshake as every other connection, then each end
sends a hello (NIXL agent connection info, and how to address notices to it); region lookups are
answered with the region's address and the NIXL metadata to write into it. Every side-channel
message carries the session MAC. A `post` is one NIXL WRITE request of all its writes with one
notice (`nixl_wire.Notice`: post sequence and immediates), which NIXL delivers after the request's
bytes landed; the target delivers completions in post order. The sender's `Ticket` completes when
the request is done, which on UCX means flushed to the target. Host memory is DRAM, a CUDA tensor
VRAM (untested here: no GPU). A lost side channel, or a failed request, drops the peer: pending
tickets fail and `on_disconnect` handlers run.

nixl_cu12 is imported lazily (the "nixl" extra); the agent lives in `nixl_agent`, the progress
thread in `nixl_poller`, the encodings and the peer in `nixl_wire`.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
import socket
import threading
from collections.abc import Sequence
from typing import Any

from dualpath.errors import SpecError
from dualpath.runtime.engines.memory import Memory
from dualpath.runtime.transports.accepts import serve_accepts
from dualpath.runtime.transports.auth import DEFAULT_BIND_HOST, AuthError, client_handshake
from dualpath.runtime.transports.nixl_agent import VRAM, NixlAgent, segment
from dualpath.runtime.transports.nixl_poller import NixlPoller, NixlPost, NixlTicket, plan_writes
from dualpath.runtime.transports.nixl_wire import (
    HELLO,
    LOOKUP,
    NOTFOUND,
    REGION,
    TOKEN_BYTES,
    Hello,
    NixlPeer,
    NixlRegion,
    Notice,
)
from dualpath.runtime.transports.peers import PeerRegistry
from dualpath.runtime.transports.ratelimit import NicLimiter
from dualpath.runtime.transports.session import Session
from dualpath.runtime.transports.transport import Transport
from dualpath.runtime.transports.transport_types import (
    LocalRegion,
    RegionLookup,
    RemoteRegion,
    Ticket,
    TransportError,
    WriteOp,
)
from dualpath.runtime.transports.verbs_wire import recv_msg, send_msg

LOG = logging.getLogger("dualpath.runtime.nixl")


def unavailable_reason() -> str | None:
    """Why this backend cannot run here (None when it can); `dualpath run` asks before engines start.

    The probe opens an agent in a child process: NIXL's bundled libraries and OR-Tools' abort a process
    that loads both (`free(): invalid pointer`), and the process asking may plan with OR-Tools next."""
    import subprocess
    import sys

    probe = ("from dualpath.runtime.transports.nixl_agent import nixl_unavailable_reason as r; "
             "print(r() or '', end='')")
    try:
        done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"nixl_cu12 could not be probed: {exc}"
    if done.returncode != 0:
        tail = (done.stderr.strip().splitlines() or [f"exit {done.returncode}"])[-1]
        return f"nixl_cu12 cannot start an agent: {tail}"
    return done.stdout.strip() or None


class NixlTransport(Transport):
    """NIXL backend (UCX): writes from registered regions into peers' registered regions."""

    kind = "nixl"

    def __init__(self, name: str, secret: bytes | str, host: str = DEFAULT_BIND_HOST, port: int = 0,
                 limiter: NicLimiter | None = None, cnic_centric: bool = False) -> None:
        super().__init__(name, secret, host, port, limiter, cnic_centric)
        self.agent = NixlAgent(name)
        self._peers: PeerRegistry[NixlPeer] = PeerRegistry(name)
        self._by_conn: dict[int, NixlPeer] = {}  # notices name our connection id, not the peer
        self._next_conn = 1
        self._listener: socket.socket | None = None
        self._remote_cache: dict[tuple[str, str], RemoteRegion] = {}
        self.poller = NixlPoller(name, self.agent, self._notice, self._failed)

    # -- memory ------------------------------------------------------------------------------------
    def _register_backend(self, name: str, memory: Memory) -> Any:
        return self.agent.register(name, memory)

    def _deregister_backend(self, region: LocalRegion) -> None:
        self.agent.deregister(region.backend)

    # -- connections -------------------------------------------------------------------------------
    def listen(self) -> tuple[str, int]:
        if self._listener is None:
            self._listener = socket.create_server((self.host, self.port), backlog=64)
            self._listener.settimeout(0.2)
            self.host, self.port = self._listener.getsockname()[:2]
            serve_accepts(self._listener, lambda: self.closed, self.secret, self.name, self._admit,
                          self._refused, f"nixl-accept:{self.name}")
        return self.host, self.port

    def _refused(self) -> None:
        self.num_refused += 1

    def _hello(self) -> Hello:
        with self._lock:
            conn_id, self._next_conn = self._next_conn, self._next_conn + 1
        return Hello(self.agent.agent_name, conn_id, secrets.token_bytes(TOKEN_BYTES), self.agent.connection_info())

    def _exchange(self, sock: socket.socket, peer: str, session: Session, first: bool) -> tuple[Hello, Hello]:
        """Hellos both ways (the connecting end speaks first); loads the peer's connection info."""
        mine = self._hello()
        if first:
            send_msg(sock, session.send, HELLO, mine.encode())
        kind, payload = recv_msg(sock, session.recv)
        if kind != HELLO:
            raise TransportError(f"peer {peer} sent message {kind} before its NIXL hello")
        theirs = Hello.decode(payload)
        if not first:
            send_msg(sock, session.send, HELLO, mine.encode())
        self.agent.load(theirs.metadata, theirs.agent, first=True)
        return mine, theirs

    def _admit(self, sock: socket.socket, peer: str, session: Session) -> None:
        try:
            mine, theirs = self._exchange(sock, peer, session, first=False)
        except (TransportError, OSError, ConnectionError) as exc:
            LOG.warning("%s: refused a connection: %s", self.name, exc)
            self.num_refused += 1
            sock.close()
            return
        with contextlib.suppress(TransportError):  # closed meanwhile: _add_peer dropped the connection
            self._add_peer(peer, sock, session, mine, theirs)

    def connect(self, address: tuple[str, int], timeout_s: float = 10.0) -> str:
        host, port = address  # a list too: addresses decoded from JSON are lists
        sock = None
        try:
            sock = socket.create_connection((host, port), timeout=timeout_s)
            peer, session = client_handshake(sock, self.secret, self.name)
            mine, theirs = self._exchange(sock, peer, session, first=True)
        except (AuthError, TransportError, OSError, ConnectionError) as exc:
            if sock is not None:
                sock.close()
            raise TransportError(f"{self.name}: cannot connect to {address[0]}:{address[1]}: {exc}") from exc
        return self._add_peer(peer, sock, session, mine, theirs)

    def _add_peer(self, name: str, sock: socket.socket, session: Session, mine: Hello, theirs: Hello) -> str:
        sock.settimeout(None)
        peer = self._peers.add(name, lambda unique: NixlPeer(unique, sock, session, theirs.agent, mine, theirs))
        with self._lock:
            self._by_conn[mine.conn_id] = peer
        threading.Thread(target=self._side_loop, args=(peer,), daemon=True, name=f"nixl-side:{peer.name}").start()
        if self.closed:  # close() ran during the handshake: it may have missed this peer
            self._drop(peer, TransportError(f"{self.name}: transport closed"))
            raise TransportError(f"{self.name}: transport closed while connecting to {name}")
        return peer.name

    def peers(self) -> list[str]:
        return self._peers.names()

    def _side_loop(self, peer: NixlPeer) -> None:
        try:
            while True:
                kind, payload = recv_msg(peer.sock, peer.session.recv)
                if kind == LOOKUP:
                    self._answer_lookup(peer, payload.decode())
                elif kind in (REGION, NOTFOUND):
                    found = NixlRegion.decode(payload) if kind == REGION else None
                    if found is not None:
                        self.agent.load(found.metadata, peer.agent)
                        peer.regions[found.region_id] = found
                    lookup = peer.lookups.pop(found.name if found else payload.decode(), None)
                    if lookup is not None:
                        lookup.answer(found)
                else:
                    raise TransportError(f"unexpected side-channel message {kind}")
        except (OSError, ConnectionError, TransportError) as exc:
            self._drop(peer, TransportError(f"{self.name}: side channel to peer {peer.name} lost: {exc}"))
        except Exception as exc:  # a malformed message (bad UTF-8, a short descriptor): close, logged
            LOG.warning("%s: closing the side channel to %s: %s: %s", self.name, peer.name, type(exc).__name__, exc)
            self._drop(peer, TransportError(f"{self.name}: side channel to peer {peer.name} broken: {exc}"))

    def _answer_lookup(self, peer: NixlPeer, name: str) -> None:
        try:
            region = self.region(name)
        except SpecError:
            with peer.lock:
                send_msg(peer.sock, peer.session.send, NOTFOUND, name.encode())
            return
        kind, device = segment(region.memory)
        info = NixlRegion(name, region.region_id, region.nbytes, region.memory.ptr, device, kind == VRAM,
                          self.agent.region_info(region.backend))
        with peer.lock:
            send_msg(peer.sock, peer.session.send, REGION, info.encode())

    def _drop(self, peer: NixlPeer, error: TransportError) -> None:
        if not self._peers.remove(peer.name, peer):
            return  # already dropped: the registry removes a peer once, so one caller gets past here
        peer.alive = False
        for post in self.poller.forget(peer):
            post.ticket.finish(error)
        for lookup in peer.lookups.values():
            lookup.cancel()
        peer.sock.close()
        with self._lock:
            self._by_conn.pop(peer.in_conn_id, None)
            for key in [key for key in self._remote_cache if key[0] == peer.name]:
                del self._remote_cache[key]
        self.agent.unload(peer.agent)
        if not self.closed:
            self._peer_lost(peer.name, error)

    def _failed(self, post: NixlPost, error: TransportError) -> None:
        post.ticket.finish(error)
        self._drop(post.peer, error)

    def _notice(self, agent: str, payload: bytes) -> None:
        try:
            notice = Notice.decode(payload)
        except TransportError as exc:
            LOG.warning("%s: ignored a NIXL notification from agent %s: %s", self.name, agent, exc)
            return
        with self._lock:
            peer = self._by_conn.get(notice.conn_id)
            names = {region.region_id: region.name for region in self._regions.values()}
        if peer is None or peer.agent != agent:
            LOG.warning("%s: ignored a NIXL notice for connection %d from agent %s", self.name, notice.conn_id, agent)
            return
        try:
            completions = peer.accept(notice, names)
        except TransportError as exc:
            self._drop(peer, TransportError(f"{self.name}: {exc}"))
            return
        for completion in completions:
            self._deliver(completion)

    def remote_region(self, peer: str, name: str, timeout_s: float = 10.0) -> RemoteRegion:
        cached = self._remote_cache.get((peer, name))
        if cached is not None:
            return cached
        conn = self._peers.get(peer)
        lookup: RegionLookup[NixlRegion] = RegionLookup()
        conn.lookups[name] = lookup
        with conn.lock:
            send_msg(conn.sock, conn.session.send, LOOKUP, name.encode())
        if not lookup.wait(timeout_s) or lookup.found is None:
            raise TransportError(f"{self.name}: peer {peer} has no region {name!r} (or did not answer)")
        info = lookup.found
        remote = RemoteRegion(peer, name, info.region_id, info.nbytes, info.addr)
        self._remote_cache[(peer, name)] = remote
        return remote

    # -- data path ---------------------------------------------------------------------------------
    def post(self, ops: Sequence[WriteOp]) -> Ticket:
        if not ops:
            raise TransportError(f"{self.name}: post of no writes")
        peer = self._peers.get(ops[0].remote.peer)
        for op in ops:
            if op.remote.peer != peer.name or not isinstance(op.local, LocalRegion):
                raise TransportError(f"{self.name}: a nixl post goes to one peer from registered regions")
            if self.limiter is not None and op.lane not in self.limiter.weights:
                raise SpecError(f"transport {self.name}", "lane", op.lane, "one of " + ", ".join(self.limiter.weights))
        groups, entries, total = plan_writes(self.name, peer, ops)
        ticket = NixlTicket(peer.name, len(ops), total, self.poller)
        if self.limiter is not None:
            # A NIC paces itself; the emulated CNIC grants each write on its lane before the request is
            # posted (as verbs does), so the caller is paced, and lane shares hold between posts.
            for op in ops:
                self.limiter.acquire(op.size(), op.lane)
        with peer.post_lock:
            notice = Notice(peer.out_conn_id, peer.out_token, peer.next_seq, tuple(entries)).encode()
            post = NixlPost(peer, ticket, groups, notice)
            if post.groups:
                self.poller.submit(post)  # raises before the sequence number is taken: no gap at the target
            else:
                self.agent.notify(peer.agent, notice)
                ticket.finish()
            peer.next_seq += 1
        return ticket

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self._listener is not None:
            self._listener.close()
        for peer in self._peers.connections():
            self._drop(peer, TransportError(f"{self.name}: transport closed"))
        self.poller.stop()
        for name in list(self._regions):
            self.deregister(name)
        self.agent.close()
