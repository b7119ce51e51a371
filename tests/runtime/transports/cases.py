"""Builders the transport tests share: a connected pair of transports of one backend."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from dualpath.runtime.transports.ratelimit import cnic_limiter
from dualpath.runtime.transports.transport import Transport, create_transport

SECRET = b"test-cluster-secret-0123456789"


@contextlib.contextmanager
def connected_pair(kind: str, limited: bool = False) -> Iterator[tuple[Transport, Transport, str]]:
    """(a, b, name of b as seen from a): a connected to b, both closed afterwards. `limited`: a has a CNIC
    limiter (unlimited rate), so writes go through its lanes."""
    a = create_transport(kind, "a", SECRET, limiter=cnic_limiter("a", None) if limited else None)
    b = create_transport(kind, "b", SECRET)
    try:
        b.listen()
        peer = a.connect(b.address)
        yield a, b, peer
    finally:
        a.close()
        b.close()
