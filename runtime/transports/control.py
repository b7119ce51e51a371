"""Control plane: authenticated request/reply messages between engines and their clients.

KV bytes move over a `Transport` (one-sided writes); everything else (submit, admit, read, handoff,
trace, shutdown) is a small JSON message with an optional binary payload on a control connection.
Every connection runs the cluster-secret handshake of `dualpath.runtime.transports.auth` first; a peer without
the secret is refused, counted and logged. Frames: 4-byte JSON length, 8-byte payload length, JSON,
payload, then a 16-byte tag of the session's MAC (`dualpath.runtime.transports.session`) over all of
it; lengths over `MAX_JSON_BYTES` / `MAX_PAYLOAD_BYTES`, a bad tag or a frame that is not a JSON
object close the connection with the reason logged. A message with `"re"` answers the call with that
id; any other is a call: the owner's `decode` turns it into a typed `Message` (or refuses it, the
error going back as the reply) and its handler runs on its own thread, so a handler that waits
(admission, decoding) never blocks the connection.
The messages themselves are the owners' (`dualpath.runtime.engines.messages`); this module only
frames, authenticates and matches replies to calls.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import socket
import struct
import threading
from collections.abc import Callable
from typing import Any, ClassVar, Protocol

from dualpath.errors import DualpathError
from dualpath.runtime.transports.accepts import MAX_PENDING_HANDSHAKES, serve_accepts
from dualpath.runtime.transports.auth import (
    DEFAULT_BIND_HOST,
    AuthError,
    check_secret,
    client_handshake,
    recv_exact,
)
from dualpath.runtime.transports.session import Session
from dualpath.runtime.transports.tcp_frames import send_buffers

LOG = logging.getLogger("dualpath.runtime.transports.control")
FRAME = struct.Struct("<IQ")
# The largest control messages: a trace reply (JSON of up to 200,000 protocol steps) and a submit's
# logits (float32 rows of the vocabulary per generated token). Reads grow with arriving bytes, so an
# announced length below these costs nothing until the bytes come.
MAX_JSON_BYTES = 64 << 20
MAX_PAYLOAD_BYTES = 512 << 20

Payload = bytes | bytearray | memoryview
Reply = dict[str, Any] | tuple[dict[str, Any], bytes] | None


class Message(Protocol):
    """What a call carries: the operation's name and its fields as JSON values."""

    op: ClassVar[str]

    def to_wire(self) -> dict[str, Any]: ...


# The handler gets what `decode` made of the call (the owner's message classes), hence Any here.
Handler = Callable[["Channel", Any, bytes], Reply]
Decode = Callable[[dict[str, Any]], Message]


class ControlError(DualpathError):
    """A control call failed: the peer is gone, timed out, or its handler raised (message relayed)."""


class ProtocolError(DualpathError):
    """The peer sent a frame this end cannot accept (too long, bad tag, not a JSON object)."""


class _Waiter:
    """A call waiting for its reply."""

    def __init__(self) -> None:
        self.answered = threading.Event()
        self.reply: dict[str, Any] | None = None  # still None when woken: the connection was lost
        self.payload = b""


