"""Fail-over between replicas (actors/failover.py), with stand-in connections: no sockets, no Ray."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import pytest

from actors.failover import Failover, NoReplicaError


@dataclass
class FakeConn:
    replica: int
    port: int
    alive: bool = True
    pending: dict[int, Any] = field(default_factory=dict)

    def close(self) -> None:
        self.alive = False


REPLICAS = [{"replica": 0, "port": 100}, {"replica": 1, "port": 101}, {"replica": 2, "port": 102}]


def _opener(refused: tuple[int, ...] = ()):
    opened: list[int] = []

    async def connect(addr: dict[str, Any]) -> FakeConn:
        if addr["port"] in refused:
            raise ConnectionRefusedError(addr["port"])
        opened.append(addr["replica"])
        return FakeConn(addr["replica"], addr["port"])

    return connect, opened


def test_a_live_home_connection_is_used_as_it_is():
    f = Failover(REPLICAS)
    conns = [FakeConn(1, 101)]
    connect, opened = _opener()
    assert asyncio.run(f.usable(conns, 0, 1, connect)) is conns[0] and opened == [] and f.reconnects == 0


def test_a_dead_connection_fails_over_to_the_next_live_replica_and_moves_home_when_it_is_back():
    f = Failover(REPLICAS)
    conns = [FakeConn(1, 101, alive=False)]
    connect, opened = _opener(refused=(102,))  # replica 2 refuses: it is marked down too
    conn = asyncio.run(f.usable(conns, 0, 1, connect))
    assert (conn.replica, conns[0] is conn, f.down, opened) == (0, True, {1}, [0])
    conn.pending[7] = object()  # something in flight on the fail-over connection: stay there
    f.up(1, {"replica": 1, "port": 201})  # the replacement listens on a new port
    assert asyncio.run(f.usable(conns, 0, 1, connect)) is conn
    conn.pending.clear()
    back = asyncio.run(f.usable(conns, 0, 1, connect))
    assert (back.replica, back.port, conn.alive, f.reconnects) == (1, 201, False, 2)


def test_an_old_connection_dying_does_not_mark_a_replaced_replica_down():
    f = Failover(REPLICAS)
    f.up(1, {"replica": 1, "port": 201})
    f.lost(FakeConn(1, 101))
    assert f.down == set()
    f.lost(FakeConn(1, 201))
    assert f.down == {1}


def test_no_live_replica_is_an_error_naming_them():
    f = Failover(REPLICAS[:2])
    connect, _ = _opener(refused=(100, 101))
    with pytest.raises(NoReplicaError, match=r"no live cloud replica \(down: \[0, 1\]\)"):
        asyncio.run(f.usable([FakeConn(0, 100, alive=False)], 0, 0, connect))
