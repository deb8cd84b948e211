"""A frame's receive stamp is when its bytes reached the process, not when the reading coroutine got to them."""

from __future__ import annotations

import asyncio

from testbed.base.clock import now
from testbed.base.stamped_stream import open_connection, start_server
from testbed.base.wire import encode_frame, read_frame

GAP_S, BUSY_S = 0.15, 0.4  # between the two frames; how long the reader stays away


def _two_late_reads() -> tuple[list[float], list[float], list[float]]:
    """Two frames sent GAP_S apart over loopback to a reader that starts reading BUSY_S after the first:
    (sent at, stamped arrival, read at) per frame."""
    sent, stamps, reads = [], [], []

    async def go() -> None:
        done = asyncio.Event()

        async def serve(reader, writer) -> None:
            await asyncio.sleep(BUSY_S)  # the loop is free meanwhile: it feeds the bytes as they come
            for _ in range(2):
                await read_frame(reader)
                stamps.append(reader.arrival())
                reads.append(now())
            writer.close()
            done.set()

        server = await start_server(serve, "127.0.0.1", 0)
        _, writer = await open_connection("127.0.0.1", server.sockets[0].getsockname()[1])
        for i in range(2):
            sent.append(now())
            writer.write(encode_frame({"type": "infer", "id": i}, b"x" * 3000))
            await writer.drain()
            await asyncio.sleep(GAP_S)
        await asyncio.wait_for(done.wait(), 10)
        writer.close()
        server.close()
        await server.wait_closed()

    asyncio.run(go())
    return sent, stamps, reads


def test_each_frame_is_stamped_when_it_arrived_not_when_it_was_read():
    sent, stamps, reads = _two_late_reads()
    for s, t in zip(sent, stamps, strict=True):
        assert s <= t < s + 0.05  # loopback: within a few ms of the write
    assert reads[0] - sent[0] >= BUSY_S - 0.01  # the reader really was late
    # the second frame keeps its own time, GAP_S after the first, though both were read at once
    assert stamps[1] - stamps[0] > GAP_S - 0.05 and reads[1] - reads[0] < 0.05


def test_a_frame_split_over_chunks_is_stamped_by_its_last_byte():
    stamps: list[float] = []

    async def go() -> float:
        got = asyncio.Event()

        async def serve(reader, writer) -> None:
            await read_frame(reader)
            stamps.append(reader.arrival())
            got.set()

        server = await start_server(serve, "127.0.0.1", 0)
        _, writer = await open_connection("127.0.0.1", server.sockets[0].getsockname()[1])
        frame = encode_frame({"type": "infer", "id": 0}, b"y" * 5000)
        writer.write(frame[:100])
        await writer.drain()
        await asyncio.sleep(0.2)
        t_last = now()
        writer.write(frame[100:])
        await writer.drain()
        await asyncio.wait_for(got.wait(), 10)
        writer.close()
        server.close()
        await server.wait_closed()
        return t_last

    t_last = asyncio.run(go())
    assert t_last <= stamps[0] < t_last + 0.05

