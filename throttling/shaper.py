"""Userspace link shaper: one direction of one device's link, applied to real bytes.

The link is a FIFO pipe. A message is cut into MTU-sized packets; each packet
is clocked out at the link rate after the previous one (a token bucket with no
burst allowance: the link's busy cursor makes back-to-back messages queue), then propagates for the one-way delay
(plus a per-message jitter sample, never reordering). A lost packet is resent
after `rtx_ms` (about one RTT, as TCP fast retransmit would) and takes the link
again; in-order delivery holds every later byte behind it.

The plan (`plan`) is pure bookkeeping; `send` then writes each group of bytes
to the socket at the time it would leave the far end of the emulated pipe, so
the receiver sees real bytes arrive when the emulated link would deliver them.
With `per_message` (throttling.delivery: message) it writes the whole message
when its last byte would arrive: the same completion time, one timer and one
write per message instead of one per packet group (density runs).
Both directions use this one class: the device shapes its uplink, the cloud
shapes each connection's downlink.
"""

from __future__ import annotations

import asyncio
import bisect
import random
from dataclasses import dataclass

from testbed.base.clock import now, sleep_until
from throttling.cellreplay import CellReplaySerializer, DelayTrace, LightTrace
from throttling.queues import DropTail, GeParams, GilbertElliott
from throttling.trace import MahimahiTrace, RateSerializer, Serializer, TraceSerializer

MTU_BYTES = 1500
# Packets due within this window are written together, to bound wake-ups;
# the last packet of a message is never written early.
COALESCE_S = 0.0005


@dataclass(frozen=True)
class LinkDirection:
    rate_mbps: float
    delay_ms: float  # one-way propagation delay
    jitter_ms: float = 0.0  # std-dev of a per-message normal delay offset
    loss_pct: float = 0.0  # per-packet loss probability, in percent
    rtx_ms: float = 0.0  # extra delay of a lost packet before it is resent
    mtu_bytes: int = MTU_BYTES
    kernel_rate: bool = False  # the kernel (tc) clocks the bytes out; this shaper adds no serialization
    trace_path: str | None = None  # a Mahimahi trace: capacity follows it instead of rate_mbps
    trace_offset_ms: float = 0.0  # where in the trace this link starts
    queue_packets: int | None = None  # drop-tail queue limit in packets (throttling.queues); None: unbounded
    queue_bytes: int | None = None  # drop-tail queue limit in bytes
    ge_loss: tuple[float, float, float, float] | None = None  # Gilbert-Elliott (p_gb, p_bg, loss_good, loss_bad)
    delay_trace_path: str | None = None  # the one-way delay follows this trace (throttling.cellreplay.DelayTrace)
    light_trace_path: str | None = None  # CellReplay: light PDOs + base delay, with heavy_trace_path after them
    heavy_trace_path: str | None = None
    long_to_short_ms: float = 0.0
    per_message: bool = False  # throttling.delivery message: the whole message is written at its last byte's time

    @property
    def replay(self) -> str:
        """How this direction's capacity is replayed, as the output names it."""
        if self.light_trace_path:
            return "cellreplay (workload-aware: light PDOs for short bursts, heavy after them)"
        if self.trace_path:
            return "mahimahi (saturator-recorded: every burst gets a saturating flow's opportunities)"
        return "fixed rate"

    def ideal_ms(self, nbytes: int) -> float:
        """bytes/rate + delay: what the link should take for one message on an idle link."""
        return nbytes * 8 / (self.rate_mbps * 1e3) + self.delay_ms


@dataclass(frozen=True)
class Plan:
    t_start: float
    ends: list[int]  # cumulative byte offset after each packet
    arrivals: list[float]  # when each packet's last byte leaves the far end
    lost_packets: int
    queue_drops: int = 0  # packets the full drop-tail queue refused (each resent after rtx_ms)

    @property
    def t_last(self) -> float:
        return self.arrivals[-1] if self.arrivals else self.t_start


@dataclass(frozen=True)
class SendResult:
    t_start: float
    t_planned: float  # planned arrival of the last byte
    t_done: float  # when the last byte was actually written
    nbytes: int
    lost_packets: int
    queue_drops: int = 0

    @property
    def ms(self) -> float:
        return (self.t_done - self.t_start) * 1000.0

    @property
    def error_ms(self) -> float:
        """How late the real write was against the plan (shaper fidelity)."""
        return (self.t_done - self.t_planned) * 1000.0


