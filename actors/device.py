"""The emulated device: it owns each of its requests' lives, from the frame's arrival to the record.

A device generates its frames (its arrival process, less the times it is away), chooses the split for each,
runs its head for real on the pool's executor (or replays it) and stretches that to its own speed, sends
the bytes through its shaped uplink to a replica (failing over when one dies), and settles the energy its
radio spent, holding a record back until its radio tail is known. The pool only hosts devices.

Time spent waiting for the pool's shared executor is an artefact of the emulation, not of the device; it
is recorded as `emu_wait_ms`, kept out of the device's compute time.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from actors.connection import Connection, Replicas
from actors.heads import Heads
from actors.steps import (
    Arrival,
    Choice,
    ComputeResult,
    EnergyResult,
    ExchangeResult,
    Outcome,
    RadioResult,
    Steps,
    UplinkResult,
)
from testbed.base import wire
from testbed.base.clock import now, same_clock, sleep_until
from testbed.base.wire import encode_frame
from testbed.config.schema import Topology
from testbed.domain import hardware, split_policy
from testbed.domain.balancing import ReplicaChooser
from testbed.domain.energy import RadioAccount
from testbed.domain.live import LiveCounts
from testbed.domain.split_policy import CloudTimes, CutProfile, LinkEstimator, Objective
from testbed.plan import faults
from testbed.plan.devices import DeviceSpec, arrivals
from throttling.cpu import TimeScaledCpu
from throttling.shaper import LinkDirection, LinkShaper, SendResult


class RejectedError(Exception):
    """The cloud answered with a rejection or an error; the reason is recorded."""


@dataclass
class DeviceHost:
    """What a pool's devices share: the run, the heads, the replicas, and where finished records go."""

    topo: Topology
    heads: Heads
    replicas: Replicas
    objective: Objective
    release: Callable[[dict[str, Any]], None]  # a finished record, to the pool's drain
    live: LiveCounts = field(default_factory=LiveCounts)  # every request as it ends (progress)
    ids: itertools.count[int] = field(default_factory=itertools.count)
    tasks: set[asyncio.Task[Any]] = field(default_factory=set)


