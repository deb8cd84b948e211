"""Device pool: one process hosting many emulated devices around one model copy.

One torch process per device does not fit (about 0.5-0.8 GB each), so a pool
runs its devices as asyncio tasks and their compute on one executor thread.
Each device has its own uplink shaper, its own TCP connection to its cloud
replica, and its own compute lock (a device works on one frame at a time).

Time spent waiting for the pool's shared executor is an artefact of the
emulation, not of the device; it is recorded as `emu_wait_ms`, kept out of the
device's compute time, and reported so an overloaded host is visible.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from statistics import median
from typing import Any

import numpy as np

from actors.failover import Failover
from testbed import codec, faults, hardware, split_policy
from testbed.balancing import ReplicaChooser
from testbed.clock import BOOT_ID, now, same_clock, sleep_until
from testbed.config import Topology
from testbed.devices import DeviceSpec, arrivals, device_table
from testbed.energy import RadioAccount, compute_energy_mj, radio_transfer_mj, tail_energy_mj
from testbed.event_loop import running_loop_name
from testbed.host import freeze_heap, ray_node_id
from testbed.live import LiveCounts
from testbed.metrics import new_record
from testbed.split_policy import CloudTimes, CutProfile, LinkEstimator, LinkView, Objective
from testbed.wire import ProtocolError, encode_frame, read_frame
from throttling.cpu import TimeScaledCpu
from throttling.links import LinkBackend, userspace_part
from throttling.netns import socket_in_netns
from throttling.shaper import LinkDirection, LinkShaper
from throttling.trace import MahimahiTrace

CALIBRATION_RUNS = 5
FRAMES_PER_POOL = 32


class Connection:
    """A device's TCP connection to its cloud replica; responses are matched by request id."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, replica: int = 0, port: int = 0):
        self.reader, self.writer = reader, writer
        self.replica, self.port = replica, port  # which replica, at which address (it changes when replaced)
        self.pending: dict[int, asyncio.Future[tuple[dict[str, Any], int, float]]] = {}
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
                    fut.set_result((header, nbytes, now()))
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

    def expect(self, rid: int) -> asyncio.Future[tuple[dict[str, Any], int, float]]:
        """The future of request `rid`'s answer; ConnectionError at once if the connection has died."""
        if not self.alive:
            raise ConnectionError("connection lost before the request was sent")
        fut: asyncio.Future[tuple[dict[str, Any], int, float]] = asyncio.get_running_loop().create_future()
        self.pending[rid] = fut
        return fut

    def close(self) -> None:
        self.task.cancel()
        self.writer.close()