class Channel:
    """One authenticated control connection. `call` sends and waits for the reply; thread-safe."""

    def __init__(self, sock: socket.socket, peer: str, session: Session, name: str = "",
                 handler: Handler | None = None, decode: Decode | None = None) -> None:
        self.sock = sock
        self.session = session
        self.peer = peer
        self.name = name
        self.handler, self.decode = handler, decode
        self.alive = True
        self.info: dict[str, str] = {}  # what the owner learns about the peer (e.g. its engine's name)
        self._ids = itertools.count(1)
        self._send_lock = threading.Lock()
        self._pending: dict[int, _Waiter] = {}
        self._lock = threading.Lock()
        self._closed_handlers: list[Callable[[Channel], None]] = []
        self._reader = threading.Thread(target=self._read_loop, name=f"ctl-rx:{name}<-{peer}", daemon=True)

    def start(self) -> Channel:
        self._reader.start()
        return self

    def on_close(self, handler: Callable[[Channel], None]) -> None:
        self._closed_handlers.append(handler)

    def _send(self, header: dict[str, Any], payload: Payload = b"") -> None:
        raw = json.dumps(header, separators=(",", ":")).encode()
        body = memoryview(payload).cast("B") if payload else memoryview(b"")
        with self._send_lock:
            if not self.alive:
                raise ControlError(f"{self.name}: control connection to {self.peer} is closed")
            try:
                head = FRAME.pack(len(raw), body.nbytes)
                tag = self.session.send.tag(head, raw, body)  # under the lock: tags go out in sequence order
                send_buffers(self.sock, [memoryview(head + raw), body, memoryview(tag)])
            except OSError as exc:
                self._fail(f"send failed: {exc}")
                raise ControlError(f"{self.name}: control connection to {self.peer} lost: {exc}") from exc

    def call(self, message: Message, payload: Payload = b"", timeout_s: float | None = 60.0
             ) -> tuple[dict[str, Any], bytes]:
        """Send `message` and wait for the reply; raises `ControlError` on a remote error."""
        op, msg_id, waiter = message.op, next(self._ids), _Waiter()
        with self._lock:
            self._pending[msg_id] = waiter
        try:
            self._send({"op": op, "id": msg_id, **message.to_wire()}, payload)
            if not waiter.answered.wait(timeout_s):
                raise ControlError(f"{self.name}: {op} to {self.peer} not answered within {timeout_s} s")
        finally:
            with self._lock:
                self._pending.pop(msg_id, None)
        reply = waiter.reply
        if reply is None:
            raise ControlError(f"{self.name}: control connection to {self.peer} lost during {op}")
        if "error" in reply:
            raise ControlError(f"{self.peer} failed {op}: {reply['error']}")
        return {k: v for k, v in reply.items() if k != "re"}, waiter.payload

    def _read_loop(self) -> None:
        try:
            while True:
                header, payload = self._read_frame()
                if "re" in header:
                    with self._lock:
                        waiter = self._pending.get(header["re"])
                    if waiter is not None:
                        waiter.reply, waiter.payload = header, payload
                        waiter.answered.set()
                else:
                    threading.Thread(target=self._dispatch, args=(header, payload), daemon=True,
                                     name=f"ctl-{header.get('op')}:{self.name}").start()
        except (OSError, ConnectionError) as exc:
            self._fail(str(exc))
        except Exception as exc:  # a malformed frame: whatever it broke, the connection ends here, logged
            LOG.warning("%s: closing the control connection to %s: %s", self.name, self.peer,
                        f"{type(exc).__name__}: {exc}"[:500])
            self._fail(str(exc))

    def _read_frame(self) -> tuple[dict[str, Any], bytes]:
        """One frame, its tag checked before its JSON is parsed; `ProtocolError` if it breaks the rules."""
        head = recv_exact(self.sock, FRAME.size)
        json_len, payload_len = FRAME.unpack(head)
        if json_len > MAX_JSON_BYTES or payload_len > MAX_PAYLOAD_BYTES:
            raise ProtocolError(f"frame announces {json_len} JSON and {payload_len} payload bytes "
                                f"(at most {MAX_JSON_BYTES} and {MAX_PAYLOAD_BYTES})")
        raw = recv_exact(self.sock, json_len)
        payload = recv_exact(self.sock, payload_len) if payload_len else b""
        mac = self.session.recv
        tag = recv_exact(self.sock, mac.tag_bytes) if mac.tag_bytes else b""
        check = mac.begin()
        for part in (head, raw, payload):
            if check is not None:
                check.update(part)
        if not mac.matches(check, tag):
            raise ProtocolError(f"frame {mac.seq - 1} fails its integrity tag (altered, replayed or forged)")
        header = json.loads(raw)
        if not isinstance(header, dict):
            raise ProtocolError(f"frame holds a JSON {type(header).__name__}, not an object")
        return header, payload

    def _dispatch(self, header: dict[str, Any], payload: bytes) -> None:
        msg_id = header.get("id")
        reply: dict[str, Any]
        reply_payload: Payload
        try:
            if self.handler is None or self.decode is None:
                raise ControlError(f"{self.name} accepts no calls")
            result = self.handler(self, self.decode(header), payload)  # decode raises on a bad message
            reply, reply_payload = result if isinstance(result, tuple) else (result or {}, b"")
            reply = {**reply, "re": msg_id}
        except DualpathError as exc:
            reply, reply_payload = {"re": msg_id, "error": str(exc)}, b""
        except Exception as exc:  # a handler bug is reported to the caller and logged here with its traceback
            LOG.exception("%s: handler for %s from %s failed", self.name, header.get("op"), self.peer)
            reply, reply_payload = {"re": msg_id, "error": f"{type(exc).__name__}: {exc}"}, b""
        if msg_id is not None:
            try:
                self._send(reply, reply_payload)
            except ControlError:
                # A connection closed on purpose (or already lost, which is logged) is not news.
                LOG.log(logging.WARNING if self.alive else logging.DEBUG, "%s: could not reply to %s from %s",
                        self.name, header.get("op"), self.peer)

    def _fail(self, reason: str) -> None:
        with self._lock:
            if not self.alive:
                return
            self.alive = False
            pending = list(self._pending.values())
        for waiter in pending:
            waiter.answered.set()
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
        LOG.debug("%s: control connection to %s closed: %s", self.name, self.peer, reason)
        for handler in self._closed_handlers:
            handler(self)

    def close(self) -> None:
        self._fail("closed")


