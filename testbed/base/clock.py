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


def _boot_id() -> str:
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            return f.read().strip()
    except OSError:
        return ""


# CLOCK_MONOTONIC is one clock per booted kernel: two processes with the same boot id
# (device pools and cloud replicas on one host) may compare `now()` values directly.
BOOT_ID = _boot_id()


def same_clock(peer_boot_id: str | None) -> bool:
    return bool(BOOT_ID) and peer_boot_id == BOOT_ID


def ms_since(t0: float) -> float:
    return (now() - t0) * 1000.0


async def sleep_until(deadline: float) -> None:
    delay = deadline - now()
    if delay > 0:
        await asyncio.sleep(delay)
