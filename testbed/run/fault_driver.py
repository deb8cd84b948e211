"""The driver's side of faults: it kills replicas and pools at their times, and repairs before the next phase.

Link faults and device churn are applied by the device pools themselves (testbed.plan.faults); a replica or a
pool is killed by the driver with `ray.kill(actor, no_restart=True)` when its time comes (checked at least
every poll, and woken for it, so a kill lands within a few ms of `at_s` plus the actor call's latency).

- Under tc, a link degradation sets the degraded devices' kernel tbf rates at its window's start and end
  (traced links excepted: their rate thread owns the rate); an outage is held by the userspace shaper.
- A killed replica's devices fail over in their pools (actors.failover). With `duration_s` a new replica
  actor is started after it (model load: seconds) and the pools are told its address; at the end of the phase
  any replica still down is replaced, so the next phase starts with the full cloud.
- A killed pool is gone for the rest of the phase. At the end of the phase the driver records every frame
  its devices would have generated without a record (testbed.plan.faults.lost_pool_records), then starts and
  calibrates a new pool for the same devices before the next phase.
"""

from __future__ import annotations

import time
from typing import Any

from testbed.base.clock import now
from testbed.plan import faults
from testbed.plan.devices import device_table
from testbed.run.progress import Progress

REPLICA_START_S = 600.0  # how long a replacement replica may take to load its model