class ControlServer:
    """Listens on host:port (loopback by default) and runs the handshake on every connection."""

    def __init__(self, name: str, secret: bytes | str, handler: Handler, decode: Decode,
                 host: str = DEFAULT_BIND_HOST, port: int = 0) -> None:
        self.name = name
        self.secret = check_secret(secret)
        self.handler, self.decode = handler, decode
        self.host, self.port = host, port
        self.num_refused = 0
        self.max_pending = MAX_PENDING_HANDSHAKES  # connections in their handshake at once
        self.channels: list[Channel] = []
        self._listener: socket.socket | None = None
        self._closed = threading.Event()

    def listen(self) -> tuple[str, int]:
        listener = socket.create_server((self.host, self.port), backlog=64)
        listener.settimeout(0.2)
        self._listener = listener
        self.host, self.port = listener.getsockname()[:2]
        serve_accepts(self._listener, self._closed.is_set, self.secret, self.name, self._admit, self._refused,
                      f"ctl-accept:{self.name}", self.max_pending)
        return self.host, self.port

    def _refused(self) -> None:
        self.num_refused += 1

    def _admit(self, sock: socket.socket, peer: str, session: Session) -> None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        channel = Channel(sock, peer, session, self.name, self.handler, self.decode)
        self.channels.append(channel)
        channel.start()

    def close(self) -> None:
        self._closed.set()
        if self._listener is not None:
            self._listener.close()
        for channel in list(self.channels):
            channel.close()


def connect(address: tuple[str, int], secret: bytes | str, name: str, handler: Handler | None = None,
            decode: Decode | None = None, timeout_s: float = 10.0) -> Channel:
    """Open an authenticated control connection to an engine at `address` (calls from the peer too,
    with `handler` and `decode`)."""
    host, port = address
    try:
        sock = socket.create_connection((host, int(port)), timeout=timeout_s)
    except OSError as exc:
        raise ControlError(f"{name}: cannot connect to {host}:{port}: {exc}") from exc
    try:
        peer, session = client_handshake(sock, check_secret(secret), name)
    except AuthError as exc:
        sock.close()
        raise ControlError(f"{name}: {exc}") from exc
    sock.settimeout(None)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return Channel(sock, peer, session, name, handler, decode).start()
