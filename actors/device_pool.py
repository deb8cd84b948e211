"""Device pool: one process hosting many emulated devices around one model copy.

One torch process per device does not fit (about 0.5-0.8 GB each), so a pool runs its devices
(actors.device) as asyncio tasks and their compute on one executor thread (or one capped thread per device
class). The pool builds the per-cut heads once (actors.heads), opens the devices' connections
(actors.connection), sets each phase's link faults and answers the driver's calls; how a request is made
is the device's.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from actors.connection import Replicas
from actors.device import Device, DeviceHost
from actors.heads import Heads, times_full_model
from testbed.base.clock import now, same_clock
from testbed.base.event_loop import running_loop_name
from testbed.config.schema import Topology
from testbed.domain import hardware, split_policy
from testbed.domain.balancing import ReplicaChooser
from testbed.domain.energy import RadioAccount
from testbed.domain.host import freeze_heap, ray_node_id
from testbed.domain.split_policy import CloudTimes, LinkEstimator, LinkView, Objective
from testbed.plan import faults
from testbed.plan.devices import DeviceSpec, device_table
from throttling.cgroup import CpuCap, calibrate
from throttling.cpu import TimeScaledCpu
from throttling.links import LinkBackend, userspace_part
from throttling.shaper import LinkDirection, LinkShaper
from throttling.trace import MahimahiTrace


class DevicePool:
    def __init__(self, pool_id: int, topology_json: str, device_ids: list[int], net: dict[str, Any] | None = None,
                 cpu: dict[str, str] | None = None):
        self.pool_id = pool_id
        self.cpu = cpu or {"name": "timescale", "run_id": ""}
        self._class_executors: dict[str, ThreadPoolExecutor] = {}  # cgroup caps: one capped thread per class
        self._caps: list[Any] = []
        self.cap_calibration: dict[str, dict[str, Any]] = {}
        self.net = net  # namespaces of the tc backend, or None for the userspace shaper
        self.backend = LinkBackend(**net["backend"]) if net else LinkBackend("userspace")
        self.topo = Topology.model_validate_json(topology_json)
        table = device_table(self.topo)
        self.specs = [table[i] for i in device_ids]
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"pool{pool_id}")
        self._records: list[dict[str, Any]] = []
        self.heads = Heads(self.topo, pool_id)
        self._host = DeviceHost(self.topo, self.heads, Replicas([], net),
                                Objective(self.topo.policy.objective, self.topo.policy.energy_weight_ms_per_mj),
                                self._records.append)
        self._devices: list[Device] = []
        self._hardware: dict[str, hardware.DeviceHardware] = {}  # device class -> its hardware profile
        self.mechanisms: dict[str, dict[str, Any]] = {}  # device class -> how it is emulated, and why

    @property
    def calibration(self) -> dict[str, float]:
        """cut -> host ms of the device's network part (the heads' calibration)."""
        return self.heads.calibration

    # ------------------------------------------------------------ set-up
    async def prepare(self, replayed: Heads | None = None) -> dict[str, Any]:
        """Build the model and calibrate host compute times (overlaps the cloud's start); then caps, if any.

        `replayed`: heads prepared for this pool by actors.replay_frames (pools.compute replay), so this
        process builds no model and never imports torch."""
        loop = asyncio.get_running_loop()
        if replayed is None:
            await loop.run_in_executor(self._executor, self._build)
        else:
            self.heads = self._host.heads = replayed
            self._choose_mechanisms()
        if self.cpu["name"] == "cgroup":
            for cls, speed in sorted({(s.device_class, self._speed(s)) for s in self.specs if s.hardware is None}):
                await self._cap_class(cls, speed)
        return {"host_ms": self.calibration, "caps": self.cap_calibration, "event_loop": running_loop_name()}

    async def _cap_class(self, cls: str, speed: float) -> None:
        """A compute thread for one device class, capped and calibrated to host time / speed."""

        loop = asyncio.get_running_loop()
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"pool{self.pool_id}-{cls}")
        cap = CpuCap(f"pool{self.pool_id}-{cls}", speed, self.cpu["run_id"])
        self._caps.append(cap)
        self._class_executors[cls] = executor
        await loop.run_in_executor(executor, self._enter_cap, cap)
        cut = next(iter(self.calibration))  # the first cut with a network on the device
        model = self.heads.by_cut[cut].model
        target_ms = self.calibration[cut] / speed
        result = await loop.run_in_executor(
            executor, lambda: calibrate(lambda: self.heads.infer(model, self.heads.frames[0]), target_ms, cap))
        self.cap_calibration[cls] = {"model": cut, **dataclasses.asdict(result)}

    @staticmethod
    def _enter_cap(cap: Any) -> None:
        import torch  # torch: seconds to import, only where a model runs

        torch.set_num_threads(1)  # per thread: see throttling.cgroup
        cap.attach_thread()

    async def connect(self, replicas: list[dict[str, Any]]) -> dict[str, Any]:
        """Open each device's connections: to one replica (static) or to every replica it balances over."""
        self._host.replicas = Replicas(replicas, self.net)
        cloud_ms = _mean_cloud_ms(replicas)
        for spec in self.specs:
            dev = self._device(spec, len(replicas), cloud_ms)
            if any(split_policy.uses_network(c) for c in self.heads.cuts):
                dev.conns = [await self._host.replicas.connect(spec.device_id, replicas[i])
                             for i in dev.chooser.connects_to()]
            self._devices.append(dev)
        freeze_heap()
        return {"pool": self.pool_id, "pid": os.getpid(), "node_id": ray_node_id(), "devices": len(self.specs),
                "torch_in_process": "torch" in sys.modules,
                "calibration_host_ms": self.calibration, "calibration_s": round(self.heads.calibration_s, 2),
                "cpu_caps": self.cap_calibration,
                "device_speeds": {s.device_class: round(self._speed(s), 4) for s in self.specs},
                "device_mechanisms": self.mechanisms}

    def _device(self, spec: DeviceSpec, n_replicas: int, cloud_ms: dict[str, float]) -> Device:
        """One emulated device: its CPU (time-scaled, or the class's capped thread), link, radio and views."""
        capped = self._class_executors.get(spec.device_class)
        chooser = ReplicaChooser(self.topo.cloud.load_balancing, max(1, n_replicas), spec.device_id)
        configured = spec.uplink()
        uplink = LinkShaper(userspace_part(configured, self.backend), seed=10_000 + spec.device_id)
        estimator = LinkEstimator(_prior_view(configured, spec.downlink()), self.topo.policy.bandwidth_window,
                                  self.topo.policy.estimate_ttl_s)
        hw = self._hardware.get(spec.device_class)
        mech = self.mechanisms.get(spec.device_class)
        replays = self.topo.pools.compute == "replay" or (mech is not None and mech["mechanism"] == hardware.REPLAYED)
        dev = Device(self._host, spec, None if capped else TimeScaledCpu(self._speed(spec)), capped or self._executor,
                     chooser, configured, uplink, RadioAccount(spec.radio, self.topo.throttling.rrc == "on"),
                     estimator, CloudTimes(cloud_ms), replays, hw)
        dev.profiles = [self.heads.profile(c, self._speed(spec), cloud_ms, hw) for c in self.heads.candidates]
        return dev

    def _build(self) -> None:
        """The heads, calibrated; each profiled class's mechanism; the replays where compute is replayed."""
        self.heads.build(with_full_model=times_full_model(self.specs))
        self._choose_mechanisms()
        if self.topo.pools.compute == "replay" or any(v["mechanism"] == hardware.REPLAYED
                                                      for v in self.mechanisms.values()):
            self.heads.record_replays()

    def _choose_mechanisms(self) -> None:
        """Per profiled device class: replayed (faster than this host) or time-scaled to the profile's times."""
        for spec in self.specs:
            if spec.hardware is not None and spec.device_class not in self._hardware:
                hw = self._hardware[spec.device_class] = hardware.resolve_device(spec.hardware)
                self.mechanisms[spec.device_class] = hardware.device_mechanism(hw, self.calibration, self.heads.cuts,
                                                                               self.heads.flops_share)

    def replica_up(self, replica: int, addr: dict[str, Any]) -> None:
        """A replacement for a killed replica listens at `addr`: devices move back to it."""
        self._host.replicas.failover.up(replica, addr)

    def fault_stats(self) -> dict[str, Any]:
        return {"pool": self.pool_id, **self._host.replicas.failover.stats()}

    def _set_link_faults(self, strategy: str, t0: float, wins: list[faults.Window]) -> None:
        """This phase's link faults: the uplink in the device's shaper; the downlink is sent to the cloud's
        shaper for the device's connections (each phase starts with nothing in flight, so the frame cannot cut
        into a message)."""
        down_faults = self._host.replicas.down_faults
        down_faults.clear()
        for dev in self._devices:
            d = dev.spec.device_id
            dev.uplink.set_faults([(t0 + a, t0 + b, f)
                                   for a, b, f in faults.link_windows(self.topo, strategy, d, "uplink", wins)])
            down = [(t0 + a, t0 + b, f) for a, b, f in faults.link_windows(self.topo, strategy, d, "downlink", wins)]
            if down:
                down_faults[d] = down
            for conn in dev.conns:
                if conn.alive and (down or self.topo.faults):
                    conn.send_faults(down)

    # ------------------------------------------------------------ phases
    async def run_phase(self, strategy: str, phase_index: int, t0: float | None = None,
                        boot_id: str | None = None) -> dict[str, float]:
        """Generate every device's frames for warm-up + duration, then wait for the last answers.

        `t0`: the phase's start on the driver's clock, used where it is this clock (so fault times agree)."""
        t0 = t0 if t0 is not None and same_clock(boot_id) else now()
        horizon = self.topo.warmup_s + self.topo.duration_s
        for dev in self._devices:
            dev.start_phase(strategy)
        wins = faults.windows(self.topo, strategy)  # once per phase: it builds the device table
        self._set_link_faults(strategy, t0, wins)  # after the restart: the windows apply to the new link
        await asyncio.gather(*(d.loop(strategy, phase_index, t0, horizon, wins) for d in self._devices))
        if self._host.tasks:
            await asyncio.gather(*list(self._host.tasks), return_exceptions=True)
        for dev in self._devices:
            dev.end_phase()
        return {"pool": self.pool_id, "phase_s": round(now() - t0, 3)}

    def _speed(self, spec: DeviceSpec) -> float:
        """Relative speed; an absolute profile (full_model_ms) is set against this host's calibrated time."""
        if spec.hardware is not None:  # the profile's own times are used, never a speed
            return 1.0
        if spec.full_model_ms is None:
            return spec.speed
        return min(1.0, self.calibration["device_only"] / spec.full_model_ms)

    # ------------------------------------------------------------ reporting
    def drain(self, final: bool = False) -> list[dict[str, Any]]:
        """Finished records; a record whose tail still runs waits for it (`final`: charge the full tail now)."""
        t = now()
        for dev in self._devices:
            if dev.tail_owner is not None and (final or dev.radio.expired(t)):
                dev.settle_tail(dev.radio.full_tail_mj())
        out = list(self._records)
        self._records.clear()  # the devices release into this same list
        return out

    def live_counts(self) -> dict[str, Any]:
        """Requests ended since the last call, including records still held for their radio tail."""
        return self._host.live.take()

    async def stop(self) -> None:
        for dev in self._devices:
            for conn in dev.conns:
                conn.close()
        for executor in [self._executor, *self._class_executors.values()]:
            executor.shutdown(wait=True, cancel_futures=True)
        for cap in self._caps:
            cap.close()


def _mean_cloud_ms(replicas: list[dict[str, Any]]) -> dict[str, float]:
    """Each cut's cloud time for one item, as the replicas calibrated it (their mean)."""
    per_cut: dict[str, list[float]] = {}
    for r in replicas:
        for cut, ms in r.get("cut_cloud_ms", {}).items():
            per_cut.setdefault(cut, []).append(ms)
    return {cut: sum(v) / len(v) for cut, v in per_cut.items()}


def _prior_view(up: LinkDirection, down: LinkDirection) -> LinkView:
    """The configured link (a trace's mean rate): what a device assumes before its first answer."""
    def rate(d: LinkDirection) -> float:
        return MahimahiTrace.load(d.trace_path).mean_mbps if d.trace_path else d.rate_mbps

    return LinkView(rate(up), rate(down), up.delay_ms)