class ImmediateSerializer:
    """The kernel clocks the bytes out (tc backend): a packet leaves this shaper when ready."""

    def depart(self, size: int, t_ready: float) -> float:
        return t_ready


class FaultWindows:
    """Link faults on top of any serializer: in a window the link runs at `factor` of its capacity (0: an outage).

    Windows are (start, end, factor) in monotonic seconds. The wrapped serializer runs on *link time*, which
    stands still in an outage and runs at `factor` in a degradation, so a packet that would cross the link during
    an outage crosses after it, and one that crosses a degraded stretch takes 1/factor as long; a message
    straddling a window's edge is split exactly. Overlapping windows multiply. A traced link's trace is paused
    along with its link time. Over the kernel's serializer (tc), an outage holds the bytes in userspace and a
    degradation has no effect here (the driver sets the kernel tbf rate for it: testbed.run.fault_driver).
    """

    def __init__(self, inner: Serializer, windows: list[tuple[float, float, float]]):
        self.inner = inner
        edges = sorted({t for a, b, _ in windows for t in (a, b)})
        self.segments: list[tuple[float, float, float, float]] = []  # (start, end, factor, link time at start)
        shift = 0.0  # real time lost so far
        for a, b in zip(edges, edges[1:], strict=False):
            factor = 1.0
            for start, end, f in windows:
                if start <= a and b <= end:
                    factor *= f
            if factor < 1.0:
                self.segments.append((a, b, factor, a - shift))
                shift += (b - a) * (1.0 - factor)

    def to_link(self, t: float) -> float:
        shift = 0.0
        for a, b, f, _ in self.segments:
            if t <= a:
                break
            shift += (min(t, b) - a) * (1.0 - f)
        return t - shift

    def to_real(self, link_t: float) -> float:
        """The first real time at which the link has reached `link_t` (the end of an outage that holds it)."""
        shift = 0.0
        for a, b, f, la in self.segments:
            if link_t < la:
                break
            span = (b - a) * f
            if link_t < la + span or (f == 0.0 and link_t == la):
                return b if f == 0.0 else a + (link_t - la) / f
            shift += (b - a) * (1.0 - f)
        return link_t + shift

    def depart(self, size: int, t_ready: float) -> float:
        return self.to_real(self.inner.depart(size, self.to_link(t_ready)))


def serializer_for(spec: LinkDirection, t0: float) -> Serializer:
    """How packets are clocked onto the link: the kernel, a recorded trace, or a fixed rate."""
    if spec.kernel_rate:
        return ImmediateSerializer()
    if spec.light_trace_path and spec.heavy_trace_path:
        return CellReplaySerializer(LightTrace.load(spec.light_trace_path), MahimahiTrace.load(spec.heavy_trace_path),
                                    t0, spec.trace_offset_ms, spec.long_to_short_ms)
    if spec.trace_path:
        return TraceSerializer(MahimahiTrace.load(spec.trace_path), t0, spec.trace_offset_ms)
    return RateSerializer(spec.rate_mbps)


