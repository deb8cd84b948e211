"""Completions as they happen: for the progress line and the start-up clock.

A pool holds a request's record back until its radio tail is known (up to
about 10 s on LTE), so counting released records shows a run's first answer
late. Each pool also counts every request the moment it ends (`LiveCounts`),
and the driver reads those counts about once a second (`DevicePool.live`).
The records themselves, and every statistic, still come from the released
records only.

Start-up is timed from the start of the command: the driver process's own
creation time, so interpreter start and imports count too.
"""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

import psutil

E2E_SAMPLES = 500  # per pool and poll: enough for the progress line's running p50


class LiveCounts:
    def __init__(self) -> None:
        self._counts: Counter[str] = Counter()
        self._e2e: list[float] = []
        self.first_done_wall: float | None = None  # time.time() of the pool's first completed request

    def add(self, rec: dict[str, Any]) -> None:
        self._counts[rec["status"]] += 1
        if rec["status"] == "completed":
            if self.first_done_wall is None:
                self.first_done_wall = time.time()
            if len(self._e2e) < E2E_SAMPLES:
                self._e2e.append(float(rec["e2e_ms"]))

    def take(self) -> dict[str, Any]:
        """Counts and e2e samples since the last call, and the first completion's wall time."""
        out = {"counts": dict(self._counts), "e2e_ms": self._e2e, "first_done_wall": self.first_done_wall}
        self._counts, self._e2e = Counter(), []
        return out


def command_started_wall() -> float:
    """When this process (the command the user typed) started, as time.time()."""

    return float(psutil.Process().create_time())


def since_command_start(wall: float) -> float:
    return wall - command_started_wall()
