"""The KV transfer protocol: request phases, the buffers each step holds, and the admission rule.

Defined once here; the runtime's engines drive requests through exactly these steps and the deadlock
proof (`dualpath.proofs`) encodes exactly these steps, so what is proved is what runs.

A request reads its hit KV through one side (the *reader*: PE node on the PE-read path, DE node on the
DE-read path), then runs a per-layer loop on its PE engine: take an HBM layer slot, load the layer,
compute, send the layer's KV to the DE node's DRAM buffer under a send credit, free the slot. At the
end the DE copies the prompt KV from its buffer into its HBM and decodes.

The admission rule reserves, before any read starts, the DE HBM for the whole context and the DE
buffer space for everything that will arrive there. Without it a PE can hold layer slots waiting for
DE buffer space while the DE buffer is full of DE-read requests waiting for PE layer slots: a cycle.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from enum import Enum

from dualpath.errors import DualpathError


class Phase(str, Enum):
    WAITING = "waiting"  # submitted; holds nothing
    ADMITTED = "admitted"  # admission reservations held
    READING = "reading"  # storage -> reader node's DRAM buffer
    PREFILLING = "prefilling"  # per-layer loop on the PE engine
    HANDOFF = "handoff"  # prompt KV in DE buffer -> DE HBM
    DECODING = "decoding"  # generating; completed blocks are persisted
    DONE = "done"
    FAILED = "failed"


class Resource(str, Enum):
    PE_BUFFER = "pe_buffer"  # per PE node, bytes
    DE_BUFFER = "de_buffer"  # per DE node, bytes
    PE_HBM_SLOT = "pe_hbm_slot"  # per PE engine, layer slots
    DE_HBM = "de_hbm"  # per DE engine, bytes
    SEND_CREDIT = "send_credit"  # per PE engine, in-flight layer sends


class Amount(str, Enum):
    HIT_BYTES = "hit_bytes"  # KV of the cached prefix
    PROMPT_BYTES = "prompt_bytes"  # KV of hit + new tokens
    LAYER_BYTES = "layer_bytes"  # one layer of the KV sent PE -> DE
    CONTEXT_BYTES = "context_bytes"  # prompt + output KV (what decode ends with)
    ONE = "one"


class ReadPath(str, Enum):
    PE = "pe"
    DE = "de"


@dataclass(frozen=True)
class Step:
    """One protocol transition. `acquire` must all be granted at once or the step waits."""

    name: str
    source: Phase
    target: Phase
    acquire: tuple[tuple[Resource, Amount], ...] = ()
    release: tuple[tuple[Resource, Amount], ...] = ()
    repeats_per_layer: bool = False


def transfer_steps(path: ReadPath, admission: bool = True) -> tuple[Step, ...]:
    """The steps a request on `path` takes, in order. `admission=False` is the broken variant."""
    reader_buffer = Resource.PE_BUFFER if path is ReadPath.PE else Resource.DE_BUFFER
    if admission:
        admit_acquire: tuple[tuple[Resource, Amount], ...] = (
            (Resource.DE_HBM, Amount.CONTEXT_BYTES),
            (Resource.DE_BUFFER, Amount.PROMPT_BYTES),
        )
        if path is ReadPath.PE:
            admit_acquire += ((Resource.PE_BUFFER, Amount.HIT_BYTES),)
        read_acquire: tuple[tuple[Resource, Amount], ...] = ()
        send_acquire: tuple[tuple[Resource, Amount], ...] = ((Resource.SEND_CREDIT, Amount.ONE),)
        handoff_acquire: tuple[tuple[Resource, Amount], ...] = ()
    else:
        admit_acquire = ()
        read_acquire = ((reader_buffer, Amount.HIT_BYTES),)
        # Without the rule the DE buffer is taken layer by layer as KV arrives.
        send_acquire = ((Resource.SEND_CREDIT, Amount.ONE), (Resource.DE_BUFFER, Amount.LAYER_BYTES))
        handoff_acquire = ((Resource.DE_HBM, Amount.CONTEXT_BYTES),)
    reader_release = ((Resource.PE_BUFFER, Amount.HIT_BYTES),) if path is ReadPath.PE else ()
    decode_release: tuple[tuple[Resource, Amount], ...] = ((Resource.DE_BUFFER, Amount.PROMPT_BYTES),)
    if path is ReadPath.DE and not admission:
        # The DE-read hit was taken separately at "read"; with admission it is part of PROMPT_BYTES.
        decode_release += ((Resource.DE_BUFFER, Amount.HIT_BYTES),)
    return (
        Step("admit", Phase.WAITING, Phase.ADMITTED, acquire=admit_acquire),
        Step("read", Phase.ADMITTED, Phase.READING, acquire=read_acquire),
        Step("start_prefill", Phase.READING, Phase.PREFILLING),
        Step("layer_load", Phase.PREFILLING, Phase.PREFILLING,
             acquire=((Resource.PE_HBM_SLOT, Amount.ONE),), repeats_per_layer=True),
        Step("layer_send", Phase.PREFILLING, Phase.PREFILLING, acquire=send_acquire, repeats_per_layer=True),
        Step("layer_done", Phase.PREFILLING, Phase.PREFILLING,
             release=((Resource.PE_HBM_SLOT, Amount.ONE), (Resource.SEND_CREDIT, Amount.ONE)),
             repeats_per_layer=True),
        Step("handoff", Phase.PREFILLING, Phase.HANDOFF, acquire=handoff_acquire, release=reader_release),
        Step("start_decode", Phase.HANDOFF, Phase.DECODING, release=decode_release),
        Step("finish", Phase.DECODING, Phase.DONE, release=((Resource.DE_HBM, Amount.CONTEXT_BYTES),)),
    )


ALL_STEP_NAMES = tuple(step.name for step in transfer_steps(ReadPath.PE))


@dataclass(frozen=True)
class RequestSizes:
    """The byte amounts one request's steps refer to."""

    hit_bytes: int
    prompt_bytes: int
    context_bytes: int
    num_layers: int

    def of(self, amount: Amount, layer: int = 0) -> int:
        """Bytes (or count) of `amount`; LAYER_BYTES of `layer` so that all layers sum exactly."""
        if amount is Amount.ONE:
            return 1
        if amount is Amount.LAYER_BYTES:
            base, extra = divmod(self.prompt_bytes, self.num_layers)
            return base + (1 if layer < extra else 0)
        return getattr(self, amount.value)