class LinkShaper:
    def __init__(self, spec: LinkDirection, seed: int = 0):
        if spec.rate_mbps <= 0:
            raise ValueError("rate_mbps must be > 0")
        self.spec = spec
        self._rng = random.Random(seed)
        self._t0 = now()
        self._base = self._serializer = serializer_for(spec, self._t0)
        self._last_arrival = 0.0
        self._delays = DelayTrace.load(spec.delay_trace_path) if spec.delay_trace_path else None
        self._write_lock = asyncio.Lock()
        self._queue = DropTail(spec.queue_packets, spec.queue_bytes) if spec.queue_packets or spec.queue_bytes else None
        self._ge = GilbertElliott(GeParams(*spec.ge_loss), self._rng) if spec.ge_loss else None

    def set_faults(self, windows: list[tuple[float, float, float]]) -> None:
        """Link faults from now on: (start, end, capacity factor) in monotonic seconds; [] clears them."""
        self._serializer = FaultWindows(self._base, windows) if windows else self._base

    def faulted(self, t_a: float, t_b: float) -> bool:
        """Whether a fault window touches [t_a, t_b] (the configured link's ideal time does not apply then)."""
        segments = getattr(self._serializer, "segments", [])
        return any(a <= t_b and t_a <= b for a, b, _, _ in segments)

    def restart(self) -> None:
        """Start the link over now (a new phase): a trace replays from its offset again, so every phase of a
        run meets the same capacity over time."""
        self._t0 = now()
        self._base = self._serializer = serializer_for(self.spec, self._t0)  # faults: set again after it
        self._last_arrival = 0.0
        if self._queue is not None:
            self._queue.reset()
        if self._ge is not None:
            self._ge.bad = False

    def plan(self, nbytes: int, t_start: float, t_ready: float | None = None) -> Plan:
        """Schedule one message on the link (advances the link's state); no byte leaves before `t_ready`
        (the radio's promotion: testbed.domain.rrc), though the message counts from `t_start`."""
        spec = self.spec
        delay = self._delay_s(t_start)
        if spec.jitter_ms > 0:
            delay = max(0.0, delay + self._rng.gauss(0.0, spec.jitter_ms / 1000.0))
        p_loss = spec.loss_pct / 100.0
        rtx = spec.rtx_ms / 1000.0
        floor = self._last_arrival
        ends: list[int] = []
        arrivals: list[float] = []
        lost, offset, drops = 0, 0, 0
        ready = t_start if t_ready is None else max(t_start, t_ready)
        while offset < nbytes:
            size = min(spec.mtu_bytes, nbytes - offset)
            offset += size
            while self._queue is not None and not self._queue.admits(size, ready):
                drops += 1  # dropped at the tail; resent later (and every later packet waits behind it)
                ready += max(rtx, 0.001)
            depart = self._serializer.depart(size, ready)
            arrival = depart + delay
            if self._ge.lost() if self._ge is not None else (p_loss and self._rng.random() < p_loss):
                lost += 1
                depart = self._serializer.depart(size, depart)  # the resend takes the link again
                arrival = depart + rtx + delay
            if self._queue is not None:
                self._queue.enqueue(size, depart)
            floor = max(floor, arrival)  # in-order delivery
            ends.append(offset)
            arrivals.append(floor)
        self._last_arrival = floor
        return Plan(t_start, ends, arrivals, lost, drops)

    def _delay_s(self, t_start: float) -> float:
        """One-way delay of a message starting at `t_start`: the delay trace's, or the fixed one; none under
        CellReplay (its serializer holds the base delay)."""
        if self.spec.light_trace_path and not self.spec.kernel_rate:
            return 0.0
        if self._delays is not None:
            return self._delays.delay_ms(self.spec.trace_offset_ms + (t_start - self._t0) * 1000.0) / 1000.0
        return self.spec.delay_ms / 1000.0

    async def send(self, writer: asyncio.StreamWriter, data: bytes, hold_ms: float = 0.0) -> SendResult:
        """Write `data` to `writer` as the emulated link would deliver it; the first byte waits `hold_ms`
        (an RRC promotion), which the message's time includes."""
        t_start = now()
        plan = self.plan(len(data), t_start, t_start + hold_ms / 1000.0 if hold_ms > 0 else None)
        async with self._write_lock:  # messages keep their order on the stream
            if self.spec.per_message:
                await sleep_until(plan.t_last)
                writer.write(data)
            else:
                await self._write(writer, data, plan)
            await writer.drain()
        return SendResult(t_start, plan.t_last, now(), len(data), plan.lost_packets, plan.queue_drops)

    @staticmethod
    async def _write(writer: asyncio.StreamWriter, data: bytes, plan: Plan) -> None:
        i, n, sent = 0, len(plan.arrivals), 0
        while i < n:
            await sleep_until(plan.arrivals[i])
            horizon = now() + COALESCE_S
            j = bisect.bisect_right(plan.arrivals, horizon, lo=i) - 1
            if j == n - 1 and plan.arrivals[j] > now():
                j -= 1  # the last packet waits for its exact time
            if j < i:
                continue
            writer.write(data[sent : plan.ends[j]])
            sent = plan.ends[j]
            i = j + 1
