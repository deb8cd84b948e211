"""Ends an embedded Ray's processes when its driver is killed (SIGKILL: no `finally` runs in the driver).

Started by `ray_runtime.ray_session` as `python ray_guard.py DRIVER_PID`, in its own session so a Ctrl-C
aimed at the driver's terminal does not reach it. Every second it notes the driver's descendants (Ray's
GCS, raylet, agents and workers are all started below the driver). When the driver is gone, it ends those
it noted that still run, by PID (checked against their start time, so a reused PID is never hit), and exits.
On a normal exit the driver shuts Ray down itself and then ends this guard.

Without it, Ray's GCS, raylet and workers follow a killed driver within seconds, but its dashboard and
runtime-env agents were seen running on for minutes. Imports psutil only, so it starts in a fraction of a second.
"""

from __future__ import annotations

import sys
import time

import psutil

POLL_S = 1.0


def guard(driver_pid: int) -> list[int]:
    """Watch until the driver is gone; returns the PIDs it then ended."""
    try:
        driver = psutil.Process(driver_pid)
    except psutil.NoSuchProcess:
        return []
    seen: dict[int, float] = {}
    me = psutil.Process().pid
    while True:
        try:
            for p in driver.children(recursive=True):
                if p.pid != me:
                    seen.setdefault(p.pid, p.create_time())
            if driver.status() == psutil.STATUS_ZOMBIE:
                break
        except psutil.NoSuchProcess:
            break
        time.sleep(POLL_S)
    ended = []
    for pid, started in seen.items():
        try:
            p = psutil.Process(pid)
            if p.create_time() == started:
                p.kill()
                ended.append(pid)
        except psutil.Error:
            pass
    return ended


if __name__ == "__main__":
    guard(int(sys.argv[1]))
