"""Topology YAML -> frozen, validated config objects.

Parsing is kept apart from running (as Mininet keeps `Topo` apart from
building it): nothing here imports Ray or torch, and every error is found
before anything starts. Each error names the file, the key path
(`devices[0].arrival.rate_hz`), the value and what is allowed.

Field names carry their units (`uplink_mbps`, `rtt_ms`, `max_batch_wait_ms`).
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationInfo,
    create_model,
    field_validator,
    model_validator,
)

from testbed.domain import profiles, split_policy
from testbed.domain.population import Population

STRATEGIES = ("cloud_only", "butterfly", "split", "device_only", "best_static", "dynamic")  # and static:<cut>
SPLIT_POINTS = ("layer1", "layer2", "layer3", "layer4")
# Output channels of torchvision's ResNet-50 after each split point; used to
# check butterfly_channels without building the model (tests check they agree).
RESNET50_CHANNELS = {"layer1": 256, "layer2": 512, "layer3": 1024, "layer4": 2048}



def _strategy(name: str) -> str:
    if problem := split_policy.strategy_problem(name):
        raise ValueError(problem)
    return name


def _cut(name: str) -> str:
    if not split_policy.is_cut(name):
        raise ValueError(f"allowed: {split_policy.CUTS_ALLOWED}")
    return name


def _on_off(value: Any) -> Any:
    """YAML 1.1 reads a bare on/off as a boolean: take it back as the word."""
    return {True: "on", False: "off"}.get(value, value) if isinstance(value, bool) else value


# A split policy (see testbed.domain.split_policy): split is the same cut as butterfly without the butterfly unit
Strategy = Annotated[str, AfterValidator(_strategy)]
Cut = Annotated[str, AfterValidator(_cut)]
PosFloat = Annotated[float, Field(gt=0)]
NonNegFloat = Annotated[float, Field(ge=0)]
PosInt = Annotated[int, Field(ge=1)]


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class TailPhase(_Frozen):
    """One radio state after the last transfer (e.g. LTE continuous reception, short DRX, long DRX): how long
    it lasts and its mean power; how the radio listens in it (`on_ms` at the start of every `cycle_ms`; 0:
    continuously) and what sending from it costs (`promotion_ms` at `promotion_mw`, e.g. 3G FACH -> DCH)."""

    ms: NonNegFloat
    mw: NonNegFloat
    state: str = ""
    cycle_ms: NonNegFloat = 0.0
    on_ms: NonNegFloat = 0.0
    promotion_ms: NonNegFloat = 0.0
    promotion_mw: NonNegFloat = 0.0

    @model_validator(mode="after")
    def _on_within_cycle(self) -> TailPhase:
        if self.cycle_ms > 0 and not 0 < self.on_ms <= self.cycle_ms:
            raise ValueError(f"on_ms must be in (0, cycle_ms={self.cycle_ms:g}] when cycle_ms is set")
        return self


class IdleListening(_Frozen):
    """RRC_IDLE / WiFi power save: the radio listens `on_ms` every `cycle_ms` (paging, beacons); 0: not modelled."""

    cycle_ms: NonNegFloat = 0.0
    on_ms: NonNegFloat = 0.0


class RadioPower(_Frozen):
    """P = alpha_up * t_up + alpha_down * t_down + beta (mW; t in Mbit/s), RRC promotion and tail.

    A network without published coefficients leaves alpha/beta null: its radio energy is then
    reported as unknown, never as zero.
    """

    alpha_up_mw_per_mbps: NonNegFloat | None
    alpha_down_mw_per_mbps: NonNegFloat | None
    beta_mw: NonNegFloat | None
    promotion_ms: NonNegFloat = 0.0
    promotion_mw: NonNegFloat = 0.0
    tail: list[TailPhase] = []
    idle: IdleListening = IdleListening()
    # the RRC parameter set by source (testbed.domain.profiles.RADIO_PROFILES); rrc_known False: no checked timers
    technology: Literal["lte", "3g", "wifi", "5g_nsa", "5g_sa"] | None = None
    profile: str | None = None
    rrc_known: bool = True
    rrc_source: str = ""
    source: str = ""

    @field_validator("profile")
    @classmethod
    def _known_profile(cls, name: str | None, info: ValidationInfo) -> str | None:
        if name is None:
            return name
        tech = info.data.get("technology")
        allowed = sorted(profiles.RADIO_PROFILES.get(tech or "", {}))
        if name not in allowed:
            raise ValueError(f"unknown radio profile for technology {tech}; allowed: {', '.join(allowed)}"
                             if allowed else "a radio profile needs radio.technology (lte, 3g, wifi, 5g_nsa, 5g_sa)")
        return name


TraceOffset = Literal["random"] | NonNegFloat
Probability = Annotated[float, Field(ge=0, le=1)]


class QueueLimit(_Frozen):
    """A drop-tail queue at the bottleneck of one link direction (Mahimahi's droptail): at most `packets`
    or `bytes` waiting (one of them); a packet beyond it is dropped and resent (throttling.queues)."""

    packets: PosInt | None = None
    bytes: Annotated[int, Field(ge=1500)] | None = None  # at least one MTU-sized packet

    @model_validator(mode="after")
    def _one_limit(self) -> QueueLimit:
        if (self.packets is None) == (self.bytes is None):
            raise ValueError("give exactly one of packets, bytes")
        return self


class CellReplayTraces(_Frozen):
    """One direction replayed as CellReplay does (throttling.cellreplay): `light` (its packet-train file:
    `t_ms base_delay_ms pdo_ms ...`) for bursts that start on a drained link, `heavy` (a Mahimahi trace) after
    their light opportunities; a burst starts anew when the link has been drained for `long_to_short_ms`."""

    light: str
    heavy: str
    long_to_short_ms: NonNegFloat = 0.0


class LossModel(_Frozen):
    """Bursty loss (Gilbert-Elliott), stepped per packet: good -> bad with p_good_bad, bad -> good with
    p_bad_good; a packet is lost with loss_good / loss_bad in each state. Replaces loss_pct."""

    kind: Literal["gilbert_elliott"] = "gilbert_elliott"
    p_good_bad: Probability
    p_bad_good: Probability
    loss_good: Probability = 0.0
    loss_bad: Probability = 1.0


class LinkParams(_Frozen):
    """One device's link: rates per direction, round-trip time, jitter, loss, optional traces.

    A Mahimahi trace (`uplink_trace`, `downlink_trace`) replaces the fixed rate of that
    direction; `trace_offset_ms` is where each device starts in it ("random": seeded per device).
    """

    uplink_mbps: PosFloat
    downlink_mbps: PosFloat
    rtt_ms: NonNegFloat
    jitter_ms: NonNegFloat = 0.0
    loss_pct: Annotated[float, Field(ge=0, lt=100)] = 0.0
    uplink_trace: str | None = None
    downlink_trace: str | None = None
    trace_offset_ms: TraceOffset = "random"
    uplink_queue: QueueLimit | None = None
    downlink_queue: QueueLimit | None = None
    loss_model: LossModel | None = None
    # the one-way base delay follows a trace (`t_ms delay_ms` lines) instead of rtt_ms / 2
    uplink_delay_trace: str | None = None
    downlink_delay_trace: str | None = None
    uplink_cellreplay: CellReplayTraces | None = None  # replaces uplink_trace and the delay: CellReplay's pair
    downlink_cellreplay: CellReplayTraces | None = None

    @model_validator(mode="after")
    def _one_loss(self) -> LinkParams:
        if self.loss_model is not None and self.loss_pct > 0:
            raise ValueError("loss_pct and loss_model are alternatives: set loss_pct to 0 with a loss_model")
        return self


class NetworkProfile(LinkParams):
    radio: RadioPower
    source: str = ""


def _all_optional(model: type[BaseModel], name: str, doc: str) -> type[BaseModel]:
    """A model with `model`'s fields, each optional and None by default (with the same bounds): an override."""
    fields: dict[str, Any] = {}
    for key, f in model.model_fields.items():
        typ = Annotated[(f.annotation, *f.metadata)] if f.metadata else f.annotation
        fields[key] = (typ | None, None)
    return create_model(name, __base__=_Frozen, __doc__=doc, **fields)


# A device group's own link values over its network's: LinkParams' fields, all optional (declared once there)
LinkOverride = _all_optional(LinkParams, "LinkOverride", "A device group's own values for its network's link fields.")


class DeviceClass(_Frozen):
    """Compute speed and power of a device. `speed` is relative to the emulating host; `full_model_ms`
    (optional) is the device's own ResNet-50 time, from which each run derives the speed against the
    host's calibrated time (absolute profiles)."""

    speed: Annotated[float, Field(gt=0, le=1)]
    compute_power_w: NonNegFloat
    full_model_ms: PosFloat | None = None
    source: str = ""
    # a device hardware profile (testbed.domain.hardware): a known name or a .yaml file; its per-cut times and power
    # replace speed, full_model_ms and compute_power_w
    hardware: str | None = None


class Arrival(_Frozen):
    process: Literal["periodic", "poisson"] = "periodic"
    rate_hz: PosFloat
    seed: int = 0


class DeviceGroup(_Frozen):
    name: str = ""
    count: PosInt
    device_class: str
    network: str
    link: LinkOverride = LinkOverride()
    arrival: Arrival
    population: Population | None = None  # per-device compute and rates (testbed/domain/population.py)


class Codec(_Frozen):
    dtype: Literal["float32", "float16", "int8"] = "int8"
    zstd_level: Annotated[int, Field(ge=0, le=22)] = 3  # 0 = no entropy coding


def _split_name(name: str) -> str:
    if name.endswith("+butterfly") or name in ("cloud_only", "device_only") or not split_policy.is_cut(name):
        raise ValueError("allowed: a cut of the model's catalogue (run.py TOPOLOGY --catalogue lists them; "
                         "resnet50: layer1..layer4)")
    return name


def _arch_name(name: str) -> str:
    if not re.fullmatch(r"[A-Za-z_][\w.]*(:[A-Za-z_]\w*)?", name):
        raise ValueError("allowed: a torchvision classification model (resnet50, efficientnet_b0, ...) "
                         "or an import path pkg.module:factory")
    return name


class ModelSpec(_Frozen):
    """`arch`: a torchvision classifier by name or `pkg.module:factory` (called with num_classes); `split`: a cut
    of its catalogue. Both are checked against the built model before a run starts (testbed.model.check)."""

    arch: Annotated[str, AfterValidator(_arch_name)] = "resnet50"
    weights: str | None = None
    seed: int = 0
    split: Annotated[str, AfterValidator(_split_name)] = "layer2"
    butterfly_channels: PosInt = 8
    codec: Codec = Codec()
    jpeg_quality: Annotated[int, Field(ge=1, le=100)] = 90
    input_size: Annotated[int, Field(ge=32, le=1024)] = 224
    image_dir: str | None = None
    cloud_only_upload: Literal["jpeg", "png", "raw"] = "jpeg"  # raw: uint8 RGB at input_size (testbed.base.codec)


BUILTIN_DATASETS = ("digits",)  # shipped inside a package (scikit-learn), so training needs no download
CodecDtype = Literal["float32", "float16", "int8"]


class TrainSpec(_Frozen):
    """`run.py train`: the unsplit network on `data`, then a butterfly unit per entry of `channels`
    fine-tuned from it at model.split, each evaluated through every codec in `codecs`."""

    data: str = "digits"  # a built-in data set or an ImageFolder folder (one subfolder per class)
    test_fraction: Annotated[float, Field(gt=0, lt=1)] = 0.2
    input_size: Annotated[int, Field(ge=32, le=1024)] = 32
    epochs: PosInt = 6  # the unsplit network
    finetune_epochs: PosInt = 4  # each butterfly variant: the same budget for every channel count
    max_steps_per_epoch: PosInt | None = None
    batch_size: Annotated[int, Field(ge=2)] = 64  # BatchNorm needs more than one sample
    lr: PosFloat = 0.001
    shift_px: Annotated[int, Field(ge=0, le=16)] = 3  # random translation in training; 0 = none
    train_scope: Literal["all", "butterfly_tail", "butterfly"] = "all"  # what fine-tuning updates
    distill: bool = True  # soft targets from the trained unsplit network
    distill_temperature: PosFloat = 4.0
    distill_weight: Annotated[float, Field(ge=0, le=1)] = 0.5  # KL share of the loss; CE gets the rest
    channels: Annotated[list[PosInt], Field(min_length=1)] = [2, 4, 8, 16]
    codecs: Annotated[list[CodecDtype], Field(min_length=1)] = ["float32", "float16", "int8"]
    seed: int = 0


class Cloud(_Frozen):
    replicas: PosInt = 1
    device: Literal["cpu", "cuda"] = "cpu"
    max_batch_size: PosInt = 8
    max_batch_wait_ms: NonNegFloat = 5.0
    queue_limit: PosInt = 256
    torch_threads: PosInt = 1
    num_cpus: NonNegFloat = 1.0
    num_gpus: NonNegFloat = 0.0
    resources: dict[str, NonNegFloat] = {}  # Ray custom resources per replica, e.g. {cloud: 1}
    load_balancing: Literal["static", "round_robin", "least_outstanding", "power_of_two"] = "static"
    # replay: the tail is timed on this host at start and each batch answers after that time / replay_speed,
    # without running the model (density runs; actors/cloud_replay.py). Labelled as replayed in the output.
    compute: Literal["real", "replay"] = "real"
    replay_speed: PosFloat = 1.0
    # a cloud hardware profile (testbed.domain.hardware): a known name or a .yaml file; each batch answers after the
    # profile's latency(batch) (actors/cloud_profile.py)
    hardware: str | None = None


class Pools(_Frozen):
    """Device pools. `compute: replay` runs each frame's device side once at start and then replays its
    bytes and calibrated timings, so large device counts fit a small host and the cloud tier saturates."""

    devices_per_pool: PosInt = 100
    compute: Literal["real", "replay"] = "real"
    torch_threads: PosInt = 1
    num_cpus: NonNegFloat = 1.0
    resources: dict[str, NonNegFloat] = {}  # Ray custom resources per pool, e.g. {edge: 1}; pools are spread


class Throttling(_Frozen):
    """How links are shaped. `tc`: kernel tbf in per-device network namespaces (root, one host);
    `auto`: tc where it works, else the userspace shaper, saying why."""

    backend: Literal["userspace", "tc", "auto"] = "userspace"
    subnet: str = "10.77.0.0/16"  # addresses of the run's own namespaces (tc backend)
    netem: bool = True  # let the kernel do delay/jitter/loss where sch_netem exists
    trace_update_ms: Annotated[float, Field(ge=100)] = 1000.0  # tc backend: how often a traced rate is set
    check_links: bool = False  # measure every link per backend before the run (see --check-links)
    cpu: Literal["timescale", "cgroup", "auto"] = "timescale"  # device CPU: time scaling or real cgroup caps
    # RRC states cost time (promotion before the first byte, DRX waits; testbed.domain.rrc); off: energy only
    rrc: Annotated[Literal["on", "off"], BeforeValidator(_on_off)] = "on"
    # userspace shaper: `packet` writes each packet group at its arrival time; `message` writes a message's bytes
    # at once, when its last byte arrives (one write and one wake-up per message, same completion times)
    delivery: Literal["packet", "message"] = "packet"


class Reference(_Frozen):
    """A published result the run is set against: improvement factors over cloud_only, with their source."""

    name: str
    latency_x: PosFloat | None = None
    energy_x: PosFloat | None = None
    source: str = ""


class SplitPolicy(_Frozen):
    """How best_static and dynamic choose a cut (testbed.domain.split_policy): among `cuts` (auto: cloud_only, the
    natural bottlenecks, the butterfly cut, device_only), the one with the lowest predicted `objective`;
    weighted = latency_ms + energy_weight_ms_per_mj * energy_mj. `bandwidth_window`: requests in a device's
    uplink estimate, each kept `estimate_ttl_s`."""

    objective: Literal["latency", "energy", "weighted"] = "latency"
    energy_weight_ms_per_mj: NonNegFloat = 1.0
    cuts: Literal["auto"] | Annotated[list[Cut], Field(min_length=1)] = "auto"
    bandwidth_window: PosInt = 4
    estimate_ttl_s: PosFloat = 3.0  # older uplink samples are forgotten: the configured link stands in again


class Fault(_Frozen):
    """One injected fault; `at_s` is seconds from the start of each phase it applies to (warm-up included), the
    same axis as `t_arrival_s` in requests.csv. Targets: `group` or `devices` for link and device faults,
    `replica` for replica_kill, `pool` for pool_kill (checked against the topology after loading)."""

    kind: Literal["link_outage", "link_degrade", "device_leave", "replica_kill", "pool_kill"]
    name: str = ""  # a label for the summary and the report; default: kind@at_s
    at_s: NonNegFloat
    duration_s: PosFloat | None = None  # link and device faults: required; replica_kill: restart after it
    group: str | None = None
    devices: list[Annotated[int, Field(ge=0)]] | None = None
    replica: Annotated[int, Field(ge=0)] | None = None
    pool: Annotated[int, Field(ge=0)] | None = None
    rate_factor: Annotated[float, Field(gt=0, lt=1)] | None = None  # link_degrade: the rate is multiplied by it
    direction: Literal["both", "uplink", "downlink"] = "both"  # link faults
    strategies: list[Strategy] | None = None  # the phases it applies to; default: every phase


class Rung(_Frozen):
    """One step of an assumption ladder (testbed.report.ladder): overrides added to the previous rungs'."""

    name: str
    description: str = ""
    set: list[str] = []  # --set assignments, key.path=value
    unset: list[str] = []  # key paths whose earlier rungs' overrides are dropped (the topology's value returns)


class RaySpec(_Frozen):
    address: str | None = None  # None: start an embedded, loopback-only Ray


class Topology(_Frozen):
    name: str
    description: str = ""
    duration_s: PosFloat
    warmup_s: NonNegFloat = 0.0
    request_timeout_s: PosFloat = 30.0
    strategies: Annotated[list[Strategy], Field(min_length=1)]
    devices: Annotated[list[DeviceGroup], Field(min_length=1)]
    networks: dict[str, NetworkProfile]
    device_classes: dict[str, DeviceClass]
    model: ModelSpec = ModelSpec()
    cloud: Cloud = Cloud()
    pools: Pools = Pools()
    throttling: Throttling = Throttling()
    ray: RaySpec = RaySpec()
    references: list[Reference] = []  # published figures printed beside the measured ones
    policy: SplitPolicy = SplitPolicy()
    train: TrainSpec = TrainSpec()
    faults: list[Fault] = []  # injected faults, per phase (see testbed/plan/faults.py)
    ladder: list[Rung] = []  # an assumption ladder: one run per rung (testbed.report.ladder)

    @property
    def device_count(self) -> int:
        return sum(g.count for g in self.devices)

    def pool_slices(self) -> list[range]:
        """Device ids of each pool (pools.devices_per_pool at most each); the driver, the pools, the replicas'
        profiles, the fault schedule and the checks all take the pools from here."""
        return pool_slices(self.device_count, self.pools.devices_per_pool)

    def link_for(self, group: DeviceGroup) -> LinkParams:
        """The group's network profile with the group's own link overrides applied."""
        base = self.networks[group.network]
        fields = {k: getattr(base, k) for k in LinkParams.model_fields}
        fields.update(group.link.model_dump(exclude_none=True))
        return LinkParams(**fields)


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
