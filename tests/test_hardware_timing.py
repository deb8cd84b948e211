"""Devices and replicas with a hardware profile keep to its times (in process: asyncio, no Ray)."""

from __future__ import annotations

import asyncio
import statistics

import pytest

from actors.cloud_profile import ProfileCloudServer
from actors.device_pool import DevicePool
from testbed.config.loading import load_topology
from testbed.domain import hardware


def _topology(write_topology, minimal_yaml, *overrides):
    base = ["warmup_s=0", "cloud.max_batch_wait_ms=2", "networks.lte.jitter_ms=0", "networks.lte.rtt_ms=0"]
    return load_topology(write_topology(minimal_yaml), base + list(overrides))


async def _device_only(topo, forbid_compute: bool):
    pool = DevicePool(0, topo.model_dump_json(), list(range(topo.device_count)))
    await pool.prepare()
    await pool.connect([])
    if forbid_compute:
        pool.heads.work = None  # any per-request compute now would fail the request
    try:
        await pool.run_phase("device_only", 0)
        return pool.drain(), pool
    finally:
        await pool.stop()


@pytest.mark.slow  # over 1.5 s here: out of the fast tier
def test_a_device_faster_than_the_host_is_replayed_at_the_profiles_time(write_topology, minimal_yaml):
    topo = _topology(write_topology, minimal_yaml, "strategies=[device_only]", "duration_s=2",
                     "devices.count=2", "devices.arrival.rate_hz=5", "device_classes.phone.hardware=jetson_tx2")
    recs, pool = asyncio.run(_device_only(topo, forbid_compute=True))
    target = hardware.resolve_device("jetson_tx2").full_model_ms
    assert target < pool.calibration["device_only"]  # the TX2 profile is faster than this host
    assert pool.mechanisms["phone"]["mechanism"] == "replayed"
    assert recs and all(r["status"] == "completed" for r in recs), [r["reason"] for r in recs]
    assert statistics.median(r["head_ms"] for r in recs) == target
    # the answer really comes at the profile's time, not the host's
    e2e = statistics.median(r["e2e_ms"] - r["encode_ms"] for r in recs)
    assert abs(e2e - target) <= 0.02 * target + 1.0, e2e
    assert all(r["energy_compute_mj"] == round(r["head_ms"] * 7.5, 4) for r in recs)  # the profile's 7.5 W


@pytest.mark.slow  # over 1.5 s here: out of the fast tier
def test_a_device_slower_than_the_host_is_time_scaled_to_the_profile(write_topology, minimal_yaml, tmp_path):
    board = tmp_path / "slow_board.yaml"
    board.write_text("kind: device\nfull_model_ms: 1500\ncompute_power_w: 2\n")
    topo = _topology(write_topology, minimal_yaml, "strategies=[device_only]", "duration_s=2",
                     "devices.count=1", "devices.arrival.rate_hz=1", f"device_classes.phone.hardware={board}")
    recs, pool = asyncio.run(_device_only(topo, forbid_compute=False))
    assert pool.calibration["device_only"] < 1500
    assert pool.mechanisms["phone"]["mechanism"] == "time-scaled"
    assert recs and all(r["status"] == "completed" for r in recs)
    head = statistics.median(r["head_ms"] for r in recs)
    assert abs(head - 1500) <= 0.02 * 1500
    assert statistics.median(r["e2e_ms"] for r in recs) >= 1500


@pytest.mark.slow  # over 1.5 s here: out of the fast tier
def test_a_replica_with_a_profile_answers_after_the_profiles_batch_time(write_topology, minimal_yaml, tmp_path):
    # times well above this host's decode, so a loaded 2-core host keeps up (an overrun is counted, not hidden)
    gpu = tmp_path / "gpu.yaml"
    gpu.write_text("kind: cloud\nbatch_ms: {1: 40, 4: 70}\ntail_batch_ms: {layer2: {1: 20, 4: 35}}\n")
    topo = _topology(write_topology, minimal_yaml, "strategies=[butterfly]", "duration_s=2",
                     "devices.count=8", "devices.arrival.rate_hz=4", f"cloud.hardware={gpu}",
                     "cloud.max_batch_size=4", "pools.compute=replay")  # no device compute in this process
    hw = hardware.resolve_cloud(str(gpu))

    async def go():
        js = topo.model_dump_json()
        cloud = ProfileCloudServer(0, js)
        addr = await cloud.start("127.0.0.1")
        pool = DevicePool(0, js, list(range(topo.device_count)))
        await pool.prepare()
        await pool.connect([addr])
        try:
            await pool.run_phase("butterfly", 0)
            return pool.drain(), cloud.stats(), addr
        finally:
            await pool.stop()
            await cloud.stop()

    recs, stats, info = asyncio.run(go())
    assert info["compute"] == "profile" and "PROFILE gpu" in info["device_name"]
    assert info["hardware"]["latency_by_batch"]["layer2+butterfly"]["1"]["measured_over_profile"] > 0
    assert recs and all(r["status"] == "completed" for r in recs), [r["reason"] for r in recs]
    errors = [abs(r["cloud_ms"] - hw.tail_ms("layer2+butterfly", r["batch_size"]))
              / hw.tail_ms("layer2+butterfly", r["batch_size"]) for r in recs]
    assert statistics.median(errors) <= 0.02, (errors, stats)
    assert max(r["batch_size"] for r in recs) > 1  # batching stays real
    # real answers: computed ahead from the pools' own frames, so none had to be computed on arrival
    assert stats["precomputed_answers"] == 32 and stats["computed_on_arrival"] == 0
    answers = {}
    for r in recs:  # the model's top-1, the same for the same frame every time
        assert r["top1"] >= 0
        answers.setdefault(r["request_id"] % 32, set()).add(r["top1"])
    assert all(len(v) == 1 for v in answers.values())


@pytest.mark.slow  # over 1.5 s here: out of the fast tier
def test_the_replicas_latency_curve_is_measured_by_the_same_code_a_gpu_uses(write_topology, minimal_yaml):
    """On a GPU (cloud.device cuda, no profile) start() records this curve; here the same code runs on the CPU."""
    from actors.cloud_server import CloudServer

    topo = _topology(write_topology, minimal_yaml, "strategies=[butterfly, cloud_only]", "duration_s=1",
                     "cloud.max_batch_size=4")
    cloud = CloudServer(0, topo.model_dump_json())
    info = cloud._build()
    assert info["measured_batch_ms"] is None  # measured at start on a GPU only
    curves = cloud.measure_curves()
    assert set(curves) == {"layer2+butterfly", "cloud_only"}
    for curve in curves.values():
        assert set(curve) == {1, 4} and 0 < curve[1] < curve[4]
    cloud._executor.shutdown()
