"""Device pool and cloud server together over real loopback TCP, in one process (no Ray)."""

from __future__ import annotations

import asyncio
import struct

import pytest

from actors.cloud_server import CloudServer
from actors.device_pool import DevicePool
from testbed.base.wire import encode_frame, read_frame
from testbed.config.loading import load_topology
from testbed.results.metrics import REQUEST_COLUMNS

pytestmark = pytest.mark.timeout(300)


def _topology(write_topology, minimal_yaml, *overrides):
    base = ["duration_s=1.5", "warmup_s=0", "strategies=[butterfly, cloud_only, device_only]",
            "devices.arrival.rate_hz=2", "devices.count=2", "cloud.max_batch_wait_ms=2",
            "networks.lte.jitter_ms=0", "throttling.rrc=off"]  # RRC waits: tests/test_rrc.py
    return load_topology(write_topology(minimal_yaml), base + list(overrides))


async def _start(topo):
    js = topo.model_dump_json()
    cloud = CloudServer(0, js)
    addr = await cloud.start("127.0.0.1")
    pool = DevicePool(0, js, list(range(topo.device_count)))
    await pool.prepare()
    await pool.connect([addr])
    return cloud, pool, addr


async def _one_phase(topo, strategy, before=None):
    """Start a cloud and a pool, run one phase, stop both; returns (records, cloud stats)."""
    cloud, pool, addr = await _start(topo)
    try:
        if before is not None:
            await before(cloud, addr)
        await pool.run_phase(strategy, 0)
        return pool.drain(), cloud.stats()
    finally:
        await pool.stop()
        await cloud.stop()


@pytest.mark.slow  # over 1.5 s here: out of the fast tier
def test_every_strategy_completes_with_real_bytes(write_topology, minimal_yaml):
    topo = _topology(write_topology, minimal_yaml)

    async def go():
        cloud, pool, _ = await _start(topo)
        out = {}
        for i, s in enumerate(topo.strategies):
            await pool.run_phase(s, i)
            out[s] = pool.drain()
        stats = cloud.stats()
        await pool.stop()
        await cloud.stop()
        return out, stats

    out, stats = asyncio.run(go())
    for strategy, recs in out.items():
        assert recs, strategy
        assert all(set(r) == set(REQUEST_COLUMNS) for r in recs)
        assert {r["status"] for r in recs} == {"completed"}, [r["reason"] for r in recs]
    for r in out["butterfly"]:
        # 8x28x28 int8 + zstd + header: a few KB, far below the 1.6 MB float32 map at layer2
        assert 1_000 < r["bytes_up"] < 8 * 28 * 28 + 1_000
        # LTE: half the 70 ms RTT each way + bytes at 5.85 (up) / 13 (down) Mbit/s. Never early; late by
        # at most a few ms of event-loop lag (both ends and two model threads share this process here).
        ideal_up = 35 + r["bytes_up"] * 8 / 5850
        ideal_down = 35 + r["bytes_down"] * 8 / 13000
        assert ideal_up - 0.5 <= r["uplink_ms"] <= ideal_up + 10
        assert ideal_down - 1.0 <= r["downlink_ms"] <= ideal_down + 10
        assert r["head_ms"] > 0
        assert r["e2e_ms"] >= r["head_ms"] + r["uplink_ms"] + r["server_ms"]
        assert r["energy_mj"] == pytest.approx(r["energy_compute_mj"] + r["energy_radio_mj"], abs=1e-3)
    for r in out["cloud_only"]:
        assert r["bytes_up"] > 5_000 and r["head_ms"] == 0  # a real JPEG goes up
    for r in out["device_only"]:
        assert r["bytes_up"] == 0 and r["uplink_ms"] is None and r["energy_radio_mj"] == 0
    assert stats["completed"] == len(out["butterfly"]) + len(out["cloud_only"])


@pytest.mark.slow  # over 1.5 s here: out of the fast tier
def test_head_time_is_stretched_to_the_device_speed(write_topology, minimal_yaml):
    topo = _topology(write_topology, minimal_yaml, "strategies=[device_only]", "device_classes.phone.speed=0.25")

    async def go():
        pool = DevicePool(0, topo.model_dump_json(), [0, 1])
        await pool.prepare()
        await pool.connect([])
        await pool.run_phase("device_only", 0)
        recs = pool.drain()
        await pool.stop()
        return pool.calibration["device_only"], recs

    host_ms, recs = asyncio.run(go())
    for r in recs:
        assert r["head_ms"] >= 4 * host_ms - 1e-3  # records keep 3 decimals
        assert r["e2e_ms"] >= r["head_ms"]


