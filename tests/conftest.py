"""Fixtures more than one test module uses. Plain specs and builders shared by a folder's tests live in its
`cases.py` (they are needed at collection time, in `parametrize`, where fixtures are not available)."""

from __future__ import annotations

import pytest

from dualpath.models.mooncake import load_mooncake
from dualpath.request import Workload
from tests.paths import MOONCAKE_TRACE


@pytest.fixture(scope="session")
def mooncake_trace() -> Workload:
    """The bundled Mooncake trace, imported once: a `Workload` is frozen, so tests can share it."""
    return load_mooncake(MOONCAKE_TRACE)
