"""Control messages: one frozen dataclass per operation a peer calls, decoded once where it arrives.

On a control connection (`dualpath.runtime.transports.control`) a message travels as the JSON object
`{"op": <op>, "id": <call id>, **fields}`. `decode_message` turns one into its class, checking every
field against the class's annotations, and raises `MessageError` naming the field otherwise, so a
handler sees only well-formed messages and is chosen by the message's class. Every engine answers
`Hello`, `Trace`, `Stats`, `Shutdown` and `Lead`; a PE `Submit`; a DE `Admit`, `Release`, `Read`,
`LoadLayer` and `Handoff` (called by PEs); the scheduler `Fetch`, `FormBatch`, `Done` and `Failed` (called by
group leaders). Replies stay JSON objects; `TurnResult`, what a turn produced, travels inside `Done`.
What only an engine can check (token ids against its vocabulary, sizes against its buffers) it checks.
"""

from __future__ import annotations

import dataclasses
import functools
import types
from dataclasses import asdict, dataclass, field
from enum import Enum
from typing import Any, ClassVar, Union, get_args, get_origin, get_type_hints

from dualpath.errors import SpecError
from dualpath.protocol import RequestSizes
from dualpath.runtime.transports.control import ControlError

Address = tuple[str, int]
RESERVED = ("op", "id")  # the channel's own keys of a message


class MessageError(ControlError, SpecError):
    """A control message with a missing, unknown or ill-typed field: the call cannot be made or served."""


class ReadChoice(str, Enum):
    """Who reads a request's hit: one side (a protocol `ReadPath`), the PE's pick, or both sides."""

    PE = "pe"
    DE = "de"
    AUTO = "auto"  # the side whose node has the shorter read queue
    SPLIT = "split"  # the first `pe_blocks` hit blocks through the PE node, the rest through the DE node

    @classmethod
    def parse(cls, value: ReadChoice | str, source: str) -> ReadChoice:
        try:
            return cls(value)
        except ValueError:
            raise MessageError(source, "path", value, _describe(cls)) from None


class FailureKind(str, Enum):
    ENGINES = "engines"  # an engine is gone or refused the turn: the scheduler probes them and may requeue
    TURN = "turn"  # the turn's own error, reported to whoever submitted it


@dataclass(frozen=True)
class TurnResult:
    """What one submitted turn produced. `logits` [num_tokens, vocab] float32 when asked for."""

    request: str
    tokens: list[int]
    hit_tokens: int
    path: str
    pe: str
    de: str
    read_bytes: int
    times: dict[str, float] = field(default_factory=dict)
    logits: object = None
    pe_read_bytes: int = 0
    de_read_bytes: int = 0
    lost_blocks: int = 0  # hit blocks that failed to read and were recomputed


@dataclass(frozen=True)
class ControlMessage:
    """One control operation; `op` names it on the wire."""

    op: ClassVar[str] = ""

    def to_wire(self) -> dict[str, Any]:
        return asdict(self)


# -- what every engine answers ----------------------------------------------------------------------
@dataclass(frozen=True)
class Hello(ControlMessage):
    op: ClassVar[str] = "hello"


@dataclass(frozen=True)
class Trace(ControlMessage):
    op: ClassVar[str] = "trace"
    request: str | None = None  # None: every recorded step


@dataclass(frozen=True)
class Stats(ControlMessage):
    op: ClassVar[str] = "stats"


@dataclass(frozen=True)
class Shutdown(ControlMessage):
    op: ClassVar[str] = "shutdown"


@dataclass(frozen=True)
class Lead(ControlMessage):
    op: ClassVar[str] = "lead"
    scheduler: Address | None = None  # None: stop fetching


# -- what a PE answers ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Submit(ControlMessage):
    op: ClassVar[str] = "submit"
    request: str
    tokens: tuple[int, ...]
    max_new_tokens: int
    de: Address  # control address of the decode engine
    path: ReadChoice = ReadChoice.AUTO
    pe_blocks: int | None = None  # with SPLIT
    chunk_tokens: int | None = None
    layerwise: bool = True
    return_logits: bool = False


# -- what a DE answers (its PEs call) ---------------------------------------------------------------
@dataclass(frozen=True)
class Admit(ControlMessage):
    op: ClassVar[str] = "admit"
    request: str
    sizes: RequestSizes
    wait_s: float = 0.05


@dataclass(frozen=True)
class Release(ControlMessage):
    op: ClassVar[str] = "release"
    request: str


@dataclass(frozen=True)
class Read(ControlMessage):
    op: ClassVar[str] = "read"
    request: str
    blocks: tuple[str, ...]
    first: int = 0  # the request's buffer page of blocks[0]


@dataclass(frozen=True)
class LoadLayer(ControlMessage):
    op: ClassVar[str] = "load_layer"
    request: str
    layer: int
    slot_offset: int
    pe_peer: str
    blocks: int
    first_block: int = 0


