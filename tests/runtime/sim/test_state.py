"""The simulator's waiting requests: the change log policies read instead of re-scanning them."""

from dualpath.request import Request
from dualpath.runtime.sim.state import PendingView, ReqState


def state(i):
    return ReqState(Request(f"r{i}", i, 0, 100, 10, 5), 0.0, 8)


def test_the_log_gives_removals_and_the_new_tail_in_order():
    view = PendingView({})
    for i in range(3):
        view.add(state(i))
    mark = view.mark()
    assert view.pop("r1").req.id == "r1" and view.pop("r9") is None
    view.add(state(3))
    view.add(state(4))
    removed, added = view.changes_since(mark)
    assert removed == ["r1"] and [r.id for r in added] == ["r3", "r4"]
    assert [r.id for r in view] == ["r0", "r2", "r3", "r4"]
    assert view.changes_since(view.mark()) == ([], [])


def test_a_mark_older_than_the_trimmed_log_gets_none():
    view = PendingView({})
    mark = view.mark()
    for i in range(PendingView.MAX_LOG + 1):
        view.add(state(i))
        view.pop(f"r{i}")
    assert view.changes_since(mark) is None
    recent = view.mark()
    view.add(state(10**6))
    assert [r.id for r in view.changes_since(recent)[1]] == ["r1000000"]
