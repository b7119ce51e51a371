"""UsageMeter and NicChannel by hand-computed examples: amounts spread over the buckets an interval covers,
widened buckets keep every amount, channels serve FIFO into a shared meter (the utilisation series)."""

from __future__ import annotations

import random

from dualpath.runtime.sim.nic import NicChannel, UsageMeter


def test_an_interval_spreads_over_the_buckets_it_covers():
    meter = UsageMeter(bucket_s=1.0)
    meter.add(0.5, 2.5, 4.0)  # 2 per second: half a bucket, a whole one, half a bucket
    meter.add(3.0, 3.0, 5.0)  # an empty interval: all at its start
    assert meter.buckets == [1.0, 2.0, 1.0, 5.0] and meter.total == 9.0
    assert meter.series(2.0) == [(0.0, 0.5), (1.0, 1.0), (2.0, 0.5), (3.0, 2.5)]


def test_a_run_past_the_last_bucket_doubles_their_width():
    meter = UsageMeter(bucket_s=1.0, max_buckets=4)
    meter.add(0.0, 1.0, 2.0)
    meter.add(5.0, 6.0, 4.0)  # past 4 buckets of 1 s: buckets of 2 s, the first two merged
    assert meter.bucket_s == 2.0 and meter.buckets == [2.0, 0.0, 4.0, 0.0]
    assert meter.series(1.0) == [(0.0, 1.0), (2.0, 0.0), (4.0, 2.0), (6.0, 0.0)]  # per 2 s bucket


def test_random_adds_keep_every_amount_as_the_buckets_widen():
    rng = random.Random(7)
    meter = UsageMeter(max_buckets=64)
    at, amounts = 0.0, []
    for _ in range(5000):
        at += rng.expovariate(50.0)
        amount = rng.random() * 1e6
        meter.add(at, at + rng.choice([0.0, rng.random() * 0.05, rng.random() * 3.0]), amount)
        amounts.append(amount)
    assert meter.bucket_s > 0.01 and len(meter.buckets) <= 64  # the run outgrew 64 buckets of 10 ms
    assert meter.total == sum(amounts)
    assert abs(sum(meter.buckets) - meter.total) <= 1e-9 * meter.total
    assert min(meter.buckets) >= 0.0


def test_channels_meter_their_transfers_into_a_shared_meter():
    node = UsageMeter(bucket_s=1.0)
    a = NicChannel("a", "kv", 10.0, meter=node)
    b = NicChannel("b", "kv", 10.0, meter=node)
    assert a.reserve(0.0, 20.0) == 2.0 and a.reserve(0.0, 10.0) == 3.0  # FIFO: the second waits
    assert b.reserve(1.0, 5.0, min_s=1.0) == 2.0  # submission-bound: 1 s, not 0.5
    assert node.buckets == [10.0, 15.0, 10.0, 0.0] and node.total == 35.0  # an end on a boundary opens its bucket
    assert a.bytes_total == 30.0 and b.bytes_total == 5.0
