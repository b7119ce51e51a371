"""Fixtures more than one test module uses. Plain specs and builders shared by a folder's tests live in its
`cases.py` (they are needed at collection time, in `parametrize`, where fixtures are not available)."""

from __future__ import annotations

import sys

import pytest

from dualpath.models.mooncake import load_mooncake
from dualpath.request import Workload
from tests.paths import MOONCAKE_TRACE

NIXL_APART = ("nixl_cu12 and OR-Tools abort a process that loads both (their bundled libraries clash: "
              "free(): invalid pointer): nixl tests run in a pytest process of their own, `pytest -m nixl` "
              "(make test runs it after the rest)")


@pytest.hookimpl(trylast=True)  # after `-m` and `-k` have deselected
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """A session that mixes nixl tests with others skips the nixl ones (see NIXL_APART)."""
    nixl = [item for item in items if item.get_closest_marker("nixl")]
    if nixl and len(nixl) < len(items):
        for item in nixl:
            item.add_marker(pytest.mark.skip(reason=NIXL_APART))
    elif nixl and "ortools" in sys.modules:  # a test module imported it at collection: say which rule broke
        raise pytest.UsageError("collecting the tests loaded OR-Tools, so the nixl session would crash: "
                                "import it inside tests, not at module level (" + NIXL_APART + ")")


@pytest.fixture(scope="session")
def mooncake_trace() -> Workload:
    """The bundled Mooncake trace, imported once: a `Workload` is frozen, so tests can share it."""
    return load_mooncake(MOONCAKE_TRACE)
