"""Writes planned byte ranges to their streams at their planned times: one queue and one timer per link.

The shaper first wrote each message from its own coroutine: a lock for the
stream's order, then one `asyncio.sleep` per packet group, each a future, a
timer and a task step. At 1,000 requests/s on one pool that was a large share
of the pool's event loop (docs/benchmarks.md, "Density"). Here a link keeps
its planned writes in one FIFO queue, in plan order (arrivals never decrease
on a link), and arms a single timer for the head of the queue. When it fires,
every byte range due within `coalesce_s` is written, neighbouring ranges of
one message in one `write`; the last range of a message is never written
before its exact time. The message's future then gets the time its last byte
was written.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import NamedTuple

from testbed.clock import now


class _Range(NamedTuple):
    arrival: float
    writer: asyncio.StreamWriter
    data: bytes
    start: int
    end: int
    done: asyncio.Future[float] | None  # set on a message's last range


class TimedWriter:
    def __init__(self, coalesce_s: float):
        self.coalesce_s = coalesce_s
        self._queue: deque[_Range] = deque()
        self._timer: asyncio.TimerHandle | None = None

    def write(self, writer: asyncio.StreamWriter, data: bytes, ends: list[int],
              arrivals: list[float]) -> asyncio.Future[float]:
        """Queue one message: byte `ends[i-1]:ends[i]` is due at `arrivals[i]`. Resolves to the last write's time."""
        loop = asyncio.get_running_loop()
        done: asyncio.Future[float] = loop.create_future()
        if not ends:
            done.set_result(now())
            return done
        start, last = 0, len(ends) - 1
        for i, (end, arrival) in enumerate(zip(ends, arrivals, strict=True)):
            self._queue.append(_Range(arrival, writer, data, start, end, done if i == last else None))
            start = end
        if self._timer is None:
            if self._queue[0].arrival <= now():
                self._fire()  # due already (a fast link, or a late caller): no extra loop turn
            else:
                self._timer = loop.call_at(self._queue[0].arrival, self._fire)
        return done

    def _fire(self) -> None:
        self._timer = None
        q = self._queue
        t = now()
        horizon = t + self.coalesce_s
        run: list[_Range] = []  # neighbouring ranges of one message, written together
        while q:
            r = q[0]
            if r.arrival > horizon or (r.done is not None and r.arrival > t):
                break
            q.popleft()
            if run and (run[-1].data is not r.data or run[-1].writer is not r.writer):
                _flush(run)
                run = []
            run.append(r)
        if run:
            _flush(run)
        if q:
            self._timer = asyncio.get_running_loop().call_at(q[0].arrival, self._fire)


def _flush(run: list[_Range]) -> None:
    first, last = run[0], run[-1]
    writer = first.writer
    dones = [r.done for r in run if r.done is not None]
    if writer.transport.is_closing():
        for d in dones:
            if not d.done():
                d.set_exception(ConnectionResetError("connection closed while the link was delivering"))
        return
    writer.write(first.data[first.start:last.end])
    t = now()
    for d in dones:
        if not d.done():
            d.set_result(t)
