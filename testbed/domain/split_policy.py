"""Split policies: which cut of the network each request uses.

A *cut* says what runs on the device and what goes up the link:

- `cloud_only`: a JPEG goes up, the whole network runs in the cloud;
- a cut of the model's catalogue (testbed.model.cut_catalogue; a module path such as ResNet-50's `layer3` or
  EfficientNet's `features.4`): the network up to it runs on the device, its output goes up (coded);
- `<cut>+butterfly`: the same plus the butterfly reduction unit (only at `model.split`,
  where the trained unit sits);
- `device_only`: the whole network runs on the device, nothing goes up.

A *policy* (an entry of the topology's `strategies`) maps each request to a cut:

- `cloud_only`, `device_only`, `butterfly` (= `static:<split>+butterfly`), `split` (= `static:<split>`)
  and `static:<cut>`: always the same cut;
- `best_static`: Neurosurgeon-style (Kang et al., ASPLOS 2017). One cut per device for the
  whole phase, the one with the lowest predicted cost from the profiles: the calibrated
  compute times, the configured link (a trace's mean rate) and an empty server queue;
- `dynamic`: Dynamic Split Computing (Bakhtiarnia et al., 2022). For each request, the cut
  with the lowest predicted cost given the uplink bandwidth the device observed over its last
  requests and the queue depth its replica reported in its last answer.

The candidate cuts of the adaptive policies are `policy.cuts`: `auto` is cloud_only, the
network's natural bottlenecks (cuts whose output is smaller than its input, found from the split
catalogue), the butterfly cut and device_only. The cost is `policy.objective`: latency, energy,
or latency_ms + energy_weight_ms_per_mj * energy_mj. Pure logic: no Ray, no torch, unit-tested.
"""

from __future__ import annotations

import re
import statistics
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from testbed.domain.energy import RadioModel, compute_energy_mj, radio_transfer_mj, tail_energy_mj
from testbed.domain.rrc import expected_rrc

STAGES = ("layer1", "layer2", "layer3", "layer4")  # ResNet-50's stage cuts (module paths of its catalogue)
FIXED = ("cloud_only", "butterfly", "split", "device_only")
ADAPTIVE = ("best_static", "dynamic")
# the spelling of a cut; whether the model has it is checked against its catalogue (testbed.model.check)
CUT_RE = re.compile(r"^(cloud_only|device_only|([A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z0-9_]+)*)(\+butterfly)?)$")
CUTS_ALLOWED = ("cloud_only, device_only, a cut of the model's catalogue (run.py TOPOLOGY --catalogue lists them, "
                "e.g. layer1..layer4 of resnet50) or <model.split>+butterfly")  # what CUT_RE accepts, in words
CUT_ORDER = ("cloud_only", *STAGES, "device_only")  # by how much of the network runs on the device
STATIC_PREFIX = "static:"
REPLY_BYTES = 200  # the answer's frame: a small JSON header
MIN_TRANSFER_MS = 0.05  # below this a measured transfer is noise, not a rate


def is_cut(name: str) -> bool:
    return bool(CUT_RE.match(name))


def strategy_problem(strategy: str) -> str | None:
    """Why a strategy name is not allowed (None if it is)."""
    if strategy in FIXED or strategy in ADAPTIVE:
        return None
    if strategy.startswith(STATIC_PREFIX) and is_cut(strategy[len(STATIC_PREFIX):]):
        return None
    return ("allowed: " + ", ".join(FIXED + ADAPTIVE)
            + f", or static:<cut> with <cut> one of {CUTS_ALLOWED}")


def butterfly_cut(split: str) -> str:
    return f"{split}+butterfly"


def static_cut(strategy: str, split: str) -> str | None:
    """The one cut of a non-adaptive policy (None for best_static and dynamic)."""
    if strategy == "butterfly":
        return butterfly_cut(split)
    if strategy == "split":
        return split
    if strategy.startswith(STATIC_PREFIX):
        return strategy[len(STATIC_PREFIX):]
    return None if strategy in ADAPTIVE else strategy


def natural_bottlenecks(catalogue: Sequence[dict[str, Any]]) -> list[str]:
    """Cuts whose output (float32 bytes) is smaller than the network's input: worth sending as they are.

    Rows flagged by the catalogue (testbed.model.cut_catalogue) are taken as flagged; a row without the flag is
    compared with the input row."""
    input_bytes = next(row["float32_bytes"] for row in catalogue if row["cut"] == "input")
    return [row["cut"] for row in catalogue if row["cut"] != "input"
            and row.get("natural_bottleneck", row["float32_bytes"] < input_bytes)]


