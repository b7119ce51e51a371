"""The online scheduler's scan keys: the change-log fast path and the span-skipping search agree with a plain scan."""

import random

from hypothesis import given
from hypothesis import strategies as st

from dualpath.request import Request
from dualpath.solver.waiting_keys import WaitingKeys, first_below

INF = float("inf")
KV = 100


class LoggedWaiting(list):
    """A waiting list that logs its changes as the simulator's `PendingView` does (`mark`, `changes_since`)."""

    def __init__(self):
        super().__init__()
        self.num_added, self.removed = 0, []

    def add(self, r):
        self.append(r)
        self.num_added += 1

    def remove_id(self, request_id):
        self[:] = [r for r in self if r.id != request_id]
        self.removed.append(request_id)

    def mark(self):
        return self.num_added, len(self.removed)

    def changes_since(self, mark):
        added, removed_at = mark
        num_new = self.num_added - added
        return self.removed[removed_at:], list(self[len(self) - num_new:]) if num_new else []


def req(i, rng):
    return Request(f"r{i}", i, 0, rng.randrange(0, 4000), rng.randrange(1, 4000), 10)


def keys_of(r):
    return r.context_tokens * KV, (INF if r.new_tokens > 2000 else r.context_tokens * KV)


def naive(reqs, past_horizon, threshold):
    return [(i, r) for i, r in enumerate(reqs) if keys_of(r)[1 if past_horizon else 0] < threshold]


@given(st.integers(0, 10_000), st.booleans())
def test_window_and_search_match_a_plain_scan_across_ticks(seed, foreign_removal):
    rng = random.Random(seed)
    wk = WaitingKeys(lambda r: 1.0 if r.new_tokens > 2000 else 0.0, KV, 0.5)
    waiting, count = LoggedWaiting(), 0
    for tick in range(12):
        for _ in range(rng.randrange(0, 40)):
            waiting.add(req(count, rng))
            count += 1
        if foreign_removal and tick == 6 and waiting:  # a removal the keys were not told of: a full re-read
            waiting.remove_id(waiting[0].id)
        reqs, keys_all, keys_short = wk.window(waiting, 4096)
        assert reqs == list(waiting)
        assert [(a, s) for a, s in zip(keys_all, keys_short)] == [keys_of(r) for r in waiting]
        past, limit = rng.random() < 0.7, rng.choice([INF, INF, rng.randrange(0, 800_000)])
        found = list(wk.unblocked(lambda past=past: past, lambda limit=limit: limit))
        assert found == naive(reqs, past, limit)
        taken = sorted(rng.sample(range(len(found)), min(len(found), rng.randrange(0, 6))))
        ids = [found[i][1].id for i in taken]
        wk.taken([found[i][0] for i in taken])
        for request_id in ids:
            waiting.remove_id(request_id)


@given(st.lists(st.sampled_from([1.0, 5.0, 9.0, INF]), max_size=300), st.sampled_from([2.0, 6.0, 10.0, INF]),
       st.integers(0, 300))
def test_first_below_is_the_first_key_below(keys, threshold, pos):
    n = len(keys)
    expect = next((i for i in range(pos, n) if keys[i] < threshold), n)
    assert first_below(keys, threshold, min(pos, n), n) == (expect if pos <= n else n)
