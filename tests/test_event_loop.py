"""uvloop against asyncio's own loop on one small in-process run: the same records, field for field (timing
fields aside), and each loop reports its own name."""

from __future__ import annotations

import asyncio

import pytest

from testbed.base import event_loop
from testbed.config.loading import load_topology
from tests.inprocess import UNTIMED_FIELDS, run_phase

uvloop = pytest.importorskip("uvloop")


async def _records_and_loop(topo):
    return await run_phase(topo, "cloud_only"), event_loop.running_loop_name()


def _stable(records):
    return sorted((tuple(r.get(k) for k in UNTIMED_FIELDS), sorted(r)) for r in records)


@pytest.mark.slow
def test_uvloop_and_asyncio_give_the_same_records():
    topo = load_topology("topologies/smoke.yaml", ["duration_s=2", "warmup_s=0"])
    fast, fast_name = event_loop.run(_records_and_loop(topo), uvloop.new_event_loop)
    plain, plain_name = event_loop.run(_records_and_loop(topo), asyncio.new_event_loop)
    assert (fast_name, plain_name) == ("uvloop", "asyncio")
    assert fast and [r["status"] for r in fast].count("completed") == len(fast)
    assert _stable(fast) == _stable(plain)  # same requests, same outcomes, same bytes, same columns


def test_new_loop_follows_rays_switch(monkeypatch):
    monkeypatch.setenv(event_loop.ENV, "0")
    loop = event_loop.new_loop()
    assert event_loop.loop_name(loop) == "asyncio"
    loop.close()
    monkeypatch.setenv(event_loop.ENV, "1")
    loop = event_loop.new_loop()
    assert event_loop.loop_name(loop) == "uvloop"
    loop.close()
