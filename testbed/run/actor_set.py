"""The run's Ray actors and their liveness: the one owner that creates, kills, replaces and lists them.

The fault driver and the run ask this object to act on an actor ("kill replica 1", "replace pool 0") and read
what is alive from it; nobody else holds the down sets. Each actor's start-up answer (address of a replica,
calibration of a pool) is kept here too, replaced with the actor, so the run's summary reads the current one.
"""

from __future__ import annotations

import time
from typing import Any, Literal

from actors.cloud_profile import ProfileCloudServer
from actors.cloud_replay import ReplayCloudServer
from actors.cloud_server import CloudServer
from actors.device_pool import DevicePool
from actors.heads import times_full_model
from actors.replay_frames import prepare_replays
from testbed.config.schema import Topology
from testbed.plan.devices import device_table

Kind = Literal["pools", "clouds"]


class Actors:
    """The run's Ray actors; `close()` kills them."""

    def __init__(self, topo: Topology, net: dict[str, Any] | None, cpu: dict[str, str]):
        import ray  # Ray's start-up cost only where actors are built

        self.ray = ray
        self._args = (topo.model_dump_json(), net, cpu)
        cloud_cls = ReplayCloudServer if topo.cloud.compute == "replay" else CloudServer
        self._cloud_cls: Any = ray.remote(ProfileCloudServer if topo.cloud.hardware else cloud_cls)
        self._pool_cls: Any = ray.remote(DevicePool)
        self.topo = topo
        self.slices = topo.pool_slices()
        self._replayed = self._prepare_replays()
        self.clouds: list[Any] = [self._new_cloud(i) for i in range(topo.cloud.replicas)]
        self.pools: list[Any] = []  # created by start(), once their replayed heads are prepared
        self.replica_info: list[dict[str, Any]] = []  # each replica's start() answer (its address)
        self.pool_info: list[dict[str, Any]] = []  # each pool's connect() answer (its calibration)
        self._down: dict[Kind, set[int]] = {"pools": set(), "clouds": set()}  # killed or found dead
        self._starting: dict[int, Any] = {}  # replica -> ref of its replacement's start()
        self._deaths: list[tuple[Kind, int]] = []  # found dead by a call, not yet reported

    def _prepare_replays(self) -> list[Any]:
        """Where pools only replay (pools.compute replay): each pool's heads, prepared in one Ray task that
        asks what a pool asks (CPUs, resources) and exits after it (actors.replay_frames); an object ref per
        pool, kept so a replacement pool gets the same heads. Otherwise each pool builds its own: none."""
        p = self.topo.pools
        if p.compute != "replay":
            return []
        table = device_table(self.topo)
        pools = [(i, times_full_model([table[d] for d in s])) for i, s in enumerate(self.slices)]
        task = self.ray.remote(max_calls=1)(prepare_replays).options(
            num_cpus=p.num_cpus, resources=dict(p.resources), num_returns=len(pools))
        refs = task.remote(self._args[0], pools)
        return list(refs) if len(pools) > 1 else [refs]

    def _await_replays(self) -> None:
        """Wait until the replayed heads are prepared (the replicas load meanwhile). The task asks for a pool's
        CPUs and resources, and each pool holds its own for life: pools created first could take every slot
        the task fits in, and then wait for its frames for ever (seen in CI: the actors never started)."""
        if self._replayed:
            self.ray.wait(self._replayed, num_returns=len(self._replayed), fetch_local=False)

    def _prepare(self, i: int) -> Any:
        """Pool i's prepare() call, with its replayed heads where they were prepared for it."""
        return self.pools[i].prepare.remote(*self._replayed[i:i + 1])

    def _new_cloud(self, i: int) -> Any:
        c = self.topo.cloud
        return self._cloud_cls.options(num_cpus=c.num_cpus, num_gpus=c.num_gpus, resources=dict(c.resources),
                                       max_concurrency=10_000).remote(i, self._args[0], self._args[1])

    def _new_pool(self, i: int) -> Any:
        p = self.topo.pools
        return self._pool_cls.options(num_cpus=p.num_cpus, resources=dict(p.resources), scheduling_strategy="SPREAD",
                                      max_concurrency=10_000).remote(i, self._args[0], list(self.slices[i]),
                                                                     *self._args[1:])

    def _of(self, kind: Kind) -> list[Any]:
        return self.pools if kind == "pools" else self.clouds

    def start(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """Cloud model load and pool model load + calibration overlap (in replay mode the replicas load while
        the heads are prepared, then the pools start); then devices connect."""
        cloud_refs = [c.start.remote() for c in self.clouds]
        self._await_replays()
        self.pools = [self._new_pool(i) for i in range(len(self.slices))]
        prep_refs = [self._prepare(i) for i in range(len(self.pools))]
        self.replica_info = self.ray.get(cloud_refs)
        self.ray.get(prep_refs)
        self.pool_info = self.ray.get([p.connect.remote(self.replica_info) for p in self.pools])
        return self.replica_info, self.pool_info

    def is_live(self, kind: Kind, i: int) -> bool:
        return i not in self._down[kind]

    def live(self, kind: Kind) -> list[Any]:
        return [a for i, a in enumerate(self._of(kind)) if self.is_live(kind, i)]

    def down(self, kind: Kind) -> list[int]:
        return sorted(self._down[kind])

    def down_devices(self) -> set[int]:
        """Device ids whose pool is down: they generate no frames now."""
        return {d for i in self._down["pools"] for d in self.slices[i]}

    def gather(self, kind: Kind, call: Any) -> list[Any]:
        """`call(actor)` on every live actor of `kind`, and each result; an actor that died (killed by PID, its
        process lost) is marked down and kept for `take_deaths`, and the others' results are kept."""
        refs = [(i, call(a)) for i, a in enumerate(self._of(kind)) if self.is_live(kind, i)]
        out = []
        for i, ref in refs:
            try:
                out.append(self.ray.get(ref))
            except self.ray.exceptions.RayActorError:
                self._down[kind].add(i)
                self._deaths.append((kind, i))
        return out

    def take_deaths(self) -> list[tuple[Kind, int]]:
        """Actors found dead since the last call, in the order found."""
        out, self._deaths = self._deaths, []
        return out

    def kill(self, kind: Kind, i: int) -> bool:
        """Kill one actor for a fault; False where it was already down."""
        if not self.is_live(kind, i):
            return False
        self.ray.kill(self._of(kind)[i], no_restart=True)
        self._down[kind].add(i)
        return True

    def start_replica(self, i: int) -> bool:
        """Start a replacement for a down replica (its model loads meanwhile); False if none is needed."""
        if i in self._starting or self.is_live("clouds", i):
            return False
        self.clouds[i] = self._new_cloud(i)
        self._starting[i] = self.clouds[i].start.remote()
        return True

    def replicas_ready(self, timeout_s: float = 0.0) -> list[tuple[int, dict[str, Any]]]:
        """Replacements whose start() answered (0: those already done; else all, waiting up to timeout_s in all),
        each made live and announced to the live pools; (replica, its new address) of each."""
        out = []
        deadline = time.monotonic() + timeout_s
        for i, ref in list(self._starting.items()):
            ready, _ = self.ray.wait([ref], timeout=max(0.0, deadline - time.monotonic()))
            if ready or timeout_s > 0:
                del self._starting[i]
                addr = self.ray.get(ref)
                self._down["clouds"].discard(i)
                self.replica_info[i] = addr
                self.ray.get([p.replica_up.remote(i, addr) for p in self.live("pools")])
                out.append((i, addr))
        return out

    def replace_pool(self, i: int) -> dict[str, Any]:
        """A new, calibrated and connected pool for the same devices; its connect() answer."""
        self.pools[i] = self._new_pool(i)
        self.ray.get(self._prepare(i))
        self.pool_info[i] = self.ray.get(self.pools[i].connect.remote(self.replica_info))
        self._down["pools"].discard(i)
        return self.pool_info[i]

    def fault_stats(self) -> list[dict[str, Any]]:
        """Each live pool's failover counts (reconnects and retries) for the strategy just run."""
        return self.ray.get([p.fault_stats.remote() for p in self.live("pools")])

    def drain(self, strategy: str, final: bool = False) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        records = [r for batch in self.gather("pools", lambda p: p.drain.remote(final)) for r in batch]
        load = [dict(row, strategy=strategy)
                for batch in self.gather("clouds", lambda c: c.drain_load.remote()) for row in batch]
        return records, load

    def stats(self) -> list[dict[str, Any]]:
        return self.gather("clouds", lambda c: c.stats.remote())

    def live_counts(self) -> list[dict[str, Any]]:
        """Requests ended since the last call in each live pool (testbed.domain.live), for the progress line."""
        return self.gather("pools", lambda p: p.live_counts.remote())

    def close(self) -> None:
        for actor in self.pools + self.clouds:
            try:
                self.ray.kill(actor, no_restart=True)
            except Exception:  # noqa: BLE001 - already gone
                pass