def candidate_cuts(cuts: str | Sequence[str], split: str, catalogue: Sequence[dict[str, Any]]) -> list[str]:
    """The cuts best_static and dynamic choose among."""
    if cuts != "auto":
        return list(cuts)
    return ["cloud_only", *natural_bottlenecks(catalogue), butterfly_cut(split), "device_only"]


def cuts_for_run(strategies: Iterable[str], policy_cuts: str | Sequence[str], split: str,
                 catalogue: Sequence[dict[str, Any]]) -> list[str]:
    """Every cut some policy of the run may use, in a stable order (device and cloud build these)."""
    out: list[str] = []
    for s in strategies:
        cut = static_cut(s, split)
        for c in [cut] if cut else candidate_cuts(policy_cuts, split, catalogue):
            if c not in out:
                out.append(c)
    return out


def uses_network(cut: str) -> bool:
    return cut != "device_only"


# ---------------------------------------------------------------- prediction
@dataclass(frozen=True)
class CutProfile:
    """What a cut costs, from calibration: device time at this device's speed, bytes up, cloud time per item."""

    cut: str
    device_ms: float  # head (+ reduction) + encode, at the device's speed
    bytes_up: int
    cloud_ms: float  # the cloud's part for one item (batch of one)


@dataclass(frozen=True)
class LinkView:
    """What a device believes about its link and its replica when it decides."""

    uplink_mbps: float
    downlink_mbps: float
    one_way_ms: float
    queue_depth: int = 0


@dataclass(frozen=True)
class Objective:
    kind: str = "latency"  # latency | energy | weighted
    energy_weight_ms_per_mj: float = 1.0

    def cost(self, latency_ms: float, energy_mj: float | None) -> float:
        if self.kind == "latency":
            return latency_ms
        assert energy_mj is not None, "an energy objective needs known radio coefficients"
        return energy_mj if self.kind == "energy" else latency_ms + self.energy_weight_ms_per_mj * energy_mj


@dataclass(frozen=True)
class Prediction:
    cut: str
    latency_ms: float
    energy_mj: float | None
    cost: float


def predict(profile: CutProfile, link: LinkView, compute_power_w: float, radio: RadioModel,
            gap_ms: float, objective: Objective, rrc: RrcContext | None = None) -> Prediction:
    """End-to-end latency and device energy of one request at `profile`'s cut.

    latency = device + promotion + bytes/uplink + delay + (queue + 1) x cloud + delay + DRX wait + reply/downlink.
    energy = compute + promotion + radio transfer + tail while the cloud works (and the answer waits for an
    on-duration) + the tail until the next request (at most the whole tail); device_only keeps the radio off.
    Promotion and DRX follow testbed.domain.rrc.expected_rrc, as the run charges them; their time only with RRC on.
    """
    rrc = rrc or RrcContext()
    energy: float | None = compute_energy_mj(compute_power_w, profile.device_ms)
    if not uses_network(profile.cut):
        return Prediction(profile.cut, profile.device_ms, energy, objective.cost(profile.device_ms, energy))
    up_ms = profile.bytes_up * 8 / (link.uplink_mbps * 1e3) + link.one_way_ms
    down_ms = REPLY_BYTES * 8 / (link.downlink_mbps * 1e3) + link.one_way_ms
    server_ms = (link.queue_depth + 1) * profile.cloud_ms
    latency = profile.device_ms + up_ms + server_ms + down_ms
    idle = None if rrc.idle_ms is None else rrc.idle_ms + profile.device_ms
    cost = expected_rrc(radio, idle, gap_ms, latency, rrc.poisson, server_ms + link.one_way_ms)
    if rrc.on and radio.rrc_known:
        latency += cost.promotion_ms + cost.drx_ms
    if radio.known:
        energy = (energy or 0.0) + cost.promotion_mj + radio_transfer_mj(radio, profile.bytes_up, up_ms,
                                                                          REPLY_BYTES, down_ms)
        energy += tail_energy_mj(radio, server_ms + cost.drx_ms) + tail_energy_mj(radio, gap_ms)
    else:
        energy = None
    return Prediction(profile.cut, latency, energy, objective.cost(latency, energy))


