"""The driver's side of faults: it kills replicas and pools at their times, and repairs before the next strategy.

Link faults and device churn are applied by the device pools themselves (testbed.plan.faults); a replica or a
pool is killed by the driver with `ray.kill(actor, no_restart=True)` when its time comes (checked at least
every poll, and woken for it, so a kill lands within a few ms of `at_s` plus the actor call's latency).

- Under tc, a link degradation sets the degraded devices' kernel tbf rates at its window's start and end
  (traced links excepted: their rate thread owns the rate); an outage is held by the userspace shaper.
- A killed replica's devices fail over in their pools (actors.failover). With `duration_s` a new replica
  actor is started after it (model load: seconds) and the pools are told its address; at the end of the
  strategy any replica still down is replaced, so the next strategy starts with the full cloud.
- A killed pool is gone for the rest of the strategy. At its end the driver records every frame its devices
  would have generated without a record (testbed.plan.faults.lost_pool_records), then starts and calibrates a new
  pool for the same devices before the next strategy.

The driver keeps a time-ordered queue of actions; the actors' owner (testbed.run.actor_set.Actors) carries them
out, and every call returns what happened as typed events for the run to record: the driver writes into
nobody's state.
"""

from __future__ import annotations

import heapq
import itertools
from dataclasses import dataclass
from typing import Any, Protocol

from testbed.base.clock import now
from testbed.config.schema import Topology
from testbed.plan import faults
from testbed.plan.devices import device_table
from testbed.run.actor_set import Actors, Kind

REPLICA_START_S = 600.0  # how long a replacement replica may take to load its model


@dataclass(frozen=True)
class FaultEvent:
    """One thing the fault driver did (summary.json "fault_events"), at t_s on the strategy's clock."""
    strategy: str
    t_s: float
    event: str

    def to_dict(self) -> dict[str, Any]:
        return {"strategy": self.strategy, "t_s": round(self.t_s, 3), "event": self.event}


@dataclass(frozen=True)
class ActorDeath(FaultEvent):
    """An actor found dead, not killed by a fault (summary.json "deaths"; also a fault event)."""
    kind: str = "pool"  # "pool" or "replica"
    index: int = 0
    pid: int | None = None

    def death_dict(self) -> dict[str, Any]:
        return {"strategy": self.strategy, "t_s": round(self.t_s, 3), "kind": self.kind, "index": self.index,
                "pid": self.pid, "event": self.event}


@dataclass(frozen=True)
class StrategyEnd:
    """What the end of a strategy gave: failed records for killed pools' frames, events, failover counts."""
    lost: list[dict[str, Any]]
    events: list[FaultEvent]
    failover: dict[str, Any] | None  # per pool: reconnects and retries; None without fault windows


@dataclass(frozen=True)
class KillReplica:
    replica: int
    restart_at_s: float | None  # when its replacement starts (duration_s), None: at the strategy's end


@dataclass(frozen=True)
class KillPool:
    pool: int


@dataclass(frozen=True)
class StartReplica:
    replica: int


@dataclass(frozen=True)
class SetKernelRates:
    """tc: a degradation window opens or closes; the rates are recomputed for the time it fires."""


Action = KillReplica | KillPool | StartReplica | SetKernelRates


class KernelRates(Protocol):
    """The run's NetnsTopology as the driver sees it (tc backend)."""
    def set_rates(self, up: dict[int, float], down: dict[int, float]) -> None: ...


