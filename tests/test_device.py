"""The emulated device (actors/device.py): one request's life through a real loopback replica, in one event loop,
ends as one record built from its steps (actors/steps.py)."""

from __future__ import annotations

import asyncio

import pytest

import actors.cloud_server as cloud_server
from actors.cloud_server import CloudServer
from actors.device_pool import DevicePool
from actors.steps import Arrival, EnergyResult, ExchangeResult, Steps, UplinkResult
from testbed.base import wire
from testbed.config.loading import load_topology
from testbed.results.metrics import BREAKDOWN_KEYS
from testbed.results.record import COLUMNS

pytestmark = pytest.mark.timeout(300)


def _topology(write_topology, minimal_yaml, *overrides):
    base = ["duration_s=1", "warmup_s=0", "strategies=[butterfly, cloud_only]", "devices.count=1",
            "cloud.max_batch_wait_ms=2", "networks.lte.jitter_ms=0"]
    return load_topology(write_topology(minimal_yaml), base + list(overrides))


async def _requests(topo, strategy: str, n: int, corrupt: bool = False):
    """`n` requests of one device, one after another, through a loopback replica; (records, bytes the replica
    read per request id)."""
    js = topo.model_dump_json()
    cloud = CloudServer(0, js)
    addr = await cloud.start("127.0.0.1")
    pool = DevicePool(0, js, [0])
    try:
        await pool.prepare()
        await pool.connect([addr])
        if corrupt:  # what goes up is not what the cut's codec says: the replica cannot decode it
            work = pool.heads.work
            pool.heads.work = lambda cut, frame: (*work(cut, frame)[:3], b"not a tensor", work(cut, frame)[4])
        dev = pool._devices[0]
        dev.start_phase(strategy)
        for i in range(n):
            await dev.request(strategy, "measure", i * 0.1)
        dev.end_phase()
        return pool.drain(final=True)
    finally:
        await pool.stop()
        await cloud.stop()


@pytest.fixture
def replica_reads(monkeypatch):
    """The bytes of each infer frame as the replica read it off its socket, by request id."""
    seen: dict[int, int] = {}
    real = cloud_server.read_frame

    async def read_frame(reader, *args):
        header, payload, nbytes = await real(reader, *args)
        if wire.message_type(header) == "infer":
            seen[int(header["id"])] = nbytes
        return header, payload, nbytes

    monkeypatch.setattr(cloud_server, "read_frame", read_frame)
    return seen