@dataclass(frozen=True)
class RrcContext:
    """What a device knows of its radio when it decides: RRC waits on (throttling.rrc), its idle time now
    (None: unknown, from the arrivals instead) and whether its arrivals are Poisson."""

    on: bool = True
    idle_ms: float | None = None
    poisson: bool = False


def choose(profiles: Sequence[CutProfile], link: LinkView, compute_power_w: float, radio: RadioModel,
           gap_ms: float, objective: Objective, rrc: RrcContext | None = None) -> tuple[Prediction, list[Prediction]]:
    """The cheapest cut (ties: the earlier candidate) and every candidate's prediction."""
    preds = [predict(p, link, compute_power_w, radio, gap_ms, objective, rrc) for p in profiles]
    return min(preds, key=lambda p: p.cost), preds


class LinkEstimator:
    """A device's view of its uplink from its own requests (no probing traffic).

    Bandwidth: bits over transfer time of the last `window` requests that used the link
    (bytes-weighted, so a tiny frame's timing noise weighs little). Transfer time is the
    measured uplink time less the one-way delay; the delay is the median downlink time of the
    same requests (the answer is a few hundred bytes: mostly propagation; the median, not the
    minimum, so jitter does not bias it low). Samples older than `ttl_s` are
    forgotten and the configured link (the prior) stands in again, as before the first answer:
    a device that went device_only on a bad link sends nothing, so without this it would never
    learn that the link came back. A request still unanswered also counts: if its bytes have been
    out longer than the estimate allows, the estimate is capped at what its elapsed time implies
    (`outstanding`), so a link that just collapsed is noticed before the first slow answer.
    """

    def __init__(self, prior: LinkView, window: int, ttl_s: float):
        self.prior = prior
        self.ttl_s = ttl_s
        self._samples: deque[tuple[float, float, float]] = deque(maxlen=window)  # (t, bits, uplink ms)
        self._delays: deque[float] = deque(maxlen=window)  # downlink ms of the same requests

    def observe(self, t: float, bytes_up: int, uplink_ms: float, downlink_ms: float) -> None:
        """One answered request at time `t` (seconds, any clock the caller keeps)."""
        if downlink_ms > 0:
            self._delays.append(downlink_ms)
        if bytes_up > 0:  # the delay is taken off when asked: a later, better delay estimate corrects old samples
            self._samples.append((t, bytes_up * 8.0, uplink_ms))

    def reset(self) -> None:
        """A new phase is a separate experiment: start from the prior again."""
        self._samples.clear()
        self._delays.clear()

    @property
    def one_way_ms(self) -> float:
        return statistics.median(self._delays) if self._delays else self.prior.one_way_ms

    def uplink_mbps(self, t: float) -> float:
        fresh = [(bits, ms) for ts, bits, ms in self._samples if t - ts <= self.ttl_s]
        if not fresh:
            return self.prior.uplink_mbps
        # jitter moves single transfers either way; only the window's total is kept above zero
        transfer_ms = max(MIN_TRANSFER_MS * len(fresh), sum(ms for _, ms in fresh) - self.one_way_ms * len(fresh))
        return sum(b for b, _ in fresh) / transfer_ms / 1e3

    def view(self, t: float, queue_depth: int, outstanding: Sequence[tuple[float, int, float]] = ()) -> LinkView:
        """`outstanding`: (sent at, bytes, expected ms besides the transfer) of requests still unanswered."""
        mbps = self.uplink_mbps(t)
        for t_sent, nbytes, other_ms in outstanding:
            transfer_ms = (t - t_sent) * 1000 - other_ms
            if transfer_ms > 0:
                mbps = min(mbps, nbytes * 8 / transfer_ms / 1e3)
        return LinkView(mbps, self.prior.downlink_mbps, self.one_way_ms, queue_depth)


class CloudTimes:
    """A device's view of each cut's cloud time per request: the replicas' calibration until an answer
    for that cut reports the time it took (an exponential average of those, `weight` for the newest)."""

    def __init__(self, calibrated: dict[str, float], weight: float = 0.3):
        self.calibrated, self.weight = dict(calibrated), weight
        self._seen: dict[str, float] = {}

    def observe(self, cut: str, cloud_ms: float) -> None:
        old = self._seen.get(cut)
        self._seen[cut] = cloud_ms if old is None else (1 - self.weight) * old + self.weight * cloud_ms

    def get(self, cut: str) -> float:
        return self._seen.get(cut, self.calibrated.get(cut, 0.0))

    def reset(self) -> None:
        self._seen.clear()