class FaultQueue:
    """Actions by due time (s on the strategy's clock); ties keep the order they were pushed in."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Action]] = []
        self._seq = itertools.count()

    def push(self, due_s: float, action: Action) -> None:
        heapq.heappush(self._heap, (due_s, next(self._seq), action))

    def next_due_s(self) -> float | None:
        return self._heap[0][0] if self._heap else None

    def pop_due(self, t_s: float) -> Action | None:
        """The earliest action due at t_s or before, removed; None if none is due."""
        if self._heap and self._heap[0][0] <= t_s:
            return heapq.heappop(self._heap)[2]
        return None


class FaultDriver:
    """One strategy's kills, replacements and kernel rates, on the strategy's clock (t0: its start)."""

    def __init__(self, topo: Topology, actors: Actors, kernel: KernelRates | None, strategy: str, index: int):
        self.topo, self.actors, self._kernel = topo, actors, kernel
        self.strategy, self.index = strategy, index
        self.windows = faults.windows(topo, strategy)
        self.t0 = now()
        self.queue = FaultQueue()
        for w in self.windows:
            if w.kind == "replica_kill":
                restart = w.end_s if w.fault.duration_s is not None and w.end_s < faults.horizon_s(topo) else None
                self.queue.push(w.start_s, KillReplica(int(w.fault.replica or 0), restart))
            elif w.kind == "pool_kill":
                self.queue.push(w.start_s, KillPool(int(w.fault.pool or 0)))
        if kernel is not None:  # a degradation sets the kernel's tbf rate at its window's edges
            for w in self.windows:
                if w.kind == "link_degrade":
                    self.queue.push(w.start_s, SetKernelRates())
                    self.queue.push(w.end_s, SetKernelRates())
        self._killed_pools: dict[int, float] = {}  # pool -> killed at (strategy seconds)

    def t(self) -> float:
        return now() - self.t0

    def wait_s(self, poll_s: float) -> float:
        """How long the driver may wait before the next fault action is due."""
        due = self.queue.next_due_s()
        return poll_s if due is None else max(0.0, min(poll_s, due - self.t()))

    def fire_due(self) -> list[FaultEvent]:
        """Every action due by now, in time order, then replacements that finished loading; what happened."""
        events: list[FaultEvent] = []
        while (action := self.queue.pop_due(self.t())) is not None:
            events += self._do(action)
        events += self._replicas_ready(0.0)
        return events

    def _do(self, action: Action) -> list[FaultEvent]:
        if isinstance(action, SetKernelRates):
            return self._set_kernel_rates(self.t())
        if isinstance(action, KillPool):
            if not self.actors.kill("pools", action.pool):
                return []
            self._killed_pools[action.pool] = t = self.t()
            return [self._event(f"device pool {action.pool} killed ({len(self.actors.slices[action.pool])} devices)",
                                t)]
        if isinstance(action, KillReplica):
            if action.restart_at_s is not None:
                self.queue.push(action.restart_at_s, StartReplica(action.replica))
            return [self._event(f"replica {action.replica} killed")] if self.actors.kill("clouds",
                                                                                         action.replica) else []
        return self._start_replica(action.replica)

    def _event(self, what: str, t: float | None = None) -> FaultEvent:
        return FaultEvent(self.strategy, self.t() if t is None else t, what)

    def _set_kernel_rates(self, t: float) -> list[FaultEvent]:
        """tc: each degraded device's tbf rates, configured × the factors of its degrade windows open at t.
        Traced links are left alone (their rate thread owns the rate)."""
        assert self._kernel is not None
        up: dict[int, float] = {}
        down: dict[int, float] = {}
        specs = device_table(self.topo)
        for w in (w for w in self.windows if w.kind == "link_degrade"):
            for d in sorted(w.devices or ()):
                link = specs[d].link
                for direction, rates, base, trace in (("uplink", up, link.uplink_mbps, link.uplink_trace),
                                                      ("downlink", down, link.downlink_mbps, link.downlink_trace)):
                    if trace is None and w.fault.direction in ("both", direction):
                        rates[d] = rates.get(d, base) * ((w.fault.rate_factor or 1.0) if w.hits(d, t) else 1.0)
        self._kernel.set_rates(up, down)
        return [self._event(f"kernel tbf rates set for {len(set(up) | set(down))} degraded devices")]

    def _start_replica(self, i: int) -> list[FaultEvent]:
        return [self._event(f"replica {i}: starting a replacement")] if self.actors.start_replica(i) else []

    def _replicas_ready(self, timeout_s: float) -> list[FaultEvent]:
        return [self._event(f"replica {i} replaced (new ingress port {addr['port']}); devices reconnect")
                for i, addr in self.actors.replicas_ready(timeout_s)]

    def note_deaths(self) -> list[FaultEvent]:
        """Actors found dead by a call (killed by PID, their process lost; Actors.gather): handled as if a fault
        had killed them now. A pool's frames without a record end as failed records at the end of the strategy,
        a replica's devices fail over; both are replaced before the next strategy."""
        return [self._death(kind, i) for kind, i in self.actors.take_deaths()]

    def _death(self, kind: Kind, i: int) -> ActorDeath:
        t = self.t()
        pid = (self.actors.pool_info if kind == "pools" else self.actors.replica_info)[i].get("pid")
        if kind == "pools":
            self._killed_pools.setdefault(i, t)
        label = "device pool" if kind == "pools" else "replica"
        return ActorDeath(self.strategy, t, f"{label} {i} died (pid {pid}, not a fault)",
                          kind="pool" if kind == "pools" else "replica", index=i, pid=pid)

    def end_strategy(self, records: list[dict[str, Any]]) -> StrategyEnd:
        """Records for what killed pools lost (`records`: the run's so far); the cloud and the pools made
        whole for the next strategy."""
        events: list[FaultEvent] = list(self.note_deaths())
        lost: list[dict[str, Any]] = []
        for i, at in self._killed_pools.items():
            ids = set(self.actors.slices[i])
            seen = {(int(r["device_id"]), round(float(r["t_arrival_s"]), 4)) for r in records
                    if r["strategy"] == self.strategy and int(r["device_id"]) in ids}
            lost += faults.lost_pool_records(self.topo, self.strategy, self.index, i, at, seen)
        failover = None
        if self.windows:
            failover = {f"pool{s.pop('pool')}": s for s in self.actors.fault_stats()}
        if self._kernel is not None and any(w.kind == "link_degrade" for w in self.windows):
            events += self._set_kernel_rates(float("inf"))  # back to the configured rates
        if self.index < len(self.topo.strategies) - 1:  # something runs after this strategy: repair
            events += self._repair()
        return StrategyEnd(lost, events, failover)

    def _repair(self) -> list[FaultEvent]:
        events: list[FaultEvent] = []
        for i in self.actors.down("clouds"):
            events += self._start_replica(i)
        events += self._replicas_ready(REPLICA_START_S)
        for i in sorted(self._killed_pools):
            self.actors.replace_pool(i)
            events.append(self._event(f"device pool {i} replaced (new pool, calibrated again)"))
        return events

    def active_devices(self) -> int:
        """Devices generating frames now: not in a killed pool, not in a device_leave window."""
        gone = self.actors.down_devices()
        t = self.t()
        return sum(1 for d in range(self.topo.device_count) if d not in gone and not faults.absent(self.windows, d, t))

    def active_names(self) -> list[str]:
        t = self.t()
        return [w.name for w in self.windows if w.start_s <= t < w.end_s]
