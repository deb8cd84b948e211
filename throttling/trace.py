"""Trace-driven link capacity: replay a recorded cellular link (Mahimahi format).

A fixed link rate hides what makes cellular links hard for split computing: the
capacity swings by 10x within seconds and drops to zero in outages. A Mahimahi
trace records when the link could deliver a 1500-byte packet (one line, one
millisecond timestamp, one delivery opportunity); replaying it makes the
emulated link as bursty as the recorded one.

Semantics follow mahimahi's `mm-link` (see shared/traces/README.md beside the repository):
opportunities are byte-accounted (one opportunity may carry parts of several
packets), an unused opportunity is wasted, and the trace loops with a period
equal to its last timestamp (line k of loop n is at n * period + ts[k]).

The shaper clocks packets through a serializer: `RateSerializer` for a fixed
rate, `TraceSerializer` for a trace. Both map (packet size, time it is ready)
to the time its last byte has crossed the link, and keep the link's state.
"""

from __future__ import annotations

import functools
import math
import os
import random
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from testbed.base.files import MAX_TRACE_BYTES, file_problem

OPPORTUNITY_BYTES = 1500
# A ready time this close after an opportunity still catches it: a departure time handed
# back as the next ready time must not lose its opportunity to float round-off (ms).
_EPS_MS = 1e-3


class TraceError(ValueError):
    """A trace file that cannot be read or breaks the Mahimahi format."""


def _parse_error(path: str, lineno: int, line: str, previous: int | None) -> TraceError:
    where = f"{path}: line {lineno}"
    if not line.strip():
        return TraceError(f"{where}: empty line")
    text = line.strip()
    if not text.isdigit():
        return TraceError(f"{where}: not a number: {text!r}")
    return TraceError(f"{where}: timestamp {int(text)} is smaller than the previous one ({previous})")


def _parse(text: str, path: str) -> np.ndarray:
    lines = text.splitlines()
    if not lines:
        raise TraceError(f"{path}: the trace is empty")
    try:
        values = np.array([int(line) for line in lines], dtype=np.int64)
        ok = all(line.strip().isdigit() for line in lines)  # int() also takes '-3', '+3', '1_0'
    except ValueError:
        ok = False
    if ok:
        drops = np.flatnonzero(np.diff(values) < 0)
        if not drops.size:
            if values[-1] <= 0:
                raise TraceError(f"{path}: the last timestamp must be > 0")
            values.flags.writeable = False
            return values
    previous = None  # slow path: find the first bad line to name it
    for lineno, line in enumerate(lines, start=1):
        text = line.strip()
        if not text.isdigit() or (previous is not None and int(text) < previous):
            raise _parse_error(path, lineno, line, previous)
        previous = int(text)
    raise AssertionError("unreachable")


@functools.lru_cache(maxsize=32)
def _load_cached(path: str) -> MahimahiTrace:
    if (problem := file_problem(path, MAX_TRACE_BYTES)) is not None:  # never open a FIFO or /dev/zero
        raise TraceError(f"{path}: cannot read: {problem}")
    try:
        with open(path, encoding="ascii") as f:
            text = f.read()
    except OSError as e:
        raise TraceError(f"{path}: cannot read: {e.strerror or e}") from e
    except UnicodeDecodeError as e:
        raise TraceError(f"{path}: not a text trace: {e.reason} at byte {e.start}") from e
    return MahimahiTrace(path, _parse(text, path))


