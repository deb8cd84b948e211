"""The dynamic batcher on its own, and the device table / arrival processes."""

from __future__ import annotations

import asyncio
import dataclasses
import statistics
import time
from itertools import pairwise

import pytest

from testbed.config.schema import Arrival, pool_slices
from testbed.domain.batching import DynamicBatcher
from testbed.plan.devices import arrivals


def run(coro):
    return asyncio.run(coro)


def test_batches_fill_up_to_max_size():
    seen = []

    async def double(items):
        seen.append(list(items))
        return [2 * i for i in items]

    async def go():
        b = DynamicBatcher(double, max_batch_size=4, max_wait_s=0.05)
        out = await asyncio.gather(*(b.submit(i) for i in range(10)))
        await b.close()
        return out

    assert run(go()) == [2 * i for i in range(10)]
    assert [len(s) for s in seen] == [4, 4, 2]


def test_a_lone_request_waits_at_most_max_wait():
    async def ident(items):
        return items

    async def go():
        b = DynamicBatcher(ident, max_batch_size=8, max_wait_s=0.05)
        t0 = time.monotonic()
        assert await b.submit("x") == "x"
        dt = time.monotonic() - t0
        await b.close()
        return dt

    assert 0.045 <= run(go()) < 0.2


def test_requests_arriving_within_the_wait_share_a_batch():
    sizes = []

    async def ident(items):
        sizes.append(len(items))
        return items

    async def go():
        b = DynamicBatcher(ident, max_batch_size=8, max_wait_s=0.1)
        first = asyncio.create_task(b.submit(1))
        await asyncio.sleep(0.02)
        await asyncio.gather(first, b.submit(2))
        await b.close()

    run(go())
    assert sizes == [2]


def test_an_exception_reaches_every_caller_and_the_batcher_keeps_going():
    calls = 0

    async def flaky(items):
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("boom")
        return items

    async def go():
        b = DynamicBatcher(flaky, max_batch_size=3, max_wait_s=0.01)
        results = await asyncio.gather(*(b.submit(i) for i in range(3)), return_exceptions=True)
        assert all(isinstance(r, RuntimeError) and str(r) == "boom" for r in results)
        assert await b.submit(7) == 7
        await b.close()

    run(go())


def test_bad_arguments_fail_at_construction():
    with pytest.raises(ValueError):
        DynamicBatcher(lambda items: items, max_batch_size=0, max_wait_s=0.1)


def test_periodic_arrivals_are_evenly_spaced_with_a_phase():
    it = arrivals(Arrival(process="periodic", rate_hz=4.0, seed=1), device_id=3)
    ts = [next(it) for _ in range(5)]
    assert 0 <= ts[0] < 0.25
    assert all(b - a == pytest.approx(0.25) for a, b in pairwise(ts))
    other = arrivals(Arrival(process="periodic", rate_hz=4.0, seed=1), device_id=4)
    assert next(other) != ts[0]  # devices do not fire in step


def test_poisson_arrivals_have_the_configured_mean_rate():
    it = arrivals(Arrival(process="poisson", rate_hz=2.0, seed=5), device_id=0)
    ts = [next(it) for _ in range(4000)]
    gaps = [b - a for a, b in pairwise(ts)]
    assert statistics.mean(gaps) == pytest.approx(0.5, rel=0.05)
    assert statistics.stdev(gaps) == pytest.approx(0.5, rel=0.1)  # exponential: sd = mean


def test_arrivals_are_reproducible():
    a = Arrival(process="poisson", rate_hz=1.0, seed=9)
    first = arrivals(a, 1)
    second = arrivals(a, 1)
    assert [next(first) for _ in range(10)] == [next(second) for _ in range(10)]


def test_pool_slices_cover_every_device_once():
    slices = pool_slices(250, 100)
    assert [len(s) for s in slices] == [84, 83, 83]
    assert [i for s in slices for i in s] == list(range(250))
    assert pool_slices(5, 100) == [range(0, 5)]


def test_absolute_device_profile_sets_speed_from_the_hosts_calibrated_time():
    from actors.device_pool import DevicePool
    from actors.heads import Head
    from testbed.config.loading import load_topology

    topo = load_topology("topologies/smoke.yaml", ["device_classes.phone.full_model_ms=480",
                                                   "device_classes.host.full_model_ms=60"])
    pool = DevicePool(0, topo.model_dump_json(), [0, 3])
    pool.heads.by_cut["device_only"] = Head("device_only", object(), 0.0, 0, host_ms=120.0)  # ResNet-50: 120 ms
    phone = pool.specs[0]
    assert pool._speed(phone) == 0.25  # 120 / 480: a quarter of the host's speed
    faster = dataclasses.replace(phone, full_model_ms=60.0)
    assert pool._speed(faster) == 1.0  # cannot emulate a device faster than the host: clamped
    relative = dataclasses.replace(phone, full_model_ms=None)
    assert pool._speed(relative) == phone.speed
    pool._executor.shutdown()
