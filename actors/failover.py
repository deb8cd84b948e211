"""How a pool's devices keep a usable connection when cloud replicas die and come back.

A device's connection slot `k` belongs to a home replica (`ReplicaChooser.connects_to()[k]`). When its
connection has died, the slot is reconnected: to the home replica if it is not known to be down, else to
the next live replica in index order. A replica is known down when a connection to its current address
died or could not be opened, and up again when the driver announces its replacement (a new address).
A device on a fail-over connection moves back home on its next request after that. Reconnects and retries
are counted for the summary.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Protocol


class Conn(Protocol):
    replica: int
    port: int
    pending: dict[int, Any]

    @property
    def alive(self) -> bool: ...


class NoReplicaError(ConnectionError):
    """Every replica is down."""


class Failover:
    def __init__(self, replicas: list[dict[str, Any]]):
        self.addrs = {int(r["replica"]): r for r in replicas}
        self.down: set[int] = set()
        self.reconnects = 0
        self.retries = 0

    def lost(self, conn: Conn) -> None:
        """`conn` died: its replica is down, unless it has been replaced since the connection was opened."""
        if self.addrs[conn.replica]["port"] == conn.port:
            self.down.add(conn.replica)

    def up(self, replica: int, addr: dict[str, Any]) -> None:
        self.addrs[replica] = addr
        self.down.discard(replica)

    async def usable(self, conns: list[Any], k: int, home: int,
                     connect: Callable[[dict[str, Any]], Awaitable[Any]]) -> Any:
        """conns[k], reconnected first where it died or where its home replica is back."""
        conn = conns[k]
        if not conn.alive:
            self.lost(conn)
        elif conn.replica == home or home in self.down or conn.pending:  # moves home once nothing is in flight
            return conn
        order = [home] + [i for i in sorted(self.addrs) if i != home]
        for i in order:
            if i in self.down:
                continue
            if conn.alive and conn.replica == i:
                return conn
            try:
                new = await connect(self.addrs[i])
            except OSError:
                self.down.add(i)
                continue
            if conn.alive:
                conn.close()
            conns[k] = new
            self.reconnects += 1
            return new
        raise NoReplicaError(f"no live cloud replica (down: {sorted(self.down)})")

    def stats(self) -> dict[str, Any]:
        return {"reconnects": self.reconnects, "retries": self.retries, "replicas_down": sorted(self.down)}
