"""The event queue's clock guard: an event past the horizon is one line, not a loop that never ends."""

import pytest

from dualpath.errors import InputError
from dualpath.runtime.sim.events import ARRIVAL, HORIZON_S, EventQueue


def test_an_event_past_the_horizon_is_refused_before_the_clock_stalls():
    # At 1e20 s a 50 ms tick is lost to rounding (t + 0.05 == t): a periodic handler would spin forever.
    assert 1e20 + 0.05 == 1e20 and HORIZON_S + 0.05 > HORIZON_S
    queue = EventQueue()
    for at in (1e20, float("inf"), float("nan")):
        with pytest.raises(InputError, match="past the 1e\\+12 s horizon"):
            queue.push(at, ARRIVAL, print)
    queue.push(HORIZON_S, ARRIVAL, lambda _: None)
    queue.run()
    assert queue.now_s == HORIZON_S and queue.num_events == 1