@dataclass(frozen=True)
class Handoff(ControlMessage):
    op: ClassVar[str] = "handoff"
    request: str
    tokens: tuple[int, ...]
    first_token: int
    max_new_tokens: int
    hit_blocks: int
    return_logits: bool = False


# -- what the scheduler answers (group leaders call) ------------------------------------------------
@dataclass(frozen=True)
class Fetch(ControlMessage):
    op: ClassVar[str] = "fetch"
    engine: str
    reports: dict[str, dict[str, Any] | None] = field(default_factory=dict)  # None: the member does not answer
    wait: bool = True


@dataclass(frozen=True)
class FormBatch(ControlMessage):
    """A PE's prefill queue, for the scheduler's policy to form its next forward batch from."""

    op: ClassVar[str] = "form_batch"
    engine: str
    items: tuple[tuple[str, int, int, float], ...] = ()  # (request, cached, new tokens, ready at time.time())


@dataclass(frozen=True)
class Done(ControlMessage):
    op: ClassVar[str] = "done"
    attempt: str
    result: TurnResult


@dataclass(frozen=True)
class Failed(ControlMessage):
    op: ClassVar[str] = "failed"
    attempt: str
    error: str
    kind: FailureKind = FailureKind.TURN


MESSAGES: dict[str, type[ControlMessage]] = {cls.op: cls for cls in (
    Hello, Trace, Stats, Shutdown, Lead, Submit, Admit, Release, Read, LoadLayer, Handoff, Fetch, FormBatch, Done,
    Failed)}


def decode_message(header: dict[str, Any]) -> ControlMessage:
    """The message a received JSON object carries; `MessageError` names the first bad field."""
    op = header.get("op")
    cls = MESSAGES.get(op) if isinstance(op, str) else None
    if cls is None:
        raise MessageError("control message", "op", op, "one of " + ", ".join(MESSAGES))
    request = header.get("request")
    source = f"request {request}" if isinstance(request, str) else f"{op} message"
    return _fields_of(cls, {k: v for k, v in header.items() if k not in RESERVED}, source)


def _fields_of(cls: Any, raw: dict[str, Any], source: str) -> Any:
    """`cls(**raw)`, every value checked against (and converted to) its field's annotation."""
    hints = _hints(cls)
    unknown = sorted(set(raw) - set(hints))
    if unknown:
        known = ", ".join(hints) or "none"
        raise MessageError(source, unknown[0], _short(raw[unknown[0]]), f"a field of {cls.__name__} ({known})")
    values = {}
    for f in dataclasses.fields(cls):
        if f.name in raw:
            values[f.name] = _value(hints[f.name], raw[f.name], source, f.name)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise MessageError(source, f.name, None, _describe(hints[f.name]) + " (required)")
    return cls(**values)


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return {f.name: get_type_hints(cls)[f.name] for f in dataclasses.fields(cls)}


def _value(hint: Any, value: Any, source: str, name: str) -> Any:
    origin, args = get_origin(hint), get_args(hint)
    if hint is Any or hint is object:
        return value
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _value(inner, value, source, name)
    if isinstance(hint, type) and issubclass(hint, Enum):
        try:
            return hint(value)
        except ValueError:
            raise MessageError(source, name, value, _describe(hint)) from None
    if dataclasses.is_dataclass(hint) and isinstance(value, dict):
        return _fields_of(hint, value, source)
    if hint in (str, bool) and isinstance(value, hint):
        return value
    numbers = int | float if hint is float else int  # a float field takes a whole number written as one
    if hint in (int, float) and isinstance(value, numbers) and not isinstance(value, bool):
        return hint(value)
    if origin in (list, tuple) and isinstance(value, list | tuple):
        if origin is tuple and args[-1] is not Ellipsis:  # a fixed shape, e.g. (host, port)
            if len(value) == len(args):
                return tuple(_value(a, v, source, name) for a, v in zip(args, value))
        else:
            return origin(_value(args[0], v, source, name) for v in value)
    if (origin is dict or hint is dict) and isinstance(value, dict) and all(isinstance(k, str) for k in value):
        return {k: _value(args[1], v, source, name) for k, v in value.items()} if args else value
    raise MessageError(source, name, _short(value), _describe(hint))


def _describe(hint: Any) -> str:
    if isinstance(hint, type) and issubclass(hint, Enum):
        return "one of " + ", ".join(str(m.value) for m in hint)
    return "a value of type " + (hint.__name__ if isinstance(hint, type) else str(hint).replace("typing.", ""))


def _short(value: Any) -> Any:
    """`value`, or the start of its text when long (a prompt's tokens, say)."""
    text = repr(value)
    return value if len(text) <= 60 else text[:57] + "..."