class FaultDriver:
    def __init__(self, state: Any, actors: Any, progress: Progress, strategy: str, phase: int):
        self.state, self.actors, self.progress = state, actors, progress
        self.strategy, self.phase = strategy, phase
        self.windows = faults.windows(state.topo, strategy)
        self.t0 = now()
        # (due at, what): kills at at_s; replica restarts at at_s + duration_s
        self._due = sorted([(w.start_s, w) for w in self.windows if w.kind in ("replica_kill", "pool_kill")],
                           key=lambda x: x[0])
        self._kernel: Any = state.kernel  # tc backend: the run's NetnsTopology
        if self._kernel is not None:  # a degradation sets the kernel's tbf rate at its window's edges
            self._due += [(t, w) for w in self.windows if w.kind == "link_degrade" for t in (w.start_s, w.end_s)]
            self._due.sort(key=lambda x: x[0])
        self._starting: dict[int, Any] = {}  # replica -> ref of a replacement's start()
        self._killed_pools: dict[int, float] = {}  # pool -> killed at (phase seconds)
        if self.windows:
            progress.set_faults(self.active_devices, self.active_names)

    def t(self) -> float:
        return now() - self.t0

    def wait_s(self, poll_s: float) -> float:
        """How long the driver may wait before the next fault action is due."""
        if not self._due:
            return poll_s
        return max(0.0, min(poll_s, self._due[0][0] - self.t()))

    def fire_due(self) -> None:
        while self._due and self._due[0][0] <= self.t():
            at, w = self._due.pop(0)
            if w.kind == "link_degrade":
                self._set_kernel_rates(self.t())
            elif w.kind == "pool_kill":
                self._kill_pool(int(w.fault.pool or 0))
            elif w.kind == "replica_kill" and at == w.start_s:
                self._kill_replica(int(w.fault.replica or 0))
                if w.fault.duration_s is not None and w.end_s < faults.horizon_s(self.state.topo):
                    self._due.append((w.end_s, w))
                    self._due.sort(key=lambda x: x[0])
            else:  # a killed replica's downtime is over: start its replacement
                self._start_replica(int(w.fault.replica or 0))
        for i, ref in list(self._starting.items()):
            ready, _ = self.actors.ray.wait([ref], timeout=0)
            if ready:
                self._replica_ready(i, ref)

    def _set_kernel_rates(self, t: float) -> None:
        """tc: each degraded device's tbf rates, configured × the factors of its degrade windows open at t.
        Traced links are left alone (their rate thread owns the rate)."""
        up: dict[int, float] = {}
        down: dict[int, float] = {}
        specs = device_table(self.state.topo)
        for w in self.windows:
            if w.kind != "link_degrade":
                continue
            for d in sorted(w.devices or ()):
                link = specs[d].link
                for direction, rates, base, trace in (("uplink", up, link.uplink_mbps, link.uplink_trace),
                                                      ("downlink", down, link.downlink_mbps, link.downlink_trace)):
                    if trace is None and w.fault.direction in ("both", direction):
                        rates[d] = rates.get(d, base) * ((w.fault.rate_factor or 1.0) if w.hits(d, t) else 1.0)
        self._kernel.set_rates(up, down)
        self._event(f"kernel tbf rates set for {len(set(up) | set(down))} degraded devices")

    def _event(self, what: str, t: float | None = None) -> None:
        t = self.t() if t is None else t
        self.state.fault_events.append({"strategy": self.strategy, "t_s": round(t, 3), "event": what})
        self.progress.note(f"fault at {t:.1f} s: {what}")

    def _kill_replica(self, i: int) -> None:
        if i in self.actors.down_clouds:
            return
        self.actors.ray.kill(self.actors.clouds[i], no_restart=True)
        self.actors.down_clouds.add(i)
        self._event(f"replica {i} killed")

    def _kill_pool(self, i: int) -> None:
        if i in self.actors.down_pools:
            return
        self.actors.ray.kill(self.actors.pools[i], no_restart=True)
        self.actors.down_pools.add(i)
        self._killed_pools[i] = t = self.t()
        self._event(f"device pool {i} killed ({len(self.actors.slices[i])} devices)", t)

    def note_deaths(self) -> None:
        """Actors found dead by a call (killed by PID, their process lost; testbed.run.experiment.Actors.gather):
        handled as if a fault had killed them now. A pool's frames without a record end as failed records at
        the end of the phase, a replica's devices fail over; both are replaced before the next phase."""
        while self.actors.deaths:
            kind, i = self.actors.deaths.pop(0)
            t = self.t()
            info = (self.state.pools if kind == "pools" else self.state.replicas)[i]
            name = "pool" if kind == "pools" else "replica"
            what = f"{'device pool' if kind == 'pools' else 'replica'} {i} died (pid {info.get('pid')}, not a fault)"
            self.state.deaths.append({"strategy": self.strategy, "t_s": round(t, 3), "kind": name, "index": i,
                                      "pid": info.get("pid"), "event": what})
            if kind == "pools":
                self._killed_pools.setdefault(i, t)
            self._event(what, t)

    def _start_replica(self, i: int) -> None:
        if i in self._starting or i not in self.actors.down_clouds:
            return
        self.actors.clouds[i] = self.actors.new_cloud(i)
        self._starting[i] = self.actors.clouds[i].start.remote()
        self._event(f"replica {i}: starting a replacement")

    def _replica_ready(self, i: int, ref: Any) -> None:
        del self._starting[i]
        addr = self.actors.ray.get(ref)
        self.actors.down_clouds.discard(i)
        self.state.replicas[i] = addr
        self.actors.ray.get([p.replica_up.remote(i, addr) for p in self.actors.live("pools")])
        self._event(f"replica {i} replaced (new ingress port {addr['port']}); devices reconnect")

    def end_phase(self) -> list[dict[str, Any]]:
        """Records for what killed pools lost; the cloud and the pools made whole for the next phase."""
        ray, actors, topo = self.actors.ray, self.actors, self.state.topo
        self.note_deaths()
        lost: list[dict[str, Any]] = []
        for i, at in self._killed_pools.items():
            ids = set(actors.slices[i])
            seen = {(int(r["device_id"]), round(float(r["t_arrival_s"]), 4)) for r in self.state.records
                    if r["strategy"] == self.strategy and int(r["device_id"]) in ids}
            lost += faults.lost_pool_records(topo, self.strategy, self.phase, i, at, seen)
        if self.windows:
            stats = ray.get([p.fault_stats.remote() for p in actors.live("pools")])
            self.state.failover[self.strategy] = {f"pool{s.pop('pool')}": s for s in stats}
        if self._kernel is not None and any(w.kind == "link_degrade" for w in self.windows):
            self._set_kernel_rates(float("inf"))  # back to the configured rates
        if self.phase == len(topo.strategies) - 1:  # nothing runs after this phase: nothing to repair
            return lost
        for i in sorted(actors.down_clouds):
            self._start_replica(i)
        deadline = time.monotonic() + REPLICA_START_S
        for i, ref in list(self._starting.items()):
            ray.wait([ref], timeout=max(0.0, deadline - time.monotonic()))
            self._replica_ready(i, ref)
        for i in sorted(self._killed_pools):
            actors.pools[i] = actors.new_pool(i)
            ray.get(actors.pools[i].prepare.remote())
            info = ray.get(actors.pools[i].connect.remote(self.state.replicas))
            self.state.pools[i] = info
            actors.down_pools.discard(i)
            self._event(f"device pool {i} replaced (new pool, calibrated again)")
        return lost

    def active_devices(self) -> int:
        """Devices generating frames now: not in a killed pool, not in a device_leave window."""
        gone = {d for i in self.actors.down_pools for d in self.actors.slices[i]}
        t = self.t()
        return sum(1 for d in range(self.state.topo.device_count)
                   if d not in gone and not faults.absent(self.windows, d, t))

    def active_names(self) -> list[str]:
        t = self.t()
        return [w.name for w in self.windows if w.start_s <= t < w.end_s]