@dataclass(frozen=True)
class MahimahiTrace:
    """One direction of a recorded link. Equality and hash go by `path` (the array is not hashable)."""

    path: str
    timestamps_ms: np.ndarray = field(compare=False, repr=False)  # int64, non-decreasing, read-only

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> MahimahiTrace:
        """Read and validate a trace file; loaded once per path (cached)."""
        return _load_cached(os.fspath(path))

    @property
    def period_ms(self) -> int:
        return int(self.timestamps_ms[-1])

    @property
    def mean_mbps(self) -> float:
        return len(self.timestamps_ms) * OPPORTUNITY_BYTES * 8 / self.period_ms / 1000.0

    def opportunities_before(self, t_ms: float) -> int:
        """How many opportunities (over all loops) lie strictly before trace time `t_ms`.

        Opportunity times grow with their global index (loop * lines + line), so this is
        also the global index of the first opportunity at or after `t_ms`.
        """
        if t_ms <= 0:
            return 0
        ts, period, n = self.timestamps_ms, self.period_ms, len(self.timestamps_ms)
        loop = math.floor(t_ms / period)
        rest = t_ms - loop * period  # in [0, period)
        count = int(np.searchsorted(ts, rest, side="left"))  # loop `loop`
        if loop >= 1:  # loop - 1 ends at loop * period: all of it, but the lines at exactly t_ms
            count += int(np.searchsorted(ts, rest + period, side="left")) + (loop - 1) * n
        return count

    def opportunity_ms(self, index: int) -> int:
        """Trace time of the opportunity with global index `index` (looping)."""
        loop, line = divmod(index, len(self.timestamps_ms))
        return loop * self.period_ms + int(self.timestamps_ms[line])

    def capacity_bytes(self, start_ms: float, end_ms: float) -> int:
        """Bytes the link can carry in trace time [start_ms, end_ms), loops included."""
        if end_ms <= start_ms:
            return 0
        return OPPORTUNITY_BYTES * (self.opportunities_before(end_ms) - self.opportunities_before(start_ms))

    def rate_mbps(self, start_ms: float, end_ms: float) -> float:
        """Mean capacity over [start_ms, end_ms), in Mbit/s."""
        if end_ms <= start_ms:
            raise ValueError("end_ms must be > start_ms")
        return self.capacity_bytes(start_ms, end_ms) * 8 / (end_ms - start_ms) / 1000.0


class Serializer(Protocol):
    def depart(self, size: int, t_ready: float) -> float: ...


class RateSerializer:
    """A fixed-rate link: each packet takes size/rate after the link is free."""

    def __init__(self, rate_mbps: float):
        if rate_mbps <= 0:
            raise ValueError("rate_mbps must be > 0")
        self.rate_mbps = rate_mbps
        self.busy_until = 0.0

    def depart(self, size: int, t_ready: float) -> float:
        """When the last byte of a `size`-byte packet ready at `t_ready` has been clocked out (s)."""
        self.busy_until = max(t_ready, self.busy_until) + size * 8 / (self.rate_mbps * 1e6)
        return self.busy_until


class TraceSerializer:
    """A trace-driven link: packets ride the trace's delivery opportunities in order.

    Trace time `offset_ms` is monotonic time `t0`; the link starts there (the first
    opportunity used is the first at trace time >= offset_ms, even for packets ready
    before t0). State: the current opportunity (global index, loops included) and the
    bytes left in it. Each call is O(1) plus one binary search when the link was idle.
    """

    def __init__(self, trace: MahimahiTrace, t0: float, offset_ms: float = 0.0):
        if offset_ms < 0:
            raise ValueError("offset_ms must be >= 0")
        self.trace = trace
        self.t0 = t0
        self.offset_ms = offset_ms
        self._index = trace.opportunities_before(offset_ms - _EPS_MS)
        self._left = OPPORTUNITY_BYTES

    def _monotonic(self, trace_ms: int) -> float:
        return self.t0 + (trace_ms - self.offset_ms) / 1000.0

    def depart(self, size: int, t_ready: float) -> float:
        """Monotonic time (s) of the opportunity that carries the packet's last byte."""
        if size <= 0:
            raise ValueError("size must be > 0")
        trace = self.trace
        ready_ms = self.offset_ms + (t_ready - self.t0) * 1000.0 - _EPS_MS
        if trace.opportunity_ms(self._index) < ready_ms:  # idle link: what it left unused is wasted
            self._index = trace.opportunities_before(ready_ms)
            self._left = OPPORTUNITY_BYTES
        if size <= self._left:
            last = self._index
            self._left -= size
        else:
            extra = math.ceil((size - self._left) / OPPORTUNITY_BYTES)  # more opportunities needed
            last = self._index + extra
            self._left = extra * OPPORTUNITY_BYTES - (size - self._left)
        self._index = last
        if self._left == 0:
            self._index, self._left = last + 1, OPPORTUNITY_BYTES
        return self._monotonic(trace.opportunity_ms(last))


def trace_offset_ms(trace: MahimahiTrace, mode: str | float, rng: random.Random) -> float:
    """Where in the trace a link starts: "random" (uniform in [0, period)) or a time in ms (mod period)."""
    if isinstance(mode, str):
        if mode != "random":
            raise ValueError(f"trace offset must be 'random' or a number of ms, not {mode!r}")
        return rng.random() * trace.period_ms
    return float(mode) % trace.period_ms