@pytest.mark.slow  # builds a model and a replica
@pytest.mark.parametrize("rrc", ["off", "on"])
def test_a_completed_request_adds_up_and_its_bytes_are_the_frame_the_replica_read(
        write_topology, minimal_yaml, replica_reads, rrc):
    topo = _topology(write_topology, minimal_yaml, f"throttling.rrc={rrc}")
    recs = asyncio.run(_requests(topo, "butterfly", 4))
    assert len(recs) == 4 and {r["status"] for r in recs} == {"completed"}, [r["reason"] for r in recs]
    assert all(tuple(r) == COLUMNS for r in recs)
    for r in recs:
        assert r["bytes_up"] == replica_reads[r["request_id"]] > 1_000  # the whole frame, header included
        assert r["bytes_down"] > 0 and r["replica"] == 0 and r["reason"] is None
        assert r["server_ms"] >= r["queue_ms"] + r["cloud_ms"] - 1e-3
    # e2e is its parts: the device's, the uplink (with the promotion), the server's, the downlink (with the DRX
    # wait); what is left is event-loop time between steps (median over the requests: the host is shared)
    gaps = sorted(r["e2e_ms"] - sum(r[k] for k in BREAKDOWN_KEYS if k not in ("queue_ms", "cloud_ms"))
                  - r["server_ms"] for r in recs)
    assert -0.5 <= gaps[len(gaps) // 2] <= 10, gaps
    if rrc == "on":
        assert all(r["rrc_ms"] == pytest.approx(r["rrc_promotion_ms"] + r["rrc_drx_ms"], abs=2e-3) for r in recs)
        assert recs[0]["energy_promotion_mj"] > 0 and recs[0]["rrc_state"] == "idle"
    for r in recs:
        radio = r["energy_transfer_mj"] + r["energy_promotion_mj"] + r["energy_tail_mj"]
        assert r["energy_radio_mj"] == pytest.approx(radio, abs=2e-4) and r["energy_tail_mj"] > 0


@pytest.mark.slow  # builds a model and a replica
def test_a_rejected_request_is_a_failed_record_with_the_replicas_reason(write_topology, minimal_yaml, replica_reads):
    topo = _topology(write_topology, minimal_yaml, "throttling.rrc=off")
    recs = asyncio.run(_requests(topo, "butterfly", 2, corrupt=True))
    assert len(recs) == 2
    for r in recs:
        assert r["status"] == "failed" and r["reason"].startswith("refused: zstd"), r  # the replica's own words
        assert r["bytes_up"] == replica_reads[r["request_id"]] and r["bytes_down"] > 0
        assert r["uplink_ms"] > 0 and r["top1"] is None and r["downlink_ms"] is None and r["queue_ms"] is None


def test_a_record_takes_each_field_from_one_step():
    """The uplink time is the answer's where there is one, else the shaper's; bytes are 0 until sent."""
    steps = Steps(Arrival("butterfly", "measure", 3, "g", 7, 0.5))
    f = steps.fields()
    assert f["bytes_up"] == 0 and f["bytes_down"] == 0 and f["uplink_ms"] is None and f["request_id"] == 7
    steps.uplink = UplinkResult(1200, 40.0, 0.1, 0, 0)
    assert steps.fields()["uplink_ms"] == 40.0 and steps.fields()["bytes_up"] == 1200
    steps.exchange = ExchangeResult(300, 0, 5.0, uplink_ms=42.5, queue_ms=1.0, cloud_ms=3.0)
    assert steps.fields()["uplink_ms"] == 42.5 and steps.fields()["bytes_down"] == 300


def test_energy_totals_follow_the_radio_and_a_tail_added_later():
    unused = EnergyResult(compute_mj=2.0, transfer_mj=0.0, promotion_mj=0.0, tail_mj=0.0, totals_known=True)
    assert unused.fields()["energy_mj"] == 2.0 and unused.fields()["energy_radio_mj"] == 0.0
    held = EnergyResult(compute_mj=2.0, transfer_mj=1.5, promotion_mj=0.25, tail_mj=0.5, totals_known=True)
    settled = held.with_tail(0.12345)
    assert settled.fields()["energy_tail_mj"] == 0.6235 and settled.fields()["energy_mj"] == pytest.approx(4.3735)
    unknown = EnergyResult(compute_mj=2.0, transfer_mj=None, promotion_mj=0.0, tail_mj=0.0, totals_known=False)
    assert unknown.fields()["energy_mj"] is None and unknown.fields()["energy_radio_mj"] is None


@pytest.mark.slow  # builds a model and two replicas
def test_a_replica_dying_under_a_request_is_retried_on_the_other_and_says_so(write_topology, minimal_yaml):
    topo = _topology(write_topology, minimal_yaml, "throttling.rrc=off", "cloud.replicas=2", "request_timeout_s=20")

    async def go():
        js = topo.model_dump_json()
        clouds = [CloudServer(i, js) for i in range(2)]
        addrs = [await c.start("127.0.0.1") for c in clouds]
        pool = DevicePool(0, js, [0])
        try:
            await pool.prepare()
            await pool.connect(addrs)
            dev = pool._devices[0]
            home = clouds[dev.conns[0].replica]

            async def dies(job, shaper, peer, cost):  # the home replica takes the frame, then its end goes away
                await asyncio.sleep(0.2)
                peer.writer.transport.abort()

            home._handle = dies
            dev.start_phase("butterfly")
            await dev.request("butterfly", "measure", 0.0)
            dev.end_phase()
            return pool.drain(final=True), home.replica, pool.fault_stats()
        finally:
            await pool.stop()
            for c in clouds:
                await c.stop()

    recs, dead, stats = asyncio.run(go())
    assert len(recs) == 1 and recs[0]["status"] == "completed", recs
    r = recs[0]
    assert r["replica"] == 1 - dead and r["reason"].startswith(f"retried after replica {dead} died")
    assert stats["retries"] == 1 and r["bytes_up"] > 1_000 and r["uplink_ms"] > 0
