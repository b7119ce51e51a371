"""NIC emulation: pacing, weighted lane shares, an idle lane's share going to the busy one."""

from __future__ import annotations

import threading
import time

import pytest

from dualpath.errors import SpecError
from dualpath.runtime.transports.ratelimit import (
    KV_LANE,
    MODEL_LANE,
    NicLimiter,
    cnic_limiter,
    gbps_to_bytes_per_s,
    snic_limiter,
)

MB = 1_000_000


def _saturate(limiter: NicLimiter, lanes: dict[str, int], chunk_bytes: int, duration_s: float) -> None:
    """Run `lanes[lane]` threads per lane, each acquiring chunks back to back for `duration_s`."""
    stop = threading.Event()

    def worker(lane: str) -> None:
        while not stop.is_set():
            limiter.acquire(chunk_bytes, lane)

    threads = [threading.Thread(target=worker, args=(lane,)) for lane, n in lanes.items() for _ in range(n)]
    for thread in threads:
        thread.start()
    time.sleep(duration_s)
    stop.set()
    for thread in threads:
        thread.join(timeout=5)


def test_unlimited_limiter_never_waits_and_counts():
    limiter = snic_limiter("n0", None)
    assert limiter.unlimited
    assert limiter.acquire(10 * MB) == 0.0
    assert limiter.stats["storage"].granted_bytes == 10 * MB


def test_single_lane_paces_to_rate():
    limiter = snic_limiter("n0", 20 * MB)
    began = time.monotonic()
    for _ in range(40):
        limiter.acquire(100_000)
    elapsed = time.monotonic() - began
    # 4 MB at 20 MB/s is 0.2 s; the first grant is free, so at least 39/40 of it.
    assert elapsed >= 0.19
    assert elapsed < 1.5


def test_burst_lets_an_idle_link_send_at_once():
    limiter = snic_limiter("n0", 10 * MB, burst_bytes=2 * MB)
    time.sleep(0.05)
    began = time.monotonic()
    limiter.acquire(1 * MB)
    limiter.acquire(1 * MB)
    assert time.monotonic() - began < 0.09  # without the burst this is 0.1 s


def test_saturated_lanes_share_by_weight():
    limiter = cnic_limiter("e0", 40 * MB, model_weight=3, kv_weight=1)
    _saturate(limiter, {MODEL_LANE: 2, KV_LANE: 2}, 200_000, 1.2)
    model = limiter.stats[MODEL_LANE].granted_bytes
    kv = limiter.stats[KV_LANE].granted_bytes
    share = model / (model + kv)
    assert share == pytest.approx(0.75, abs=0.08)
    # The link stays busy: close to rate * duration (a loaded machine may lose some).
    assert 0.6 * 40 * MB * 1.2 <= model + kv <= 1.15 * 40 * MB * 1.2 + 4 * 200_000


def test_paper_weights_give_kv_a_small_share():
    limiter = cnic_limiter("e0", 40 * MB)  # 192 : 64 as the paper's low VL table
    _saturate(limiter, {MODEL_LANE: 2, KV_LANE: 2}, 100_000, 0.8)
    model = limiter.stats[MODEL_LANE].granted_bytes
    kv = limiter.stats[KV_LANE].granted_bytes
    assert kv / (model + kv) == pytest.approx(64 / 256, abs=0.08)


def test_idle_model_lane_leaves_kv_the_full_rate():
    limiter = cnic_limiter("e0", 40 * MB, model_weight=3, kv_weight=1)
    _saturate(limiter, {KV_LANE: 2}, 200_000, 1.0)
    kv = limiter.stats[KV_LANE].granted_bytes
    assert limiter.stats[MODEL_LANE].granted_bytes == 0
    # Far above the 25% KV share: KV takes the whole link.
    assert kv >= 0.7 * 40 * MB * 1.0


def test_idle_lane_does_not_bank_credit():
    limiter = cnic_limiter("e0", 40 * MB, model_weight=1, kv_weight=1)
    _saturate(limiter, {KV_LANE: 2}, 100_000, 0.3)  # model idle meanwhile
    limiter.reset_stats()
    _saturate(limiter, {MODEL_LANE: 2, KV_LANE: 2}, 100_000, 0.6)
    model = limiter.stats[MODEL_LANE].granted_bytes
    kv = limiter.stats[KV_LANE].granted_bytes
    # The model lane did not accumulate a backlog of share while idle: the split stays about even.
    assert model / (model + kv) == pytest.approx(0.5, abs=0.1)


def test_bad_arguments_are_spec_errors():
    with pytest.raises(SpecError, match="rate_bytes_per_s"):
        NicLimiter("x", 0)
    with pytest.raises(SpecError, match="weight"):
        NicLimiter("x", 1.0, {"kv": 0})
    with pytest.raises(SpecError, match="lane"):
        cnic_limiter("e0", 1e9).acquire(10, "storage")


def test_gbps_conversion():
    assert gbps_to_bytes_per_s(400) == 50e9