class ProtocolError(DualpathError):
    """A step was taken out of order or released something not held."""


@dataclass
class Ledger:
    """Capacities and holdings of protocol resources; the runtime's single source of buffer truth.

    Keys are (resource, owner) where owner names a node or an engine. Not thread-safe: callers hold
    their own lock.
    """

    capacity: dict[tuple[Resource, str], int]
    used: dict[tuple[Resource, str], int] = field(default_factory=lambda: defaultdict(int))
    held: dict[str, dict[tuple[Resource, str], int]] = field(default_factory=lambda: defaultdict(dict))

    def can_acquire(self, wants: list[tuple[Resource, str, int]]) -> bool:
        need: dict[tuple[Resource, str], int] = defaultdict(int)
        for resource, owner, amount in wants:
            need[(resource, owner)] += amount
        for key, amount in need.items():
            if key not in self.capacity:
                raise ProtocolError(f"no capacity declared for {key[0].value} of {key[1]}")
            if amount > self.capacity[key]:
                raise ProtocolError(
                    f"{key[0].value} of {key[1]}: {amount} requested exceeds capacity {self.capacity[key]}"
                )
            if self.used[key] + amount > self.capacity[key]:
                return False
        return True

    def try_acquire(self, request: str, wants: list[tuple[Resource, str, int]]) -> bool:
        """All of `wants` or nothing."""
        if not self.can_acquire(wants):
            return False
        for resource, owner, amount in wants:
            key = (resource, owner)
            self.used[key] += amount
            self.held[request][key] = self.held[request].get(key, 0) + amount
        return True

    def release(self, request: str, resource: Resource, owner: str, amount: int) -> None:
        key = (resource, owner)
        have = self.held.get(request, {}).get(key, 0)
        if amount > have:
            raise ProtocolError(f"{request} releases {amount} of {resource.value}/{owner} but holds {have}")
        self.used[key] -= amount
        if have == amount:
            del self.held[request][key]
        else:
            self.held[request][key] = have - amount

    def release_all(self, request: str) -> None:
        """Free everything a request holds (failure or cancellation): nothing leaks."""
        for (resource, owner), amount in list(self.held.pop(request, {}).items()):
            self.used[(resource, owner)] -= amount
