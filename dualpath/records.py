"""Frozen records built hundreds of thousands of times per simulated run, constructed cheaply.

A frozen dataclass's generated `__init__` assigns each field through `object.__setattr__` (its own
`__setattr__` refuses), one call per field: for the engine reports, batch items, assignments and
request records a simulation creates per event, that was 6-7% of a 2,048-agent run. `fast_init`
replaces it with one that fills the instance's `__dict__` directly. Everything else stays the
dataclass's: the instance is still frozen (assignment raises `FrozenInstanceError`), and equality,
hashing, `repr`, `replace` and `asdict` read the same fields.
"""

from __future__ import annotations

import dataclasses
from typing import TypeVar

T = TypeVar("T")


def fast_init(cls: type[T]) -> type[T]:
    """Give the frozen dataclass `cls` an `__init__` with the same signature that sets the fields at once.

    Only for plain records: no `__post_init__`, no `default_factory`, no `InitVar`, no `slots`."""
    if not dataclasses.is_dataclass(cls) or not cls.__dataclass_params__.frozen:  # type: ignore[attr-defined]
        raise TypeError(f"{cls.__name__}: fast_init is for frozen dataclasses")
    if hasattr(cls, "__post_init__") or "__slots__" in cls.__dict__:
        raise TypeError(f"{cls.__name__}: fast_init cannot run __post_init__ or fill slots")
    fields = dataclasses.fields(cls)
    defaults: dict[str, object] = {}
    params = []
    for f in fields:
        if not f.init or f.default_factory is not dataclasses.MISSING:
            raise TypeError(f"{cls.__name__}.{f.name}: fast_init needs init fields with plain defaults")
        if f.default is dataclasses.MISSING:
            params.append(f.name)
        else:
            defaults[f"_default_{f.name}"] = f.default
            params.append(f"{f.name}=_default_{f.name}")
    # Built from source, as dataclasses builds its own; one store per key is faster than update().
    stores = "".join(f"    fields[{f.name!r}] = {f.name}\n" for f in fields)
    source = f"def __init__(self, {', '.join(params)}):\n    fields = self.__dict__\n{stores}"
    namespace: dict[str, object] = dict(defaults)
    exec(source, namespace)  # the source is built from the field names alone
    init = namespace["__init__"]
    init.__qualname__ = f"{cls.__qualname__}.__init__"  # type: ignore[attr-defined]
    setattr(cls, "__init__", init)  # noqa: B010 - mypy refuses a method assignment spelled directly
    return cls
