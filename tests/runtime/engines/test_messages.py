"""Control messages: every message survives the wire, and a bad one is refused naming its field."""

from __future__ import annotations

import json

import pytest

from dualpath.errors import SpecError
from dualpath.protocol import RequestSizes
from dualpath.runtime.engines.messages import (
    MESSAGES,
    Admit,
    Done,
    Failed,
    FailureKind,
    Fetch,
    FormBatch,
    Handoff,
    Hello,
    Lead,
    LoadLayer,
    MessageError,
    Read,
    ReadChoice,
    Release,
    Shutdown,
    Stats,
    Submit,
    Trace,
    TurnResult,
    decode_message,
)
from dualpath.runtime.transports.control import ControlError

EXAMPLES = [
    Hello(), Trace(), Trace("r1"), Stats(), Shutdown(), Lead(("10.0.0.2", 7000)), Lead(None),
    Submit("r1", (1, 2, 3), 4, ("127.0.0.1", 5)),
    Submit("r1", (1,), 4, ("h", 5), ReadChoice.SPLIT, pe_blocks=2, chunk_tokens=7, layerwise=False, return_logits=True),
    Admit("r1", RequestSizes(1, 2, 3, 4), 0.5), Release("r1"), Read("r1", ("b0", "b1"), 1),
    LoadLayer("r1", 1, 4096, "PE0", 3, 1), Handoff("r1", (1, 2), 3, 4, 0, True),
    Fetch("PE0", {"PE0": {"requests": {"r1": "reading"}}, "PE1": None}, wait=False),
    FormBatch("PE0", (("r1", 32, 17, 1700000000.5), ("r2~1", 0, 5, 1700000001.0))),
    Done("a0t1~1", TurnResult("a0t1~1", [7, 8], 32, "pe", "PE0", "DE0", 1, {"arrival": 0.0})),
    Failed("a0t1", "lost", FailureKind.ENGINES),
]


def on_the_wire(message) -> dict:
    return json.loads(json.dumps({"op": message.op, "id": 7, **message.to_wire()}))


def test_every_message_decodes_to_what_was_sent():
    assert {type(m) for m in EXAMPLES} == set(MESSAGES.values())
    for message in EXAMPLES:
        assert decode_message(on_the_wire(message)) == message


@pytest.mark.parametrize(("fields", "field"), [
    ({"op": "nope"}, "op"),
    ({"op": "submit", "request": "r", "tokens": [1, "x"], "max_new_tokens": 1, "de": ["h", 1]}, "tokens"),
    ({"op": "submit", "request": "r", "tokens": [1, True], "max_new_tokens": 1, "de": ["h", 1]}, "tokens"),
    ({"op": "submit", "request": "r", "tokens": [1], "max_new_tokens": 1, "de": ["h", 1], "path": "up"}, "path"),
    ({"op": "submit", "request": "r", "tokens": [1], "max_new_tokens": 1}, "de"),
    ({"op": "lead", "scheduler": ["h"]}, "scheduler"),
    ({"op": "admit", "request": "r", "sizes": {"hit_bytes": 1}}, "prompt_bytes"),
    ({"op": "read", "request": "r", "blocks": "b0"}, "blocks"),
    ({"op": "hello", "extra": 1}, "extra"),
    ({"op": "failed", "attempt": "a", "error": "e", "kind": "other"}, "kind"),
])
def test_a_bad_message_is_refused_naming_its_field(fields, field):
    with pytest.raises(MessageError) as info:
        decode_message({"id": 1, **fields})
    assert info.value.field == field
    assert isinstance(info.value, ControlError) and isinstance(info.value, SpecError)


def test_a_read_choice_outside_the_paths_is_refused_before_sending():
    assert ReadChoice.parse("split", "request r") is ReadChoice.SPLIT
    with pytest.raises(ControlError, match="path"):
        ReadChoice.parse("sideways", "request r")
