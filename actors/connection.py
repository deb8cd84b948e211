"""A device's connections to the cloud replicas: one TCP stream each, answers matched by request id.

`Replicas` is what a pool knows of the replicas (their addresses, which are down: actors.failover) and how
its devices open a connection: in the device's network namespace for the tc backend, with the hello and
the phase's downlink faults as the first frames.
"""

from __future__ import annotations

import asyncio
from typing import Any

from actors.failover import Failover
from testbed.base import stamped_stream, wire
from testbed.base.clock import BOOT_ID, now
from testbed.base.stamped_stream import StampedReader
from testbed.base.wire import ProtocolError, encode_frame, read_frame
from throttling.netns import socket_in_netns

Answer = tuple[dict[str, Any], int, float]  # (result header, frame bytes, when its last byte arrived)


class Connection:
    """A device's TCP connection to its cloud replica; responses are matched by request id."""

    def __init__(self, reader: StampedReader, writer: asyncio.StreamWriter, replica: int = 0, port: int = 0):
        self.reader, self.writer = reader, writer
        self.replica, self.port = replica, port  # which replica, at which address (it changes when replaced)
        self.pending: dict[int, asyncio.Future[Answer]] = {}
        self.reported_queue = 0  # the replica's queue depth in its last answer (load balancing)
        self.task = asyncio.create_task(self._read_loop())

    async def _read_loop(self) -> None:
        error: BaseException = ConnectionError("connection closed by the cloud")
        try:
            while True:
                header, _, nbytes = await read_frame(self.reader)
                self.reported_queue = int(header.get("queue_depth", self.reported_queue))
                fut = self.pending.pop(int(header.get("id", -1)), None)
                if fut is not None and not fut.done():
                    fut.set_result((header, nbytes, self.reader.arrival()))  # when its last byte came
        except (EOFError, ConnectionError, ProtocolError, asyncio.IncompleteReadError) as e:
            error = e if not isinstance(e, EOFError) else error
        finally:
            for fut in self.pending.values():
                if not fut.done():
                    fut.set_exception(ConnectionError(f"connection lost: {error}"))
            self.pending.clear()

    @property
    def alive(self) -> bool:
        return not self.task.done()

    def expect(self, rid: int) -> asyncio.Future[Answer]:
        """The future of request `rid`'s answer; ConnectionError at once if the connection has died."""
        if not self.alive:
            raise ConnectionError("connection lost before the request was sent")
        fut: asyncio.Future[Answer] = asyncio.get_running_loop().create_future()
        self.pending[rid] = fut
        return fut

    def send_faults(self, windows: list[tuple[float, float, float]]) -> None:
        """The phase's downlink fault windows, for the cloud's shaper of this connection."""
        self.writer.write(encode_frame(wire.faults_message(windows, BOOT_ID, now())))

    def close(self) -> None:
        self.task.cancel()
        self.writer.close()


class Replicas:
    """The replicas as a pool's devices reach them: addresses, fail-over, and the phase's downlink faults."""

    def __init__(self, replicas: list[dict[str, Any]], net: dict[str, Any] | None):
        self.failover = Failover(replicas)
        self.net = net  # namespaces of the tc backend, or None for the userspace shaper
        self.down_faults: dict[int, list[tuple[float, float, float]]] = {}  # device -> downlink fault windows

    async def connect(self, device_id: int, addr: dict[str, Any]) -> Connection:
        if self.net is None:
            reader, writer = await stamped_stream.open_connection(addr["host"], addr["port"])
        else:  # the device's socket lives in its own namespace, behind its shaped veth
            sock = socket_in_netns(self.net["device_ns"][device_id])
            sock.setblocking(False)
            await asyncio.get_running_loop().sock_connect(sock, (addr["host"], addr["port"]))
            reader, writer = await stamped_stream.open_connection(sock=sock)
        # the replica's token; the replica takes this device's downlink from the run's configuration
        writer.write(encode_frame(wire.hello_message(device_id, addr.get("token", ""))))
        if device_id in self.down_faults:  # the phase's downlink faults, for the cloud's shaper
            writer.write(encode_frame(wire.faults_message(self.down_faults[device_id], BOOT_ID, now())))
        await writer.drain()
        return Connection(reader, writer, int(addr.get("replica", 0)), int(addr["port"]))

    async def usable(self, conns: list[Connection], k: int, home: int, device_id: int) -> Connection:
        """conns[k], reconnected first where it died or where its home replica is back (actors.failover)."""
        conn: Connection = await self.failover.usable(conns, k, home, lambda addr: self.connect(device_id, addr))
        return conn
