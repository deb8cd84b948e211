"""The fault driver without Ray: its queue fires actions in time order, asks the actors' owner to act, and
returns what happened as events instead of writing into the run's state."""

from __future__ import annotations

from typing import Any

from testbed.base.clock import now
from testbed.config.loading import load_topology
from testbed.plan.devices import device_table
from testbed.run.fault_driver import (
    ActorDeath,
    FaultDriver,
    FaultEvent,
    FaultQueue,
    KillPool,
    KillReplica,
    SetKernelRates,
    StartReplica,
)

FAULTS = """[
  {kind: pool_kill, pool: 1, at_s: 6, strategies: [butterfly]},
  {kind: replica_kill, replica: 1, at_s: 3, duration_s: 2},
  {kind: link_degrade, devices: [0], at_s: 4, duration_s: 1, rate_factor: 0.5}]"""


class FakeActors:
    """The actors' owner as the driver uses it: it records the calls and keeps the down sets."""

    def __init__(self) -> None:
        self.slices = [(0, 1, 2), (3, 4)]
        self.down_ = {"pools": set(), "clouds": set()}
        self.calls: list[tuple[str, int]] = []
        self.deaths: list[tuple[str, int]] = []
        self.pool_info = [{"pid": 10}, {"pid": 11}]
        self.replica_info = [{"pid": 20}, {"pid": 21}]
        self._starting: set[int] = set()

    def kill(self, kind: str, i: int) -> bool:
        if i in self.down_[kind]:
            return False
        self.down_[kind].add(i)
        self.calls.append((f"kill {kind}", i))
        return True

    def start_replica(self, i: int) -> bool:
        if i in self._starting or i not in self.down_["clouds"]:
            return False
        self._starting.add(i)
        self.calls.append(("start replica", i))
        return True

    def replicas_ready(self, timeout_s: float = 0.0) -> list[tuple[int, dict[str, Any]]]:
        out = [(i, {"port": 9000 + i}) for i in sorted(self._starting)]
        for i in self._starting:
            self.down_["clouds"].discard(i)
        self._starting.clear()
        return out

    def replace_pool(self, i: int) -> dict[str, Any]:
        self.down_["pools"].discard(i)
        self.calls.append(("replace pool", i))
        return {}

    def take_deaths(self) -> list[tuple[str, int]]:
        out, self.deaths = self.deaths, []
        return out

    def down(self, kind: str) -> list[int]:
        return sorted(self.down_[kind])

    def down_devices(self) -> set[int]:
        return {d for i in self.down_["pools"] for d in self.slices[i]}

    def fault_stats(self) -> list[dict[str, Any]]:
        return [{"pool": 0, "reconnects": 1}]


class FakeKernel:
    def __init__(self) -> None:
        self.rates: list[tuple[dict[int, float], dict[int, float]]] = []

    def set_rates(self, up: dict[int, float], down: dict[int, float]) -> None:
        self.rates.append((up, down))


def _driver(write_topology, faults_yaml, kernel=None, strategy="butterfly", index=0):
    topo = load_topology(write_topology(faults_yaml), ["warmup_s=2", f"faults={FAULTS}"])
    actors = FakeActors()
    return FaultDriver(topo, actors, kernel, strategy, index), actors  # type: ignore[arg-type]


def _at(driver: FaultDriver, t_s: float) -> list[FaultEvent]:
    driver.t0 = now() - t_s  # the strategy's clock reads t_s
    return driver.fire_due()


def test_the_queue_pops_in_due_order_and_ties_in_push_order():
    q = FaultQueue()
    q.push(5.0, KillPool(1))
    q.push(1.0, KillReplica(0, None))
    q.push(5.0, StartReplica(0))
    q.push(3.0, SetKernelRates())
    assert q.next_due_s() == 1.0
    assert q.pop_due(0.5) is None
    assert [q.pop_due(10.0) for _ in range(4)] == [KillReplica(0, None), SetKernelRates(), KillPool(1),
                                                   StartReplica(0)]
    assert q.pop_due(10.0) is None and q.next_due_s() is None


def test_actions_fire_in_time_order_and_come_back_as_events(write_topology, faults_yaml):
    driver, actors = _driver(write_topology, faults_yaml)
    assert _at(driver, 2.9) == [] and actors.calls == []
    assert 0 < driver.wait_s(1.0) <= 1.0
    events = _at(driver, 6.2)  # the replica kill (3 s), its restart (5 s), the pool kill (6 s), in that order;
    # then the replacements that finished loading
    assert [e.event for e in events] == ["replica 1 killed", "replica 1: starting a replacement",
                                         "device pool 1 killed (2 devices)",
                                         "replica 1 replaced (new ingress port 9001); devices reconnect"]
    assert actors.calls == [("kill clouds", 1), ("start replica", 1), ("kill pools", 1)]
    assert all(e.strategy == "butterfly" and 6.2 <= e.t_s < 7 for e in events)
    assert driver.active_devices() == 3  # pool 1's two devices are gone
    assert events[0].to_dict() == {"strategy": "butterfly", "t_s": round(events[0].t_s, 3),
                                   "event": "replica 1 killed"}


def test_without_a_kernel_degradations_queue_nothing_and_with_one_they_set_rates(write_topology, faults_yaml):
    kernel = FakeKernel()
    driver, _ = _driver(write_topology, faults_yaml, kernel)
    events = [e.event for e in _at(driver, 4.5)]
    assert events.count("kernel tbf rates set for 1 degraded devices") == 1
    base = device_table(driver.topo)[0].link
    assert kernel.rates[-1] == ({0: base.uplink_mbps * 0.5}, {0: base.downlink_mbps * 0.5})
    _at(driver, 5.5)
    assert kernel.rates[-1] == ({0: base.uplink_mbps}, {0: base.downlink_mbps})  # the window closed


def test_a_death_is_an_event_and_its_pool_is_lost_and_replaced(write_topology, faults_yaml):
    driver, actors = _driver(write_topology, faults_yaml)
    actors.down_["pools"].add(0)
    actors.deaths.append(("pools", 0))
    deaths = driver.note_deaths()
    assert len(deaths) == 1 and isinstance(deaths[0], ActorDeath)
    assert deaths[0].death_dict() | {"t_s": 0} == {"strategy": "butterfly", "t_s": 0, "kind": "pool", "index": 0,
                                                   "pid": 10, "event": "device pool 0 died (pid 10, not a fault)"}
    end = driver.end_strategy([])
    assert end.lost and all(r["status"] == "failed" and r["device_id"] in (0, 1, 2) for r in end.lost)
    assert end.failover == {"pool0": {"reconnects": 1}}
    assert ("replace pool", 0) in actors.calls and end.events[-1].event.startswith("device pool 0 replaced")


def test_after_the_last_strategy_nothing_is_repaired(write_topology, faults_yaml):
    driver, actors = _driver(write_topology, faults_yaml, strategy="cloud_only", index=1)
    _at(driver, 3.5)
    end = driver.end_strategy([])
    assert actors.down("clouds") == [1] and ("start replica", 1) not in actors.calls and end.lost == []