@dataclass
class Device:
    spec: DeviceSpec
    cpu: TimeScaledCpu | None  # None: a real cgroup cap slows the compute thread
    executor: ThreadPoolExecutor
    chooser: ReplicaChooser
    configured_uplink: LinkDirection  # the link as the topology gives it (for the ideal transfer time)
    uplink: LinkShaper  # one radio link, shared by the device's connections
    radio: RadioAccount  # RRC state: who pays promotion, how the tail is shared
    estimator: LinkEstimator  # its view of its uplink, from its own requests (the dynamic policy)
    cloud_times: CloudTimes  # its view of each cut's cloud time, from the answers it got
    conns: list[Connection] = field(default_factory=list)  # one per replica it may use
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    tail_owner: dict[str, Any] | None = None  # the record whose tail is still running (held back until known)
    profiles: list[CutProfile] = field(default_factory=list)  # candidate cuts at this device's speed
    phase_cut: tuple[str, float | None] | None = None  # best_static: the phase's cut and its prediction
    # requests sent and not answered: (sent at, bytes, expected ms besides the transfer), for the estimate
    outstanding: dict[int, tuple[float, int, float]] = field(default_factory=dict)


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
        self._live = LiveCounts()  # every request as it ends, before its record is released (progress)
        self._devices: list[Device] = []
        self._ids = itertools.count()
        self._tasks: set[asyncio.Task[Any]] = set()
        self.calibration: dict[str, float] = {}  # cut -> host ms of the device's network part
        self.calibration_s = 0.0  # what calibrating every cut cost at start
        self._encode_ms: dict[str, float] = {}  # cut -> host ms of encoding what goes up
        self._bytes_up: dict[str, int] = {}  # cut -> median bytes of what goes up
        self._models: dict[str, Any] = {}  # cut -> the network part the device runs (None: cloud_only)
        self._cuts: list[str] = []  # every cut this run's policies may use
        self._candidates: list[str] = []  # the cuts best_static and dynamic choose among
        self._objective = Objective(self.topo.policy.objective, self.topo.policy.energy_weight_ms_per_mj)
        # pools.compute == "replay": each frame's device output and timings, computed once at start
        self._replayed: dict[tuple[str, int], tuple[float, float, float, bytes, dict[str, Any]]] = {}
        self._failover = Failover([])
        self._down_faults: dict[int, list[tuple[float, float, float]]] = {}  # device -> downlink fault windows
        self._hardware: dict[str, hardware.DeviceHardware] = {}  # device class -> its hardware profile
        self._flops_share: dict[str, float] = {}  # cut -> share of the model's FLOPs before it (the catalogue)
        self.mechanisms: dict[str, dict[str, Any]] = {}  # device class -> how it is emulated, and why

    # ------------------------------------------------------------ set-up
    async def prepare(self) -> dict[str, Any]:
        """Build the model and calibrate host compute times (overlaps the cloud's start); then caps, if any."""
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._executor, self._build)
        if self.cpu["name"] == "cgroup":
            for cls, speed in sorted({(s.device_class, self._speed(s)) for s in self.specs if s.hardware is None}):
                await self._cap_class(cls, speed)
        print(f"pool {self.pool_id}: event loop: {running_loop_name()}", flush=True)  # the run's log says which
        return {"host_ms": self.calibration, "caps": self.cap_calibration, "event_loop": running_loop_name()}

    async def _cap_class(self, cls: str, speed: float) -> None:
        """A compute thread for one device class, capped and calibrated to host time / speed."""
        from throttling.cgroup import CpuCap, calibrate

        loop = asyncio.get_running_loop()
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"pool{self.pool_id}-{cls}")
        cap = CpuCap(f"pool{self.pool_id}-{cls}", speed, self.cpu["run_id"])
        self._caps.append(cap)
        self._class_executors[cls] = executor
        await loop.run_in_executor(executor, self._enter_cap, cap)
        cut = next(iter(self.calibration))  # the first cut with a network on the device
        model = self._models[cut]
        target_ms = self.calibration[cut] / speed
        result = await loop.run_in_executor(
            executor, lambda: calibrate(lambda: self._infer(model, self._frames[0]), target_ms, cap))
        self.cap_calibration[cls] = {"model": cut, **dataclasses.asdict(result)}

    @staticmethod
    def _enter_cap(cap: Any) -> None:
        import torch

        torch.set_num_threads(1)  # per thread: see throttling.cgroup
        cap.attach_thread()

    async def connect(self, replicas: list[dict[str, Any]]) -> dict[str, Any]:
        """Open each device's connections: to one replica (static) or to every replica it balances over."""
        self._failover = Failover(replicas)
        cloud_ms = _mean_cloud_ms(replicas)
        for spec in self.specs:
            capped = self._class_executors.get(spec.device_class)
            chooser = ReplicaChooser(self.topo.cloud.load_balancing, max(1, len(replicas)), spec.device_id)
            configured = spec.uplink()
            uplink = LinkShaper(userspace_part(configured, self.backend), seed=10_000 + spec.device_id)
            estimator = LinkEstimator(_prior_view(configured, spec.downlink()), self.topo.policy.bandwidth_window,
                                      self.topo.policy.estimate_ttl_s)
            dev = Device(spec, None if capped else TimeScaledCpu(self._speed(spec)), capped or self._executor,
                         chooser, configured, uplink, RadioAccount(spec.radio, self.topo.throttling.rrc == "on"),
                         estimator, CloudTimes(cloud_ms))
            hw = self._hardware.get(spec.device_class)
            dev.profiles = [self._profile(c, self._speed(spec), cloud_ms, hw) for c in self._candidates]
            if any(split_policy.uses_network(c) for c in self._cuts):
                dev.conns = [await self._connect(spec, replicas[i]) for i in chooser.connects_to()]
            self._devices.append(dev)
        freeze_heap()
        return {"pool": self.pool_id, "pid": os.getpid(), "node_id": ray_node_id(), "devices": len(self.specs),
                "calibration_host_ms": self.calibration, "calibration_s": round(self.calibration_s, 2),
                "cpu_caps": self.cap_calibration,
                "device_speeds": {s.device_class: round(self._speed(s), 4) for s in self.specs},
                "device_mechanisms": self.mechanisms}

    def _build(self) -> None:
        import torch

        from testbed.cut_catalogue import cumulative_ms
        from testbed.frames import make_frames
        from testbed.model import build_split_model, catalogue_rows, cut_parts, preprocess

        torch.set_num_threads(self.topo.pools.torch_threads)
        m, policy = self.topo.model, self.topo.policy
        sm = build_split_model(m.weights, m.seed, m.split, m.butterfly_channels, m.input_size, arch=m.arch)
        catalogue = catalogue_rows(sm.catalogue)
        self._flops_share = {r["cut"]: r["flops_share"] for r in catalogue}  # a hardware profile's rule for any cut
        self._frames = make_frames(m.image_dir, m.input_size, FRAMES_PER_POOL, seed=m.seed + self.pool_id)
        self._cuts = split_policy.cuts_for_run(self.topo.strategies, policy.cuts, m.split, catalogue)
        if any(s in split_policy.ADAPTIVE for s in self.topo.strategies):
            self._candidates = split_policy.candidate_cuts(policy.cuts, m.split, catalogue)
        absolute = any(s.full_model_ms is not None for s in self.specs)  # needs the host's full-model time
        profiled = self._cuts + (["device_only"] if absolute and "device_only" not in self._cuts else [])
        t_cal = now()
        # every raw cut's head time from one set of timed passes along the graph, not one head per cut
        with torch.inference_mode():
            upto_ms, full_ms = cumulative_ms(sm.catalogue, preprocess([self._frames[0]]), CALIBRATION_RUNS)
        upto_ms["device_only"] = full_ms
        for cut in profiled:
            self._models[cut] = cut_parts(sm, cut)[0]
            one_pass = cut in upto_ms
            n_runs = 1 if one_pass else 2 + CALIBRATION_RUNS  # one run: the warm-up, the bytes and the encode
            runs = [self._device_work(cut, self._frames[i % len(self._frames)]) for i in range(n_runs)]
            runs = runs if one_pass else runs[2:]
            if self._models[cut] is not None:
                self.calibration[cut] = upto_ms[cut] if one_pass else median(r[1] for r in runs) * 1000
            self._encode_ms[cut] = median(r[2] for r in runs) * 1000
            self._bytes_up[cut] = int(median(len(r[3]) for r in runs))
        self.calibration_s = now() - t_cal
        self._choose_mechanisms()
        if self.topo.pools.compute == "replay" or any(v["mechanism"] == hardware.REPLAYED
                                                      for v in self.mechanisms.values()):
            self._replayed = {(c, i): self._device_work(c, f) for c in self._cuts for i, f in enumerate(self._frames)}

    def _choose_mechanisms(self) -> None:
        """Per profiled device class: replayed (faster than this host) or time-scaled to the profile's times."""
        for spec in self.specs:
            if spec.hardware is not None and spec.device_class not in self._hardware:
                hw = self._hardware[spec.device_class] = hardware.resolve_device(spec.hardware)
                self.mechanisms[spec.device_class] = hardware.device_mechanism(hw, self.calibration, self._cuts,
                                                                                     self._flops_share)

    def _replays(self, dev: Device) -> bool:
        if self.topo.pools.compute == "replay":
            return True
        mech = self.mechanisms.get(dev.spec.device_class)
        return mech is not None and mech["mechanism"] == hardware.REPLAYED

    def _profile(self, cut: str, speed: float, cloud_ms: dict[str, float],
                 hw: hardware.DeviceHardware | None = None) -> CutProfile:
        """What a cut costs this device (calibrated host times at its speed, or its hardware profile's) for the
        split predictions."""
        device_ms = (self.calibration.get(cut, 0.0) + self._encode_ms[cut]) / speed if hw is None \
            else self._hw_ms(hw, cut) + self._encode_ms[cut]
        return CutProfile(cut, device_ms, self._bytes_up[cut], cloud_ms.get(cut, 0.0))

    def _hw_ms(self, hw: hardware.DeviceHardware, cut: str) -> float:
        """A hardware profile's time for `cut` (a cut it does not list: by the catalogue's FLOPs share)."""
        return hw.cut_ms(cut, self._flops_share.get(cut.partition("+")[0]))

    def _infer(self, model: Any, frame: np.ndarray) -> Any:
        import torch

        from testbed.model import preprocess

        with torch.inference_mode():
            return model(preprocess([frame]))

    async def _connect(self, spec: DeviceSpec, addr: dict[str, Any]) -> Connection:
        if self.net is None:
            reader, writer = await asyncio.open_connection(addr["host"], addr["port"], limit=2**20)
        else:  # the device's socket lives in its own namespace, behind its shaped veth
            sock = socket_in_netns(self.net["device_ns"][spec.device_id])
            sock.setblocking(False)
            await asyncio.get_running_loop().sock_connect(sock, (addr["host"], addr["port"]))
            reader, writer = await asyncio.open_connection(sock=sock, limit=2**20)
        # the replica's token; the replica takes this device's downlink from the run's configuration
        hello = {"type": "hello", "device_id": spec.device_id, "token": addr.get("token", "")}
        writer.write(encode_frame(hello))
        if spec.device_id in self._down_faults:  # the phase's downlink faults, for the cloud's shaper
            writer.write(encode_frame({"type": "faults", "windows": self._down_faults[spec.device_id],
                                       "boot_id": BOOT_ID, "t_sent": now()}))
        await writer.drain()
        return Connection(reader, writer, int(addr.get("replica", 0)), int(addr["port"]))

    def replica_up(self, replica: int, addr: dict[str, Any]) -> None:
        """A replacement for a killed replica listens at `addr`: devices move back to it."""
        self._failover.up(replica, addr)

    def fault_stats(self) -> dict[str, Any]:
        return {"pool": self.pool_id, **self._failover.stats()}

    def _set_link_faults(self, strategy: str, t0: float, wins: list[faults.Window]) -> None:
        """This phase's link faults: the uplink in the device's shaper; the downlink is sent to the cloud's
        shaper for the device's connections (each phase starts with nothing in flight, so the frame cannot cut
        into a message)."""
        self._down_faults = {}
        for dev in self._devices:
            d = dev.spec.device_id
            dev.uplink.set_faults([(t0 + a, t0 + b, f)
                                   for a, b, f in faults.link_windows(self.topo, strategy, d, "uplink", wins)])
            down = [(t0 + a, t0 + b, f) for a, b, f in faults.link_windows(self.topo, strategy, d, "downlink", wins)]
            if down:
                self._down_faults[d] = down
            for conn in dev.conns:
                if conn.alive and (down or self.topo.faults):
                    conn.writer.write(encode_frame({"type": "faults", "windows": down, "boot_id": BOOT_ID,
                                                    "t_sent": now()}))

    # ------------------------------------------------------------ phases
    async def run_phase(self, strategy: str, phase_index: int, t0: float | None = None,
                        boot_id: str | None = None) -> dict[str, float]:
        """Generate every device's frames for warm-up + duration, then wait for the last answers.

        `t0`: the phase's start on the driver's clock, used where it is this clock (so fault times agree)."""
        t0 = t0 if t0 is not None and same_clock(boot_id) else now()
        horizon = self.topo.warmup_s + self.topo.duration_s
        for dev in self._devices:  # every phase meets the same link: traces start over
            dev.uplink.restart()
            dev.estimator.reset()
            dev.cloud_times.reset()
            for conn in dev.conns:
                conn.writer.write(encode_frame({"type": "phase"}))
            dev.phase_cut = None
            if strategy == "best_static":
                dev.phase_cut = self._choose(dev, strategy)
        wins = faults.windows(self.topo, strategy)  # once per phase: it builds the device table
        self._set_link_faults(strategy, t0, wins)  # after the restart: the windows apply to the new link
        await asyncio.gather(*(self._device_loop(d, strategy, phase_index, t0, horizon, wins)
                               for d in self._devices))
        if self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
        for dev in self._devices:  # phases are separate experiments: the radio starts idle in the next
            self._settle_tail(dev, dev.radio.full_tail_mj())
            dev.radio.reset()
        return {"pool": self.pool_id, "phase_s": round(now() - t0, 3)}

    async def _device_loop(self, dev: Device, strategy: str, phase: int, t0: float, horizon: float,
                           wins: list[faults.Window]) -> None:
        for t_rel in arrivals(dev.spec.arrival, dev.spec.device_id, phase):
            if t_rel >= horizon:
                return
            if faults.absent(wins, dev.spec.device_id, t_rel, dev.spec.offline_s):  # away: no frame
                continue
            delay = t0 + t_rel - now()
            if delay > 0:
                await asyncio.sleep(delay)
            label = "warmup" if t_rel < self.topo.warmup_s else "measure"
            task = asyncio.create_task(self._request(dev, strategy, label, t_rel))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _request(self, dev: Device, strategy: str, phase: str, t_rel: float) -> None:
        t_arrival = now()
        rec = new_record(strategy=strategy, phase=phase, device_id=dev.spec.device_id,
                         group=dev.spec.group, request_id=next(self._ids), t_arrival_s=round(t_rel, 4),
                         bytes_up=0, bytes_down=0)
        deadline = t_arrival + self.topo.request_timeout_s
        try:
            await self._run_request(dev, strategy, rec, deadline)
            rec["status"] = "completed"
        except asyncio.TimeoutError:
            rec["status"] = "timed_out"
            rec["reason"] = f"no answer within request_timeout_s={self.topo.request_timeout_s:g}"
        except RejectedError as e:
            rec["status"], rec["reason"] = "failed", str(e)
        except Exception as e:  # noqa: BLE001 - one broken request never stops the run
            rec["status"], rec["reason"] = "failed", f"{type(e).__name__}: {e}"
        rec["e2e_ms"] = round((now() - t_arrival) * 1000, 3)
        self._finish_energy(dev, rec)
        self._live.add(rec)
        if dev.tail_owner is rec:  # its tail is still running: released when the tail is known
            return
        self._records.append(rec)

    def _choose(self, dev: Device, strategy: str) -> tuple[str, float | None]:
        """(cut, predicted latency ms or None) for the next request of `strategy`."""
        cut = split_policy.static_cut(strategy, self.topo.model.split)
        if cut is not None:
            return cut, None
        if strategy == "best_static" and dev.phase_cut is not None:
            return dev.phase_cut
        profiles = dev.profiles
        if strategy == "dynamic":  # what this device observed, and the queue its replica last reported
            queue = max((c.reported_queue for c in dev.conns), default=0)
            view = dev.estimator.view(now(), queue, list(dev.outstanding.values()))
            profiles = [dataclasses.replace(p, cloud_ms=dev.cloud_times.get(p.cut)) for p in profiles]
        else:  # best_static: the profiles and the configured link, an empty queue
            view = dev.estimator.prior
        rrc = split_policy.RrcContext(  # dynamic knows its radio's state now; best_static only the arrivals
            dev.radio.enabled, (0.0 if dev.radio.active else dev.radio.idle_ms(now())) if strategy == "dynamic"
            else None, dev.spec.arrival.process == "poisson")
        best, _ = split_policy.choose(profiles, view, dev.spec.compute_power_w, dev.spec.radio,
                                      1000.0 / dev.spec.arrival.rate_hz, self._objective, rrc)
        return best.cut, best.latency_ms

    async def _run_request(self, dev: Device, strategy: str, rec: dict[str, Any], deadline: float) -> None:
        async with dev.lock:  # the device's own CPU: one frame at a time
            cut, predicted = self._choose(dev, strategy)  # decided when the device starts on the frame
            rec.update(cut=cut, est_uplink_mbps=round(dev.estimator.uplink_mbps(now()), 4),
                       predicted_ms=None if predicted is None else round(predicted, 3))
            payload, header = await self._device_compute(dev, cut, rec)
        if cut == "device_only":
            rec["top1"] = header["top1"]
            return
        if now() >= deadline:  # queued too long on the device: do not send a frame nobody awaits
            raise asyncio.TimeoutError
        rid = rec["request_id"]
        frame = encode_frame({**header, "type": "infer", "id": rid, "kind": cut}, payload)
        start = dev.radio.start(now())  # the RRC state now: the promotion this request waits for and pays
        rec.update(energy_promotion_mj=start.promotion_mj, rrc_state=start.state,
                   rrc_promotion_ms=None if start.promotion_ms is None else round(start.promotion_ms, 3))
        if start.owed_tail_mj is not None:  # the previous request's tail ended when this one started
            self._settle_tail(dev, start.owed_tail_mj)
        t_radio_end: float | None = None
        try:
            t_radio_end = await self._exchange_with_failover(dev, rec, frame, deadline, start.promotion_ms or 0.0)
        finally:
            if dev.radio.end(t_radio_end or now()):
                dev.tail_owner = rec

    async def _exchange_with_failover(self, dev: Device, rec: dict[str, Any], frame: bytes, deadline: float,
                                      hold_ms: float) -> float:
        """`_exchange` on a live connection; if its replica dies under it, one retry elsewhere within the deadline."""
        lost = ""
        while True:
            k = dev.chooser.pick([len(c.pending) for c in dev.conns], [c.reported_queue for c in dev.conns])
            conn = await self._failover.usable(dev.conns, k, dev.chooser.connects_to()[k],
                                               lambda addr: self._connect(dev.spec, addr))
            try:
                t_done = await self._exchange(dev, conn, rec, frame, deadline, hold_ms)
            except ConnectionError as e:
                self._failover.lost(conn)
                what = f"replica {conn.replica} died: {e}"
                if lost or now() >= deadline:
                    raise RejectedError(f"{lost}; retried, then {what}" if lost else what) from None
                lost, hold_ms = what, 0.0  # the radio was promoted by the first try
                self._failover.retries += 1
                continue
            if lost:
                rec["reason"] = f"retried after {lost}"
            return t_done

    async def _exchange(self, dev: Device, conn: Connection, rec: dict[str, Any], frame: bytes,
                        deadline: float, hold_ms: float = 0.0) -> float:
        """Send the frame, wait for the answer; returns when the answer's last byte arrived."""
        rid = rec["request_id"]
        fut = conn.expect(rid)
        others_ms = 2 * dev.estimator.one_way_ms + (conn.reported_queue + 1) * dev.cloud_times.get(rec["cut"])
        dev.outstanding[rid] = (now(), len(frame), others_ms)
        try:
            # The send is shielded: cancelling it half-way would corrupt the stream.
            sent = await asyncio.shield(dev.uplink.send(conn.writer, frame, hold_ms))
            rec["bytes_up"] = sent.nbytes
            rec["uplink_ms"] = round(sent.ms, 3)
            rec["uplink_error_ms"] = round(sent.error_ms, 3)
            rec["lost_packets"] = sent.lost_packets
            rec["queue_drops"] = sent.queue_drops
            reply, nbytes, t_done = await asyncio.wait_for(fut, max(0.0, deadline - now()))
        finally:
            conn.pending.pop(rid, None)
            dev.outstanding.pop(rid, None)
        rec["bytes_down"] = nbytes
        rec["replica"] = reply.get("replica")
        if reply.get("status") != "ok":
            rec["server_ms"] = reply.get("server_ms")
            raise RejectedError(reply.get("reason", "rejected"))
        rec.update(queue_ms=round(reply["queue_ms"], 3), cloud_ms=round(reply["cloud_ms"], 3),
                   server_ms=round(reply["server_ms"], 3), batch_size=reply["batch_size"], top1=reply["top1"])
        # The uplink ends when the cloud has the last byte. On one host both sides read the same
        # monotonic clock, so the cloud's receive time is used (it includes kernel shaping, which
        # the device cannot see); across hosts, the device's own last-write time is used.
        t_up_done = reply["t_received"] if same_clock(reply.get("boot_id")) else sent.t_done
        rec["uplink_ms"] = round((t_up_done - sent.t_start) * 1000, 3)  # with the RRC promotion
        t_done = await self._drx_wait(dev, rec, t_up_done, t_done)
        fixed = dev.configured_uplink.replay == "fixed rate" and dev.configured_uplink.delay_trace_path is None
        if fixed and not dev.uplink.faulted(sent.t_start, t_up_done):
            # what the configured link should take (idle, mean delay); not where a link fault changed the link
            rec["uplink_ideal_ms"] = round(dev.configured_uplink.ideal_ms(sent.nbytes) + hold_ms, 3)
        # Device clock for the round trip; cloud clock for the time inside the server.
        rec["downlink_ms"] = round((t_done - t_up_done) * 1000 - reply["server_ms"], 3)
        dev.estimator.observe(t_done, sent.nbytes, rec["uplink_ms"], rec["downlink_ms"])
        dev.cloud_times.observe(rec["cut"], reply["cloud_ms"])
        return t_done

    @staticmethod
    async def _drx_wait(dev: Device, rec: dict[str, Any], t_up_done: float, t_done: float) -> float:
        """The answer reached the device at `t_done`: a radio in DRX (or idle) takes it at its next on-duration.
        Returns when the device has it; records the wait and the request's whole RRC time."""
        dev.radio.activity(t_up_done)
        wait_ms = dev.radio.downlink_wait(t_done)
        if wait_ms:
            t_done += wait_ms / 1000.0
            await sleep_until(t_done)
        dev.radio.activity(t_done)
        rec["rrc_drx_ms"] = None if wait_ms is None else round(wait_ms, 3)
        parts = (rec["rrc_promotion_ms"], rec["rrc_drx_ms"])
        rec["rrc_ms"] = None if None in parts else round(sum(p for p in parts if p is not None), 3)
        return t_done

    async def _device_compute(self, dev: Device, cut: str, rec: dict[str, Any]) -> tuple[bytes, dict[str, Any]]:
        """Run the device side for real (or replay it), then stretch it to the device's speed."""
        loop = asyncio.get_running_loop()
        index = rec["request_id"] % len(self._frames)
        t_submit = now()
        replayed = self._replays(dev)
        if replayed:  # the same bytes and timings as the real run of this frame, no compute now
            _, head_s, enc_s, payload, header = self._replayed[(cut, index)]
            t_exec = t_submit
        else:
            t_exec, head_s, enc_s, payload, header = await loop.run_in_executor(
                dev.executor, self._device_work, cut, self._frames[index])
        rec["emu_wait_ms"] = round((t_exec - t_submit) * 1000, 3)
        hw = self._hardware.get(dev.spec.device_class)
        if hw is not None:  # the profile's time; a replayed result is released at it, a real one waits to it
            head_ms = self._hw_ms(hw, cut) if replayed else max(head_s * 1000, self._hw_ms(hw, cut))
            encode_ms = enc_s * 1000  # encoding is not in the profile: this host's time
            await sleep_until(t_exec + (head_ms + encode_ms) / 1000)
        elif dev.cpu is None:  # capped: the time it took is the device's time
            head_ms, encode_ms = head_s * 1000, enc_s * 1000
        else:
            host_ms = self.calibration.get(cut, 0.0)
            head_ms = max(head_s * 1000, dev.cpu.target_ms(host_ms)) if host_ms else 0.0
            encode_ms = dev.cpu.target_ms(enc_s * 1000)
            await sleep_until(t_exec + (head_ms + encode_ms) / 1000)
        rec["head_ms"] = round(head_ms, 3)
        rec["encode_ms"] = round(encode_ms, 3)
        return payload, header

    def _device_work(self, cut: str, frame: np.ndarray) -> tuple[float, float, float, bytes, dict[str, Any]]:
        t_exec = now()
        m = self.topo.model
        if cut == "cloud_only":
            data = codec.encode_image(frame, m.cloud_only_upload, m.jpeg_quality)
            return t_exec, 0.0, now() - t_exec, data, {}
        out = self._infer(self._models[cut], frame)
        t_head = now()
        if cut == "device_only":
            return t_exec, t_head - t_exec, 0.0, b"", {"top1": int(out.argmax(dim=1)[0])}
        meta, payload = codec.encode_tensor(out[0].numpy(), m.codec.dtype, m.codec.zstd_level)
        return t_exec, t_head - t_exec, now() - t_head, payload, {"codec": meta}

    def _finish_energy(self, dev: Device, rec: dict[str, Any]) -> None:
        """Compute, transfer, promotion and the tail known so far (the wait for the answer)."""
        rec["energy_compute_mj"] = round(compute_energy_mj(
            dev.spec.compute_power_w, (rec["head_ms"] or 0) + (rec["encode_ms"] or 0)), 4)
        radio = dev.spec.radio
        used_radio = rec["energy_promotion_mj"] is not None
        rec["energy_promotion_mj"] = round(rec["energy_promotion_mj"] or 0.0, 4)
        if not used_radio:
            rec["energy_transfer_mj"] = 0.0
        elif radio.known:  # the bytes on the air: not the promotion before them nor the DRX wait after
            promotion_ms, drx_ms = rec["rrc_promotion_ms"], rec["rrc_drx_ms"]
            rec["energy_transfer_mj"] = round(radio_transfer_mj(
                radio, rec["bytes_up"] or 0, max(0.0, (rec["uplink_ms"] or 0) - (promotion_ms or 0)),
                rec["bytes_down"] or 0, max(0.0, (rec["downlink_ms"] or 0) - (drx_ms or 0))), 4)
        # between the last uplink byte and the answer (its DRX wait included) the radio is idle: tail power
        idle_ms = (rec["server_ms"] or 0.0) + (rec["rrc_drx_ms"] or 0.0)
        rec["energy_tail_mj"] = round(tail_energy_mj(radio, idle_ms), 4) if used_radio else 0.0
        _total_energy(rec, radio.known or not used_radio)

    def _settle_tail(self, dev: Device, tail_mj: float) -> None:
        """The held record's tail is now known: add it and release the record."""
        rec, dev.tail_owner = dev.tail_owner, None
        if rec is None:
            return
        rec["energy_tail_mj"] = round((rec["energy_tail_mj"] or 0.0) + tail_mj, 4)
        _total_energy(rec, dev.spec.radio.known)
        self._records.append(rec)

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
                self._settle_tail(dev, dev.radio.full_tail_mj())
        out, self._records = self._records, []
        return out

    def live_counts(self) -> dict[str, Any]:
        """Requests ended since the last call, including records still held for their radio tail."""
        return self._live.take()

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


class RejectedError(Exception):
    """The cloud answered with a rejection or an error; the reason is recorded."""


def _total_energy(rec: dict[str, Any], radio_known: bool) -> None:
    """energy_radio = transfer + promotion + tail; unknown radio coefficients leave both totals unknown."""
    if not radio_known:
        rec["energy_radio_mj"] = rec["energy_mj"] = None
        return
    radio = (rec["energy_transfer_mj"] or 0.0) + rec["energy_promotion_mj"] + rec["energy_tail_mj"]
    rec["energy_radio_mj"] = round(radio, 4)
    rec["energy_mj"] = round(rec["energy_compute_mj"] + radio, 4)
