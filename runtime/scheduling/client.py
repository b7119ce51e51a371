"""Client of a running cluster: submit turns to a PE, fetch step traces and stats, stop engines.

Thread-safe: one authenticated control connection per engine, shared by all calling threads, so a
benchmark can run one thread per agent.
"""

from __future__ import annotations

import itertools
import os
import secrets
import threading
from typing import Any, Self

from dualpath.runtime.engines.messages import Hello, ReadChoice, Shutdown, Stats, Submit, Trace, TurnResult
from dualpath.runtime.transports.control import Channel, connect

Address = tuple[str, int]


def turn_record(result: TurnResult, agent: int, turn: int, prompt_tokens: int, origin_s: float = 0.0,
                arrival_at: float | None = None, request: str | None = None):
    """The core `RequestRecord` of a turn (times relative to `origin_s`), for a runtime `Trace`.

    `arrival_at` (absolute) is when the turn arrived at the scheduler; default its arrival at the PE.
    """
    from dualpath.trace import RequestRecord

    t = result.times
    first = t["first_token"] - origin_s
    return RequestRecord(
        request=request or result.request, agent=agent, turn=turn,
        arrival_s=(t["arrival"] if arrival_at is None else arrival_at) - origin_s, pe=result.pe,
        de=result.de, pe_read_bytes=result.pe_read_bytes, de_read_bytes=result.de_read_bytes,
        prefill_start_s=t["prefill_start"] - origin_s, first_token_s=first,
        second_token_s=t["second_token"] - origin_s if "second_token" in t else first,
        finish_s=t["finish"] - origin_s, output_tokens=len(result.tokens), prompt_tokens=prompt_tokens,
        status="recomputed" if result.lost_blocks else "done")


class ClusterClient:
    def __init__(self, secret: bytes | str, name: str = "client") -> None:
        self.secret = secret
        self.name = name
        self._channels: dict[Address, Channel] = {}
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._prefix = f"{name}-{os.getpid()}-{secrets.token_hex(3)}"  # ids stay unique across clients

    def channel(self, address: Address) -> Channel:
        key = (str(address[0]), int(address[1]))
        with self._lock:
            channel = self._channels.get(key)
            if channel is None or not channel.alive:
                channel = connect(key, self.secret, self.name)
                self._channels[key] = channel
            return channel

    def submit(self, pe: Address, de: Address, tokens: list[int], max_new_tokens: int,
               path: ReadChoice | str = ReadChoice.AUTO, chunk_tokens: int | None = None, return_logits: bool = False,
               request: str | None = None, timeout_s: float | None = None, pe_blocks: int | None = None,
               layerwise: bool = True) -> TurnResult:
        """Run one turn to completion (prefill on `pe`, decode on `de`) and return its tokens.

        `path`: "pe", "de", "auto" (the PE picks the shorter read queue) or "split" (`pe_blocks` of the
        hit blocks through the PE node, the rest through the DE node). `layerwise=False` loads every
        layer before computing (the paper's Basic)."""
        request = request or f"{self._prefix}-{next(self._ids)}"
        message = Submit(request, tuple(int(t) for t in tokens), max_new_tokens, (str(de[0]), int(de[1])),
                         path=ReadChoice.parse(path, f"request {request}"), pe_blocks=pe_blocks,
                         chunk_tokens=chunk_tokens, layerwise=layerwise, return_logits=return_logits)
        reply, payload = self.channel(pe).call(message, timeout_s=timeout_s)
        logits = None
        if return_logits:
            import torch

            logits = torch.frombuffer(bytearray(payload), dtype=torch.float32).reshape(len(reply["tokens"]), -1)
        return TurnResult(reply["request"], reply["tokens"], reply["hit_tokens"], reply["path"], reply["pe"],
                          reply["de"], reply["read_bytes"], reply["times"], logits, reply.get("pe_read_bytes", 0),
                          reply.get("de_read_bytes", 0), reply.get("lost_blocks", 0))

    def hello(self, address: Address) -> dict[str, Any]:
        return self.channel(address).call(Hello())[0]

    def trace(self, address: Address, request: str | None = None) -> list[dict[str, Any]]:
        return self.channel(address).call(Trace(request))[0]["steps"]

    def stats(self, address: Address) -> dict[str, Any]:
        return self.channel(address).call(Stats())[0]

    def shutdown(self, address: Address) -> None:
        self.channel(address).call(Shutdown(), timeout_s=10)

    def close(self) -> None:
        with self._lock:
            channels, self._channels = list(self._channels.values()), {}
        for channel in channels:
            channel.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
