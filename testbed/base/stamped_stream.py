"""TCP streams that remember when their bytes reached the process, for the receive stamps of frames.

A frame's receive time is taken where the event loop hands the socket's bytes to the stream (the protocol's
`data_received`), not where the coroutine that reads the frame next runs: on a busy loop (a replica serving
1,000 devices) that coroutine runs up to a millisecond later, and the measured uplink time included that wait
(docs/benchmarks.md, "Where the 1,000-device point's error comes from"). `start_server` and `open_connection`
are asyncio's own, built on this reader.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any

from testbed.base.clock import now

LIMIT = 2**20  # the stream's buffer limit, as the testbed's servers and devices have used


class StampedReader(asyncio.StreamReader):
    """A StreamReader that stamps each chunk the loop feeds it: `arrival()` is when the last byte read so far
    reached the process."""

    def __init__(self, limit: int = LIMIT, loop: asyncio.AbstractEventLoop | None = None):
        super().__init__(limit=limit, loop=loop)
        self._fed = 0
        self._stamps: deque[tuple[int, float]] = deque()  # (bytes fed so far, when), oldest first

    def feed_data(self, data: bytes) -> None:
        super().feed_data(data)
        if data:
            self._fed += len(data)
            self._stamps.append((self._fed, now()))

    def arrival(self) -> float:
        """When the chunk holding the last byte read was fed (the bytes read are those fed less those still
        buffered); the stamps of chunks wholly before it are dropped. Nothing fed yet: now."""
        offset = self._fed - len(self._buffer)
        stamps = self._stamps
        while stamps and stamps[0][0] < offset:
            stamps.popleft()
        return stamps[0][1] if stamps else now()


async def start_server(client_connected_cb: Any, host: str | None = None, port: int | None = None, *,
                       limit: int = LIMIT, **kwds: Any) -> asyncio.Server:
    """asyncio.start_server, with a StampedReader for each connection."""
    loop = asyncio.get_running_loop()

    def factory() -> asyncio.StreamReaderProtocol:
        return asyncio.StreamReaderProtocol(StampedReader(limit, loop), client_connected_cb, loop=loop)

    return await loop.create_server(factory, host, port, **kwds)


async def open_connection(host: str | None = None, port: int | None = None, *, limit: int = LIMIT,
                          **kwds: Any) -> tuple[StampedReader, asyncio.StreamWriter]:
    """asyncio.open_connection, with a StampedReader."""
    loop = asyncio.get_running_loop()
    reader = StampedReader(limit, loop)
    protocol = asyncio.StreamReaderProtocol(reader, loop=loop)
    transport, _ = await loop.create_connection(lambda: protocol, host, port, **kwds)
    return reader, asyncio.StreamWriter(transport, protocol, reader, loop)
