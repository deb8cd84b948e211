"""The emulated devices of a topology: who they are and when their frames arrive.

Pure functions of the config (no Ray, no torch), so the driver, the pools and
the tests agree on device ids, links and arrival times.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass

from testbed import hardware
from testbed.config import Arrival, LinkParams, Topology
from testbed.energy import RadioModel
from throttling.netns import DeviceLink
from throttling.shaper import LinkDirection
from throttling.trace import MahimahiTrace, trace_offset_ms


@dataclass(frozen=True)
class DeviceSpec:
    device_id: int
    group: str
    device_class: str
    link: LinkParams
    speed: float
    compute_power_w: float
    full_model_ms: float | None  # absolute profile: the run derives the speed from the host's time
    radio: RadioModel
    arrival: Arrival
    hardware: str | None = None  # a device hardware profile (testbed.hardware): its times replace speed

    def uplink(self) -> LinkDirection:
        return _direction(self.link, self.link.uplink_mbps, self.link.uplink_trace, f"{self.device_id}:up")

    def downlink(self) -> LinkDirection:
        return _direction(self.link, self.link.downlink_mbps, self.link.downlink_trace, f"{self.device_id}:down")

    def kernel_link(self) -> DeviceLink:
        """What the tc backend installs for this device (rates; delay, jitter, loss where netem is used)."""
        link = self.link
        return DeviceLink(link.uplink_mbps, link.downlink_mbps, link.rtt_ms / 2, link.jitter_ms, link.loss_pct)


def _direction(link: LinkParams, rate_mbps: float, trace: str | None, seed: str) -> LinkDirection:
    """Half the RTT each way; a lost packet waits one RTT before its resend."""
    offset = 0.0
    if trace is not None:
        offset = trace_offset_ms(MahimahiTrace.load(trace), link.trace_offset_ms, random.Random(seed))
    return LinkDirection(rate_mbps=rate_mbps, delay_ms=link.rtt_ms / 2, jitter_ms=link.jitter_ms,
                         loss_pct=link.loss_pct, rtx_ms=link.rtt_ms, trace_path=trace, trace_offset_ms=offset)


def device_table(topo: Topology) -> list[DeviceSpec]:
    out: list[DeviceSpec] = []
    for gi, g in enumerate(topo.devices):
        net = topo.networks[g.network]
        dc = topo.device_classes[g.device_class]
        r = net.radio
        radio = RadioModel(r.alpha_up_mw_per_mbps, r.alpha_down_mw_per_mbps, r.beta_mw, r.promotion_ms,
                           r.promotion_mw, tuple((p.ms, p.mw) for p in r.tail))
        link = topo.link_for(g)
        power_w = dc.compute_power_w if dc.hardware is None else hardware.resolve_device(dc.hardware).compute_power_w
        for _ in range(g.count):
            out.append(DeviceSpec(len(out), g.name or f"group{gi}", g.device_class, link, dc.speed, power_w,
                                  dc.full_model_ms, radio, g.arrival, dc.hardware))
    return out


def pool_slices(n_devices: int, per_pool: int) -> list[range]:
    """Device ids of each pool, as even as possible with at most per_pool each."""
    pools = max(1, -(-n_devices // per_pool))
    base, extra = divmod(n_devices, pools)
    out: list[range] = []
    start = 0
    for i in range(pools):
        size = base + (1 if i < extra else 0)
        out.append(range(start, start + size))
        start += size
    return out


def arrivals(arrival: Arrival, device_id: int, phase: int = 0) -> Iterator[float]:
    """Arrival times (s from phase start) of one device's frames, seeded per device and phase.

    periodic: every 1/rate with a random phase, so devices do not fire in step;
    poisson: exponential gaps with mean 1/rate.
    """
    rng = random.Random(f"{arrival.seed}:{device_id}:{phase}")
    period = 1.0 / arrival.rate_hz
    t = rng.uniform(0.0, period) if arrival.process == "periodic" else rng.expovariate(arrival.rate_hz)
    while True:
        yield t
        t += period if arrival.process == "periodic" else rng.expovariate(arrival.rate_hz)
