"""The emulated devices of a topology: who they are and when their frames arrive.

Pure functions of the config (no Ray, no torch), so the driver, the pools and
the tests agree on device ids, links and arrival times.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from testbed.config.schema import Arrival, LinkParams, RadioPower, Topology
from testbed.domain import hardware
from testbed.domain.energy import RadioModel
from testbed.domain.population import DeviceDraw, draws
from testbed.domain.rrc import IDLE, RrcPhase
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
    offline_s: tuple[tuple[float, float], ...] = ()  # a population's on/off intervals: away (no frames) in these
    hardware: str | None = None  # a device hardware profile (testbed.domain.hardware): its times replace speed
    per_message: bool = False  # throttling.delivery message: each message written at once at its last byte's time

    def uplink(self) -> LinkDirection:
        return _direction(self.link, "uplink", f"{self.device_id}:up", self.per_message)

    def downlink(self) -> LinkDirection:
        return _direction(self.link, "downlink", f"{self.device_id}:down", self.per_message)

    def kernel_link(self) -> DeviceLink:
        """What the tc backend installs for this device (rates; delay, jitter, loss where netem is used)."""
        link = self.link
        return DeviceLink(link.uplink_mbps, link.downlink_mbps, link.rtt_ms / 2, link.jitter_ms, link.loss_pct)


def _direction(link: LinkParams, d: str, seed: str, per_message: bool) -> LinkDirection:
    """One direction (`uplink` / `downlink`): half the RTT each way (or a delay trace); a lost or tail-dropped
    packet waits one RTT before its resend; a Mahimahi or CellReplay trace replays the capacity."""
    trace, pair, queue = getattr(link, f"{d}_trace"), getattr(link, f"{d}_cellreplay"), getattr(link, f"{d}_queue")
    offset = 0.0
    if trace is not None or pair is not None:
        replayed = MahimahiTrace.load(pair.heavy if pair is not None else trace)
        offset = trace_offset_ms(replayed, link.trace_offset_ms, random.Random(seed))
    ge = link.loss_model
    return LinkDirection(rate_mbps=getattr(link, f"{d}_mbps"), delay_ms=link.rtt_ms / 2, jitter_ms=link.jitter_ms,
                         loss_pct=link.loss_pct, rtx_ms=link.rtt_ms, trace_path=trace, trace_offset_ms=offset,
                         queue_packets=queue.packets if queue else None, queue_bytes=queue.bytes if queue else None,
                         ge_loss=(ge.p_good_bad, ge.p_bad_good, ge.loss_good, ge.loss_bad) if ge else None,
                         delay_trace_path=getattr(link, f"{d}_delay_trace"),
                         light_trace_path=pair.light if pair else None, heavy_trace_path=pair.heavy if pair else None,
                         long_to_short_ms=pair.long_to_short_ms if pair else 0.0, per_message=per_message)


def device_table(topo: Topology) -> list[DeviceSpec]:
    out: list[DeviceSpec] = []
    for gi, g in enumerate(topo.devices):
        net = topo.networks[g.network]
        dc = topo.device_classes[g.device_class]
        r = net.radio
        radio = radio_model(r)
        link = topo.link_for(g)
        group = g.name or f"group{gi}"
        power_w = dc.compute_power_w if dc.hardware is None else hardware.resolve_device(dc.hardware).compute_power_w
        own = (draws(g.population, g.count, group, topo.warmup_s + topo.duration_s) if g.population is not None
               else [None] * g.count)
        for d in own:
            full_ms, dev_link = _own_values(d, dc.full_model_ms, link)
            out.append(DeviceSpec(len(out), group, g.device_class, dev_link, dc.speed, power_w,
                                  full_ms, radio, g.arrival, d.offline_s if d is not None else (), dc.hardware,
                                  per_message=topo.throttling.delivery == "message"))
    return out


def _own_values(d: DeviceDraw | None, full_model_ms: float | None,
                link: LinkParams) -> tuple[float | None, LinkParams]:
    """A population device's own compute time and rates over its class's and network's."""
    if d is None:
        return full_model_ms, link
    rates = {k: v / 1000 for k, v in (("uplink_mbps", d.uplink_kbps), ("downlink_mbps", d.downlink_kbps))
             if v is not None}
    return (d.compute_ms if d.compute_ms is not None else full_model_ms), link.model_copy(update=rates)


def device_values(spec: DeviceSpec) -> dict[str, float | None]:
    """What each request row and summary.json record of the device it came from."""
    return {"device_full_model_ms": spec.full_model_ms, "device_uplink_kbps": round(spec.link.uplink_mbps * 1000, 3),
            "device_downlink_kbps": round(spec.link.downlink_mbps * 1000, 3)}


def radio_model(r: RadioPower) -> RadioModel:
    """The energy model and RRC timeline of one network's radio (testbed.domain.energy, testbed.domain.rrc)."""
    phases = tuple(RrcPhase(p.state, p.cycle_ms, p.on_ms, p.promotion_ms, p.promotion_mw) for p in r.tail)
    return RadioModel(r.alpha_up_mw_per_mbps, r.alpha_down_mw_per_mbps, r.beta_mw, r.promotion_ms, r.promotion_mw,
                      tuple((p.ms, p.mw) for p in r.tail), phases, RrcPhase(IDLE, r.idle.cycle_ms, r.idle.on_ms),
                      r.rrc_known, r.profile or "")


def rrc_summary(topo: Topology) -> dict[str, Any]:
    """throttling.rrc and each used network's RRC parameter set (summary.json `rrc`, the run's first lines)."""
    nets: dict[str, Any] = {}
    for name in sorted({g.network for g in topo.devices}):
        r = topo.networks[name].radio
        m = radio_model(r)
        nets[name] = {"technology": r.technology, "profile": r.profile, "known": r.rrc_known,
                      "promotion_ms": m.promotion_ms if r.rrc_known else None,
                      "tail_ms": m.tail_ms if r.rrc_known else None,
                      "states": [p.state for p in r.tail] + ["idle"], "source": r.rrc_source}
    return {"mode": topo.throttling.rrc, "networks": nets}


def rrc_line(topo: Topology) -> str:
    """One line for the run's start: whether RRC waits are on, and each network's profile."""
    s = rrc_summary(topo)
    parts = [f"{n}: {v['profile']}, " + (f"promotion {v['promotion_ms']:g} ms, tail {v['tail_ms']:g} ms"
                                         if v["known"] else "timers unknown") for n, v in s["networks"].items()]
    what = "promotion and DRX waits on the link" if s["mode"] == "on" else "energy only, no waits (off)"
    return f"rrc: {s['mode']}: {what} ({'; '.join(parts)})"


def replay_summary(topo: Topology) -> dict[str, Any]:
    """Per device group, how each direction's capacity and delay are replayed (summary.json `trace_replay`)."""
    out: dict[str, Any] = {}
    for spec in {s.group: s for s in reversed(device_table(topo))}.values():
        out[spec.group] = {d: {"capacity": link.replay, "delay": f"trace {link.delay_trace_path}"
                               if link.delay_trace_path else ("in the CellReplay trace" if link.light_trace_path
                                                              else f"fixed {link.delay_ms:g} ms")}
                           for d, link in (("uplink", spec.uplink()), ("downlink", spec.downlink()))}
    return out


def replay_line(topo: Topology) -> str | None:
    """One line for the run's start when any link replays a trace; None when every link has a fixed rate."""
    kinds = sorted({v["capacity"] for g in replay_summary(topo).values() for v in g.values()} - {"fixed rate"})
    return f"trace replay: {'; '.join(kinds)}" if kinds else None


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
