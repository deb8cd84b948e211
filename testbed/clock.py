"""The one timing clock of the testbed.

Every interval (device and cloud side) is measured with `now()`, the same
monotonic clock asyncio's loop schedules on, so a sleep until a deadline and
a measured interval agree. End-to-end latency starts and ends on the device's
clock; cloud intervals are measured on the cloud's clock and shipped back.
"""

from __future__ import annotations

import asyncio
import time

now = time.monotonic


def ms_since(t0: float) -> float:
    return (now() - t0) * 1000.0


async def sleep_until(deadline: float) -> None:
    delay = deadline - now()
    if delay > 0:
        await asyncio.sleep(delay)
