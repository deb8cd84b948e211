"""Replayed heads prepared once per run (actors/replay_frames.py): each pool gets the bytes and times it would have
recorded itself, and a pool given them runs a whole phase without ever importing torch."""

from __future__ import annotations

import asyncio
import json
import pickle
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from actors.cloud_replay import ReplayCloudServer
from actors.heads import Heads
from actors.replay_frames import prepare_replays
from testbed.config.loading import load_topology

pytestmark = [pytest.mark.timeout(300), pytest.mark.slow]  # each builds and times the model: over 1.5 s here

ROOT = Path(__file__).resolve().parents[1]
CUT = "layer2+butterfly"


@pytest.fixture(scope="module")
def topo(tmp_path_factory):
    from tests.conftest import MINIMAL

    path = tmp_path_factory.mktemp("replay") / "topo.yaml"
    path.write_text(MINIMAL)
    return load_topology(path, [
        "duration_s=1", "warmup_s=0", "strategies=[butterfly, cloud_only]", "devices.count=3",
        "devices.arrival.rate_hz=4", "networks.lte.jitter_ms=0", "pools.compute=replay", "cloud.compute=replay",
        "cloud.replay_speed=20", "cloud.max_batch_size=2"])


@pytest.fixture(scope="module")
def prepared(topo):
    return prepare_replays(topo.model_dump_json(), [(0, False), (1, False)])


def test_each_pool_gets_the_bytes_it_would_have_recorded_itself_and_no_model(topo, prepared):
    own = Heads(topo, 1)  # what pool 1 built and recorded before this change
    own.build(with_full_model=False)
    own.record_replays()
    p0, p1 = prepared
    assert (p0.pool_id, p1.pool_id) == (0, 1)
    for heads in prepared:
        assert heads.cuts == own.cuts and set(heads.by_cut) == set(own.by_cut)
        assert all(h.model is None for h in heads.by_cut.values())  # nothing a pool would need torch for
        assert heads.calibration.keys() == own.calibration.keys()
        assert all(ms > 0 for ms in heads.calibration.values())
    for cut in own.cuts:
        assert [w[3] for w in p1.by_cut[cut].replayed] == [w[3] for w in own.by_cut[cut].replayed]  # same bytes
        assert [w[4] for w in p1.by_cut[cut].replayed] == [w[4] for w in own.by_cut[cut].replayed]  # same headers
        assert p1.by_cut[cut].bytes_up == p0.by_cut[cut].bytes_up  # calibrated once, for every pool
        assert [w[3] for w in p0.by_cut[cut].replayed] != [w[3] for w in p1.by_cut[cut].replayed]  # own frames
    assert p0.calibration == p1.calibration


def test_one_pool_gets_its_heads_alone(topo):
    heads = prepare_replays(topo.model_dump_json(), [(3, True)])
    assert isinstance(heads, Heads) and heads.pool_id == 3
    assert "device_only" in heads.calibration  # the full model timed, for an absolute device profile


POOL = textwrap.dedent("""
    import asyncio, json, pickle, sys
    from actors.device_pool import DevicePool

    heads = pickle.loads(open(sys.argv[1], "rb").read())
    addr = json.loads(sys.argv[3])

    async def go():
        pool = DevicePool(0, open(sys.argv[2]).read(), [0, 1, 2])
        await pool.prepare(heads)
        info = await pool.connect([addr])
        await pool.run_phase("butterfly", 0)
        records = pool.drain(final=True)
        await pool.stop()
        return info, records

    info, records = asyncio.run(go())
    print(json.dumps({"torch": "torch" in sys.modules, "info_torch": info["torch_in_process"],
                      "records": records}))
""")


def test_a_pool_given_prepared_heads_runs_a_phase_without_torch(topo, prepared, tmp_path):
    js = topo.model_dump_json()
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    cloud = ReplayCloudServer(0, js)
    try:
        addr = asyncio.run_coroutine_threadsafe(cloud.start("127.0.0.1"), loop).result(120)
        (tmp_path / "heads.pkl").write_bytes(pickle.dumps(prepared[0]))
        (tmp_path / "topo.json").write_text(js)
        out = subprocess.run([sys.executable, "-c", POOL, str(tmp_path / "heads.pkl"), str(tmp_path / "topo.json"),
                              json.dumps(addr)], cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)
    finally:
        asyncio.run_coroutine_threadsafe(cloud.stop(), loop).result(30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["torch"] is False and result["info_torch"] is False
    records = result["records"]
    assert records and all(r["status"] == "completed" for r in records)
    payloads = [len(w[3]) for w in prepared[0].by_cut[CUT].replayed]
    for r in records:  # the recorded frame and its header went up, after the recorded head time
        assert r["cut"] == CUT and min(payloads) < r["bytes_up"] < max(payloads) + 1_000
        assert r["head_ms"] > 0
