"""One phase of one strategy with a cloud replica and a device pool in this process, over loopback (no Ray)."""

from __future__ import annotations

from typing import Any

from actors.cloud_server import CloudServer
from actors.device_pool import DevicePool


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