@dataclass
class Device:
    host: DeviceHost
    spec: DeviceSpec
    cpu: TimeScaledCpu | None  # None: a real cgroup cap slows the compute thread
    executor: ThreadPoolExecutor
    chooser: ReplicaChooser
    configured_uplink: LinkDirection  # the link as the topology gives it (for the ideal transfer time)
    uplink: LinkShaper  # one radio link, shared by the device's connections
    radio: RadioAccount  # RRC state: who pays promotion, how the tail is shared
    estimator: LinkEstimator  # its view of its uplink, from its own requests (the dynamic policy)
    cloud_times: CloudTimes  # its view of each cut's cloud time, from the answers it got
    replays: bool = False  # its compute is replayed (pools.compute replay, or a profile faster than this host)
    hw: hardware.DeviceHardware | None = None  # its hardware profile, if it has one
    conns: list[Connection] = field(default_factory=list)  # one per replica it may use
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    tail_owner: Steps | None = None  # the request whose tail is still running (held back until known)
    profiles: list[CutProfile] = field(default_factory=list)  # candidate cuts at this device's speed
    phase_cut: tuple[str, float | None] | None = None  # best_static: the phase's cut and its prediction
    # requests sent and not answered: (sent at, bytes, expected ms besides the transfer), for the estimate
    outstanding: dict[int, tuple[float, int, float]] = field(default_factory=dict)

    # ------------------------------------------------------------ a phase
    def start_phase(self, strategy: str) -> None:
        """Every phase meets the same link (traces start over) and a fresh estimate; best_static picks its cut."""
        self.uplink.restart()
        self.estimator.reset()
        self.cloud_times.reset()
        for conn in self.conns:
            conn.writer.write(encode_frame(wire.phase_message()))
        self.phase_cut = None
        if strategy == "best_static":
            self.phase_cut = self.choose(strategy)

    def end_phase(self) -> None:
        """Phases are separate experiments: the held tail is charged in full, the radio starts idle."""
        self.settle_tail(self.radio.full_tail_mj())
        self.radio.reset()

    async def loop(self, strategy: str, phase: int, t0: float, horizon: float, wins: list[faults.Window]) -> None:
        """Start a request at each of the device's arrivals in the phase (none while it is away)."""
        for t_rel in arrivals(self.spec.arrival, self.spec.device_id, phase):
            if t_rel >= horizon:
                return
            if faults.absent(wins, self.spec.device_id, t_rel, self.spec.offline_s):  # away: no frame
                continue
            delay = t0 + t_rel - now()
            if delay > 0:
                await asyncio.sleep(delay)
            label = "warmup" if t_rel < self.host.topo.warmup_s else "measure"
            task = asyncio.create_task(self.request(strategy, label, t_rel))
            self.host.tasks.add(task)
            task.add_done_callback(self.host.tasks.discard)

    # ------------------------------------------------------------ a request
    async def request(self, strategy: str, phase: str, t_rel: float) -> None:
        """One request's whole life; it always ends as one record (completed, failed, timed_out)."""
        t_arrival = now()
        topo = self.host.topo
        steps = Steps(Arrival(strategy, phase, self.spec.device_id, self.spec.group, next(self.host.ids),
                              round(t_rel, 4)))
        deadline = t_arrival + topo.request_timeout_s
        status, reason = "completed", None
        try:
            await self._run(strategy, steps, deadline)
            reason = steps.retried_after and f"retried after {steps.retried_after}"
        except asyncio.TimeoutError:
            status, reason = "timed_out", f"no answer within request_timeout_s={topo.request_timeout_s:g}"
        except RejectedError as e:
            status, reason = "failed", str(e)
        except Exception as e:  # noqa: BLE001 - one broken request never stops the run
            status, reason = "failed", f"{type(e).__name__}: {e}"
        steps.outcome = Outcome(status, reason, round((now() - t_arrival) * 1000, 3))
        fields = steps.fields()
        radio = steps.radio
        steps.energy = EnergyResult.of(fields, self.spec.compute_power_w, self.spec.radio, radio is not None,
                                       None if radio is None else radio.promotion_mj)
        self.host.live.add(fields)
        if self.tail_owner is steps:  # its tail is still running: released when the tail is known
            return
        self.host.release(steps.row())

    def choose(self, strategy: str) -> tuple[str, float | None]:
        """(cut, predicted latency ms or None) for the next request of `strategy`."""
        cut = split_policy.static_cut(strategy, self.host.topo.model.split)
        if cut is not None:
            return cut, None
        if strategy == "best_static" and self.phase_cut is not None:
            return self.phase_cut
        profiles = self.profiles
        if strategy == "dynamic":  # what this device observed, and the queue its replica last reported
            queue = max((c.reported_queue for c in self.conns), default=0)
            view = self.estimator.view(now(), queue, list(self.outstanding.values()))
            profiles = [dataclasses.replace(p, cloud_ms=self.cloud_times.get(p.cut)) for p in profiles]
        else:  # best_static: the profiles and the configured link, an empty queue
            view = self.estimator.prior
        radio, spec = self.radio, self.spec
        rrc = split_policy.RrcContext(  # dynamic knows its radio's state now; best_static only the arrivals
            radio.enabled, (0.0 if radio.active else radio.idle_ms(now())) if strategy == "dynamic" else None,
            spec.arrival.process == "poisson")
        best, _ = split_policy.choose(profiles, view, spec.compute_power_w, spec.radio,
                                      1000.0 / spec.arrival.rate_hz, self.host.objective, rrc)
        return best.cut, best.latency_ms

    async def _run(self, strategy: str, steps: Steps, deadline: float) -> None:
        async with self.lock:  # the device's own CPU: one frame at a time
            cut, predicted = self.choose(strategy)  # decided when the device starts on the frame
            steps.choice = Choice(cut, round(self.estimator.uplink_mbps(now()), 4),
                                  None if predicted is None else round(predicted, 3))
            steps.compute = await self._compute(cut, steps.arrival.request_id)
        if cut == "device_only":
            return
        if now() >= deadline:  # queued too long on the device: do not send a frame nobody awaits
            raise asyncio.TimeoutError
        rid = steps.arrival.request_id
        frame = encode_frame(wire.infer_message(rid, cut, steps.compute.header.get("codec")), steps.compute.payload)
        start = self.radio.start(now())  # the RRC state now: the promotion this request waits for and pays
        steps.radio = RadioResult(start.state, None if start.promotion_ms is None else round(start.promotion_ms, 3),
                                  start.promotion_mj)
        if start.owed_tail_mj is not None:  # the previous request's tail ended when this one started
            self.settle_tail(start.owed_tail_mj)
        t_radio_end: float | None = None
        try:
            t_radio_end = await self._exchange_with_failover(steps, frame, deadline, start.promotion_ms or 0.0)
        finally:
            if self.radio.end(t_radio_end or now()):
                self.tail_owner = steps

    # ------------------------------------------------------------ the exchange with the cloud
    async def _exchange_with_failover(self, steps: Steps, frame: bytes, deadline: float, hold_ms: float) -> float:
        """`_exchange` on a live connection; if its replica dies under it, one retry elsewhere within the deadline."""
        lost = ""
        replicas = self.host.replicas
        while True:
            k = self.chooser.pick([len(c.pending) for c in self.conns], [c.reported_queue for c in self.conns])
            conn = await replicas.usable(self.conns, k, self.chooser.connects_to()[k], self.spec.device_id)
            try:
                t_done = await self._exchange(conn, steps, frame, deadline, hold_ms)
            except ConnectionError as e:
                replicas.failover.lost(conn)
                what = f"replica {conn.replica} died: {e}"
                if lost or now() >= deadline:
                    raise RejectedError(f"{lost}; retried, then {what}" if lost else what) from None
                lost, hold_ms = what, 0.0  # the radio was promoted by the first try
                replicas.failover.retries += 1
                continue
            steps.retried_after = lost or None
            return t_done

    async def _exchange(self, conn: Connection, steps: Steps, frame: bytes, deadline: float,
                        hold_ms: float = 0.0) -> float:
        """Send the frame, wait for the answer; returns when the answer's last byte arrived. The send's and the
        answer's results go to `steps` as they come (a rejection keeps what it got)."""
        rid, cut = steps.arrival.request_id, steps.choice.cut if steps.choice else ""
        fut = conn.expect(rid)
        others_ms = 2 * self.estimator.one_way_ms + (conn.reported_queue + 1) * self.cloud_times.get(cut)
        self.outstanding[rid] = (now(), len(frame), others_ms)
        try:
            # The send is shielded: cancelling it half-way would corrupt the stream.
            sent = await asyncio.shield(self.uplink.send(conn.writer, frame, hold_ms))
            steps.uplink = UplinkResult(sent.nbytes, round(sent.ms, 3), round(sent.error_ms, 3), sent.lost_packets,
                                        sent.queue_drops)
            reply, nbytes, t_done = await asyncio.wait_for(fut, max(0.0, deadline - now()))
        finally:
            conn.pending.pop(rid, None)
            self.outstanding.pop(rid, None)
        if reply.get("status") != "ok":
            steps.exchange = ExchangeResult(nbytes, reply.get("replica"), reply.get("server_ms"))
            raise RejectedError(reply.get("reason", "rejected"))
        # The uplink ends when the cloud has the last byte. On one host both sides read the same
        # monotonic clock, so the cloud's receive time is used (it includes kernel shaping, which
        # the device cannot see); across hosts, the device's own last-write time is used.
        t_up_done = reply["t_received"] if same_clock(reply.get("boot_id")) else sent.t_done
        uplink_ms = round((t_up_done - sent.t_start) * 1000, 3)  # with the RRC promotion
        t_done, drx_ms = await self._drx_wait(t_up_done, t_done)
        promotion_ms = steps.radio.rrc_promotion_ms if steps.radio else None
        # Device clock for the round trip; cloud clock for the time inside the server.
        downlink_ms = round((t_done - t_up_done) * 1000 - reply["server_ms"], 3)
        steps.exchange = ExchangeResult(
            nbytes, reply.get("replica"), round(reply["server_ms"], 3), uplink_ms, round(reply["queue_ms"], 3),
            round(reply["cloud_ms"], 3), reply["batch_size"], reply["top1"],
            self._ideal_uplink_ms(sent, t_up_done, hold_ms), downlink_ms, drx_ms,
            None if None in (promotion_ms, drx_ms) else round((promotion_ms or 0.0) + (drx_ms or 0.0), 3))
        self.estimator.observe(t_done, sent.nbytes, uplink_ms, downlink_ms)
        self.cloud_times.observe(cut, reply["cloud_ms"])
        return t_done

    def _ideal_uplink_ms(self, sent: SendResult, t_up_done: float, hold_ms: float) -> float | None:
        """What the configured link should take (idle, mean delay); None where no such figure holds (a trace,
        a delay trace, or a link fault that changed the link during the send)."""
        fixed = self.configured_uplink.replay == "fixed rate" and self.configured_uplink.delay_trace_path is None
        if not fixed or self.uplink.faulted(sent.t_start, t_up_done):
            return None
        return round(self.configured_uplink.ideal_ms(sent.nbytes) + hold_ms, 3)

    async def _drx_wait(self, t_up_done: float, t_done: float) -> tuple[float, float | None]:
        """The answer reached the device at `t_done`: a radio in DRX (or idle) takes it at its next on-duration.
        Returns when the device has it and the wait (ms, None: timers unknown)."""
        self.radio.activity(t_up_done)
        wait_ms = self.radio.downlink_wait(t_done)
        if wait_ms:
            t_done += wait_ms / 1000.0
            await sleep_until(t_done)
        self.radio.activity(t_done)
        return t_done, None if wait_ms is None else round(wait_ms, 3)

    # ------------------------------------------------------------ compute
    async def _compute(self, cut: str, request_id: int) -> ComputeResult:
        """Run the device side for real (or replay it), then stretch it to the device's speed."""
        heads = self.host.heads
        index = request_id % len(heads.frames)
        t_submit = now()
        if self.replays:  # the same bytes and timings as the real run of this frame, no compute now
            _, head_s, enc_s, payload, header = heads.by_cut[cut].replayed[index]
            t_exec = t_submit
        else:
            t_exec, head_s, enc_s, payload, header = await asyncio.get_running_loop().run_in_executor(
                self.executor, heads.work, cut, heads.frames[index])
        emu_wait_ms = round((t_exec - t_submit) * 1000, 3)
        if self.hw is not None:  # the profile's time; a replayed result is released at it, a real one waits to it
            head_ms = heads.hw_ms(self.hw, cut) if self.replays else max(head_s * 1000, heads.hw_ms(self.hw, cut))
            encode_ms = enc_s * 1000  # encoding is not in the profile: this host's time
            await sleep_until(t_exec + (head_ms + encode_ms) / 1000)
        elif self.cpu is None:  # capped: the time it took is the device's time
            head_ms, encode_ms = head_s * 1000, enc_s * 1000
        else:
            host_ms = heads.by_cut[cut].host_ms
            head_ms = max(head_s * 1000, self.cpu.target_ms(host_ms)) if host_ms else 0.0
            encode_ms = self.cpu.target_ms(enc_s * 1000)
            await sleep_until(t_exec + (head_ms + encode_ms) / 1000)
        return ComputeResult(emu_wait_ms, round(head_ms, 3), round(encode_ms, 3), payload, header)

    # ------------------------------------------------------------ energy
    def settle_tail(self, tail_mj: float) -> None:
        """The held record's tail is now known: add it and release the record."""
        steps, self.tail_owner = self.tail_owner, None
        if steps is None:
            return
        assert steps.energy is not None  # a request holds its tail only once it has ended
        steps.energy = steps.energy.with_tail(tail_mj)
        self.host.release(steps.row())
