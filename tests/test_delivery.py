"""`throttling.delivery` packet against message on one small in-process run: the same requests, outcomes, bytes
and columns, and each request's uplink time the same within the event loop's timer tolerance."""

from __future__ import annotations

import asyncio
import statistics

import pytest

from testbed.base import event_loop
from testbed.config.loading import load_topology
from tests.inprocess import UNTIMED_FIELDS, run_phase


def _run(delivery: str) -> dict[tuple[int, int], dict]:
    topo = load_topology("topologies/smoke.yaml", ["duration_s=3", "warmup_s=0", "devices[1].link.jitter_ms=0",
                                                   f"throttling.delivery={delivery}"])
    records = event_loop.run(run_phase(topo, "cloud_only"), asyncio.new_event_loop)  # a 16 KB JPEG: many packets
    return {(r["device_id"], r["request_id"]): r for r in records}


@pytest.mark.slow  # two in-process runs with the real model
def test_message_delivery_keeps_records_bytes_and_uplink_times():
    packet, message = _run("packet"), _run("message")
    assert packet and set(packet) == set(message)
    assert all(r["status"] == "completed" for r in [*packet.values(), *message.values()])
    for key, p in packet.items():
        m = message[key]
        assert {k: m.get(k) for k in UNTIMED_FIELDS} == {k: p.get(k) for k in UNTIMED_FIELDS}
        assert sorted(m) == sorted(p)  # the same columns
    # same plan, so the same completion: paired per request, within a couple of millisecond timer ticks
    diffs = [message[k]["uplink_ms"] - packet[k]["uplink_ms"] for k in packet]
    assert abs(statistics.median(diffs)) <= 2.0, diffs
    assert all(abs(d) <= max(6.0, 0.1 * packet[k]["uplink_ms"]) for d, k in zip(diffs, packet, strict=True)), diffs
