"""fast_init: the records the simulator builds per event keep every dataclass behaviour but the slow init."""

from __future__ import annotations

import dataclasses

import pytest

from dualpath.plan import Assignment
from dualpath.policy import BatchItem, ClusterState, EngineState
from dualpath.records import fast_init
from dualpath.trace import RequestRecord


@pytest.mark.parametrize("cls", [Assignment, BatchItem, ClusterState, EngineState, RequestRecord])
def test_the_hot_records_build_as_their_dataclass_would(cls):
    fields = dataclasses.fields(cls)
    required = [f for f in fields if f.default is dataclasses.MISSING]
    values = {f.name: (f"v{i}" if f.type in ("str", str) else i) for i, f in enumerate(required)}
    record = cls(**values)
    for f in fields:  # defaults filled, given values kept
        assert getattr(record, f.name) == values.get(f.name, f.default)
    assert record == cls(*values.values()) and hash(record) == hash(cls(**values))
    assert dataclasses.replace(record) == record and dataclasses.asdict(record) == {
        f.name: getattr(record, f.name) for f in fields}
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(record, fields[0].name, "changed")
    with pytest.raises(TypeError):
        cls(*values.values(), *range(len(fields)))  # more arguments than fields
    with pytest.raises(TypeError):
        cls()  # the required ones missing


def test_fast_init_refuses_what_it_cannot_build():
    @dataclasses.dataclass
    class Mutable:
        x: int

    @dataclasses.dataclass(frozen=True)
    class Checked:
        x: int

        def __post_init__(self) -> None:
            raise ValueError

    @dataclasses.dataclass(frozen=True)
    class Factory:
        x: list = dataclasses.field(default_factory=list)

    for cls in (Mutable, Checked, Factory):
        with pytest.raises(TypeError):
            fast_init(cls)
