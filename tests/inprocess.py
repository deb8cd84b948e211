"""One phase of one strategy with a cloud replica and a device pool in this process, over loopback (no Ray)."""

from __future__ import annotations

from typing import Any

from actors.cloud_server import CloudServer
from actors.device_pool import DevicePool

# Record fields that two runs of the same phase must agree on whatever their timing (the event loop, the
# shaper's delivery mode): which requests, their outcome, cut, predicted class, bytes, replica and lost packets.
# Times, energies and rates are measured and differ run to run.
UNTIMED_FIELDS = ("device_id", "request_id", "status", "cut", "top1", "bytes_up", "strategy", "replica",
                  "lost_packets")


async def run_phase(topo: Any, strategy: str) -> list[dict[str, Any]]:
    """Every record of the phase (tails charged in full at the end)."""
    js = topo.model_dump_json()
    cloud = CloudServer(0, js)
    addr = await cloud.start("127.0.0.1")
    pool = DevicePool(0, js, list(range(topo.device_count)))
    try:
        await pool.prepare()
        await pool.connect([addr])
        await pool.run_phase(strategy, 0)
        return pool.drain(final=True)
    finally:
        await pool.stop()
        await cloud.stop()
