"""Accept loop of every listener: handshakes on their own threads, a cap on unauthenticated
connections, and refusals logged without flooding.

- The loop never ends on an error while its owner is open: `EMFILE`, a thread that cannot start or
  anything else backs off (10 ms doubling to 1 s) and is logged once per burst, then once when
  accepting works again.
- At most `max_pending` connections may be in their handshake at once; one more (or running out of
  file descriptors) drops the oldest unauthenticated one. A legitimate peer completes its handshake
  in milliseconds, so idle connections cannot lock it out, and each handshake times out anyway.
- Refusals are logged at WARNING at most once per peer host per `REFUSAL_LOG_INTERVAL_S`; the next
  warning says how many were refused in between.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import socket
import threading
import time
from collections import OrderedDict
from collections.abc import Callable

from dualpath.runtime.transports.auth import AuthError, server_handshake
from dualpath.runtime.transports.session import Session

LOG = logging.getLogger("dualpath.runtime.transports.auth")

MAX_PENDING_HANDSHAKES = 64
REFUSAL_LOG_INTERVAL_S = 60.0
_MAX_LOGGED_PEERS = 1024  # hosts remembered by the refusal log (oldest forgotten first)
_OUT_OF_FDS = {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM}

OnPeer = Callable[[socket.socket, str, Session], object]  # its result is ignored


class RefusalLog:
    """One WARNING per key (a peer host) per `interval_s`, then how many were suppressed; thread-safe."""

    def __init__(self, logger: logging.Logger, interval_s: float = REFUSAL_LOG_INTERVAL_S) -> None:
        self.logger = logger
        self.interval_s = interval_s
        self._lock = threading.Lock()
        self._seen: OrderedDict[str, tuple[float, int]] = OrderedDict()

    def warn(self, key: str, message: str) -> bool:
        """Log `message` unless `key` was logged within the interval; True when logged."""
        now = time.monotonic()
        with self._lock:
            last, suppressed = self._seen.pop(key, (None, 0))
            if last is not None and now - last < self.interval_s:
                self._seen[key] = (last, suppressed + 1)
                return False
            self._seen[key] = (now, 0)
            while len(self._seen) > _MAX_LOGGED_PEERS:
                self._seen.popitem(last=False)
        more = f" ({suppressed} more from {key} not logged in the last {self.interval_s:g} s)" if suppressed else ""
        self.logger.warning("%s%s", message, more)
        return True


class _Pending:
    """Sockets in their handshake, oldest first; `add` returns the one to drop when over the cap."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self._lock = threading.Lock()
        self._socks: OrderedDict[int, socket.socket] = OrderedDict()

    def add(self, sock: socket.socket) -> socket.socket | None:
        with self._lock:
            self._socks[id(sock)] = sock
            return self._socks.popitem(last=False)[1] if len(self._socks) > self.cap else None

    def oldest(self) -> socket.socket | None:
        with self._lock:
            return self._socks.popitem(last=False)[1] if self._socks else None

    def done(self, sock: socket.socket) -> bool:
        """Forget `sock`; False when it was dropped meanwhile."""
        with self._lock:
            return self._socks.pop(id(sock), None) is not None


def _drop(sock: socket.socket | None) -> None:
    """Wake the handshake blocked on `sock` (it fails and closes it)."""
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)


def _host(address: object) -> str:
    return str(address[0]) if isinstance(address, tuple) and address else str(address)


def serve_accepts(listener: socket.socket, is_closed: Callable[[], bool], secret: bytes, own_name: str,
                  on_peer: OnPeer, on_refused: Callable[[], None], name: str,
                  max_pending: int = MAX_PENDING_HANDSHAKES) -> threading.Thread:
    """Accept until `is_closed()`; each connection runs the server handshake on its own thread, then
    `on_peer(sock, peer name, session)` (or `on_refused()`, the socket closed). The listener needs a
    timeout to notice closing. See the module docstring for errors, the cap and logging."""
    pending = _Pending(max_pending)
    refusals = RefusalLog(LOG)

    def handshake(sock: socket.socket, host: str) -> None:
        try:
            peer, session = server_handshake(sock, secret, own_name)
        except AuthError as exc:
            pending.done(sock)
            refusals.warn(host, f"{name}: {exc}")
            on_refused()
            sock.close()
            return
        if not pending.done(sock):  # dropped for a newer connection just as it finished
            on_refused()
            sock.close()
            return
        try:
            on_peer(sock, peer, session)
        except Exception:  # a bug of the owner: this connection is lost, the listener is not
            LOG.exception("%s: admitting %s failed", name, peer)
            sock.close()

    def loop() -> None:
        failures = 0
        while not is_closed():
            sock: socket.socket | None = None
            try:
                sock, address = listener.accept()
                if dropped := pending.add(sock):
                    refusals.warn("cap", f"{name}: {max_pending} connections in their handshake: "
                                         "dropped the oldest")
                    _drop(dropped)
                threading.Thread(target=handshake, args=(sock, _host(address)), daemon=True,
                                 name=f"{name}:handshake").start()
            except TimeoutError:
                continue
            except Exception as exc:  # EMFILE, thread start failure, anything: back off, keep serving
                if is_closed() or listener.fileno() < 0:
                    return
                if isinstance(exc, OSError) and exc.errno in _OUT_OF_FDS:
                    _drop(pending.oldest())  # an unauthenticated peer is the cheapest descriptor to free
                if sock is not None and pending.done(sock):
                    sock.close()  # accepted, but its handshake thread never started
                if not failures:
                    LOG.warning("%s: accept failed (%s: %s); backing off, logged again when it recovers",
                                name, type(exc).__name__, exc)
                failures += 1
                time.sleep(min(1.0, 0.01 * 2 ** min(failures, 7)))
                continue
            if failures:
                LOG.warning("%s: accepting again after %d failed attempts", name, failures)
                failures = 0

    thread = threading.Thread(target=loop, name=name, daemon=True)
    thread.start()
    return thread