@pytest.mark.slow  # over 1.5 s here: out of the fast tier
def test_full_queue_rejects_with_a_reason_and_nothing_vanishes(write_topology, minimal_yaml):
    topo = _topology(write_topology, minimal_yaml, "strategies=[cloud_only]", "cloud.queue_limit=1",
                     "cloud.max_batch_size=1", "devices.count=6", "devices.arrival.rate_hz=10",
                     "networks.lte.uplink_mbps=1000", "networks.lte.rtt_ms=0")

    recs, stats = asyncio.run(_one_phase(topo, "cloud_only"))
    failed = [r for r in recs if r["status"] == "failed"]
    assert failed and all(r["reason"] == "queue_full (limit 1)" for r in failed)
    assert stats["rejected"] == len(failed)
    assert len(recs) == stats["requests"]  # every request sent ended as one record


@pytest.mark.slow  # over 1.5 s here: out of the fast tier
def test_request_timeout_is_recorded(write_topology, minimal_yaml):
    topo = _topology(write_topology, minimal_yaml, "strategies=[butterfly]", "request_timeout_s=0.2",
                     "devices.count=1", "duration_s=0.6")

    async def slow_model(cloud, _):
        cloud._parts["layer2+butterfly"] = _Slow(cloud._parts["layer2+butterfly"])

    recs, _ = asyncio.run(_one_phase(topo, "butterfly", slow_model))
    assert recs and all(r["status"] == "timed_out" for r in recs)
    assert all("request_timeout_s=0.2" in r["reason"] for r in recs)


class _Slow:
    def __init__(self, inner):
        self.inner = inner

    def __call__(self, x):
        import time

        time.sleep(0.5)
        return self.inner(x)


@pytest.mark.slow  # over 1.5 s here: out of the fast tier
@pytest.mark.parametrize("garbage", [
    b"GET / HTTP/1.1\r\n\r\n",
    b"SPB1" + struct.pack("!II", 10, 0) + b"{",  # truncated
    b"SPB1" + struct.pack("!II", 2, 2**31) + b"{}",  # oversized
    encode_frame({"type": "infer", "id": 1, "kind": "butterfly"}),  # infer before hello
])
def test_malformed_frames_close_that_connection_only(write_topology, minimal_yaml, garbage):
    topo = _topology(write_topology, minimal_yaml, "strategies=[butterfly]", "devices.count=1")

    async def send_garbage(_, addr):
        reader, writer = await asyncio.open_connection(addr["host"], addr["port"])
        writer.write(garbage)
        await writer.drain()
        writer.write_eof()
        with pytest.raises((EOFError, ConnectionError)):  # the server closes this connection
            await asyncio.wait_for(read_frame(reader), 5)

    recs, stats = asyncio.run(_one_phase(topo, "butterfly", send_garbage))  # the others are still served
    assert recs and all(r["status"] == "completed" for r in recs)
    assert stats["bad_frames"] == 1


@pytest.mark.slow  # over 1.5 s here: out of the fast tier
@pytest.mark.parametrize("policy", ["round_robin", "least_outstanding", "power_of_two"])
def test_balanced_devices_use_every_replica(write_topology, minimal_yaml, policy):
    topo = _topology(write_topology, minimal_yaml, "strategies=[butterfly]", "cloud.replicas=2",
                     f"cloud.load_balancing={policy}", "devices.count=2", "devices.arrival.rate_hz=6")

    async def go():
        js = topo.model_dump_json()
        clouds = [CloudServer(i, js) for i in range(2)]
        addrs = [await c.start("127.0.0.1") for c in clouds]
        pool = DevicePool(0, js, [0, 1])
        await pool.prepare()
        await pool.connect(addrs)
        try:
            await pool.run_phase("butterfly", 0)
            return pool.drain(), [c.stats() for c in clouds], [len(d.conns) for d in pool._devices]
        finally:
            await pool.stop()
            for c in clouds:
                await c.stop()

    recs, stats, conns = asyncio.run(go())
    assert conns == [2, 2]  # each device holds a connection to each replica
    assert all(r["status"] == "completed" for r in recs)
    per_device = {d: {r["replica"] for r in recs if r["device_id"] == d} for d in (0, 1)}
    assert per_device == {0: {0, 1}, 1: {0, 1}}
    assert all(s["completed"] > 0 for s in stats)


@pytest.mark.slow  # over 1.5 s here: out of the fast tier
def test_replayed_compute_sends_the_same_kind_of_bytes_without_computing(write_topology, minimal_yaml):
    topo = _topology(write_topology, minimal_yaml, "strategies=[butterfly]", "pools.compute=replay",
                     "devices.count=4", "devices.arrival.rate_hz=4")

    async def go():
        cloud, pool, _ = await _start(topo)
        try:
            pool.heads.work = None  # any real device compute now would fail the request
            await pool.run_phase("butterfly", 0)
            return pool.drain(), pool.calibration["layer2+butterfly"]
        finally:
            await pool.stop()
            await cloud.stop()

    recs, host_ms = asyncio.run(go())
    assert recs and all(r["status"] == "completed" for r in recs), [r["reason"] for r in recs]
    for r in recs:
        assert r["emu_wait_ms"] == 0 and r["head_ms"] >= host_ms / 0.5 - 1e-3  # phone: half the host's speed
        assert 1_000 < r["bytes_up"] < 8 * 28 * 28 + 1_000
