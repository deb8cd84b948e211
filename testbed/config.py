"""Topology YAML -> frozen, validated config objects.

Parsing is kept apart from running (as Mininet keeps `Topo` apart from
building it): nothing here imports Ray or torch, and every error is found
before anything starts. Each error names the file, the key path
(`devices[0].arrival.rate_hz`), the value and what is allowed.

Field names carry their units (`uplink_mbps`, `rtt_ms`, `max_batch_wait_ms`).
"""

from __future__ import annotations

import copy
import ipaddress
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from testbed import bounds, hardware, profiles, split_policy
from testbed.population import AvailabilityError, Population, PopulationCsvError, draws

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


# A split policy (see testbed.split_policy): split is the same cut as butterfly without the butterfly unit
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
    # the RRC parameter set by source (testbed.profiles.RADIO_PROFILES); rrc_known False: no checked timers
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


class LinkOverride(_Frozen):
    uplink_mbps: PosFloat | None = None
    downlink_mbps: PosFloat | None = None
    rtt_ms: NonNegFloat | None = None
    jitter_ms: NonNegFloat | None = None
    loss_pct: Annotated[float, Field(ge=0, lt=100)] | None = None
    uplink_trace: str | None = None
    downlink_trace: str | None = None
    trace_offset_ms: TraceOffset | None = None
    uplink_queue: QueueLimit | None = None
    downlink_queue: QueueLimit | None = None
    loss_model: LossModel | None = None
    uplink_delay_trace: str | None = None
    downlink_delay_trace: str | None = None
    uplink_cellreplay: CellReplayTraces | None = None
    downlink_cellreplay: CellReplayTraces | None = None


class DeviceClass(_Frozen):
    """Compute speed and power of a device. `speed` is relative to the emulating host; `full_model_ms`
    (optional) is the device's own ResNet-50 time, from which each run derives the speed against the
    host's calibrated time (absolute profiles)."""

    speed: Annotated[float, Field(gt=0, le=1)]
    compute_power_w: NonNegFloat
    full_model_ms: PosFloat | None = None
    source: str = ""
    # a device hardware profile (testbed.hardware): a known name or a .yaml file; its per-cut times and power
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
    population: Population | None = None  # per-device compute and rates (testbed/population.py)


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
    of its catalogue. Both are checked against the built model before a run starts (testbed.model_check)."""

    arch: Annotated[str, AfterValidator(_arch_name)] = "resnet50"
    weights: str | None = None
    seed: int = 0
    split: Annotated[str, AfterValidator(_split_name)] = "layer2"
    butterfly_channels: PosInt = 8
    codec: Codec = Codec()
    jpeg_quality: Annotated[int, Field(ge=1, le=100)] = 90
    input_size: Annotated[int, Field(ge=32, le=1024)] = 224
    image_dir: str | None = None
    cloud_only_upload: Literal["jpeg", "png", "raw"] = "jpeg"  # raw: uint8 RGB at input_size (testbed.codec)


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
    # a cloud hardware profile (testbed.hardware): a known name or a .yaml file; each batch answers after the
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
    # RRC states cost time (promotion before the first byte, DRX waits; testbed.rrc); off: energy only
    rrc: Annotated[Literal["on", "off"], BeforeValidator(_on_off)] = "on"


class Reference(_Frozen):
    """A published result the run is set against: improvement factors over cloud_only, with their source."""

    name: str
    latency_x: PosFloat | None = None
    energy_x: PosFloat | None = None
    source: str = ""


class SplitPolicy(_Frozen):
    """How best_static and dynamic choose a cut (testbed.split_policy): among `cuts` (auto: cloud_only, the
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
    """One step of an assumption ladder (testbed.ladder): overrides added to the previous rungs'."""

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
    faults: list[Fault] = []  # injected faults, per phase (see testbed/faults.py)
    ladder: list[Rung] = []  # an assumption ladder: one run per rung (testbed.ladder)

    @property
    def device_count(self) -> int:
        return sum(g.count for g in self.devices)

    def link_for(self, group: DeviceGroup) -> LinkParams:
        """The group's network profile with the group's own link overrides applied."""
        base = self.networks[group.network]
        fields = {k: getattr(base, k) for k in LinkParams.model_fields}
        fields.update(group.link.model_dump(exclude_none=True))
        return LinkParams(**fields)


@dataclass(frozen=True)
class Problem:
    path: str
    message: str
    value: Any = None
    has_value: bool = False

    def render(self, file: str) -> str:
        got = f" (got {self.value!r})" if self.has_value else ""
        return f"{file}: {self.path or '<top level>'}: {self.message}{got}"


class ConfigError(Exception):
    """A topology that cannot run; `str()` lists every problem, one per line."""

    def __init__(self, file: str, problems: list[Problem]):
        self.file = file
        self.problems = problems
        super().__init__("\n".join(p.render(file) for p in problems))


# ---------------------------------------------------------------- key paths
_PATH_TOKEN = re.compile(r"([^.\[\]]+)|\[(\d+)\]")


def parse_key_path(path: str) -> list[str | int]:
    """`devices[0].arrival.rate_hz` -> ['devices', 0, 'arrival', 'rate_hz']."""
    parts: list[str | int] = []
    pos = 0
    for m in _PATH_TOKEN.finditer(path):
        gap = path[pos : m.start()]
        if gap not in ("", "."):
            raise ValueError(f"bad key path {path!r}")
        parts.append(m.group(1) if m.group(1) is not None else int(m.group(2)))
        pos = m.end()
    if not parts or pos != len(path) or path.endswith("."):
        raise ValueError(f"bad key path {path!r}")
    return parts


_PLAIN_KEY = re.compile(r"[^.\[\]\s]+")


def format_key_path(parts: tuple[Any, ...] | list[Any]) -> str:
    """['devices', 0, 'rate_hz'] -> `devices[0].rate_hz`; a key a dotted path cannot spell (empty, with dots,
    brackets or spaces) is quoted, `cloud['a.b']`, so every problem still points at its key."""
    out = ""
    for p in parts:
        if isinstance(p, int):
            out += f"[{p}]"
        elif _PLAIN_KEY.fullmatch(str(p)):
            out += f".{p}" if out else str(p)
        else:
            out += f"[{str(p)!r}]"
    return out


def apply_override(raw: dict[str, Any], assignment: str) -> None:
    """Apply one `--set key.path=value`; the value is parsed as YAML (3 -> int)."""
    if "=" not in assignment:
        raise ValueError(f"--set {assignment!r}: expected key.path=value")
    key, text = assignment.split("=", 1)
    parts = parse_key_path(key.strip())
    if len(parts) > bounds.MAX_YAML_DEPTH:
        raise ValueError(f"--set: a key path of {len(parts)} parts; allowed: at most {bounds.MAX_YAML_DEPTH}")
    try:
        value = bounds.load_yaml(text) if text.strip() else ""
    except yaml.YAMLError as e:
        raise ValueError(f"--set {key}: not valid YAML: {e}") from None
    node: Any = raw
    for i, part in enumerate(parts[:-1]):
        nxt = parts[i + 1]
        if isinstance(part, int):
            if not isinstance(node, list) or part >= len(node):
                raise ValueError(f"--set {key}: {format_key_path(parts[: i + 1])} does not exist")
            node = node[part]
            continue
        if not isinstance(node, dict):
            raise ValueError(f"--set {key}: {format_key_path(parts[:i])} is not a mapping")
        if part not in node or node[part] is None:
            node[part] = [] if isinstance(nxt, int) else {}
        # A single device group may be written as a mapping: devices.count=...
        if part == "devices" and isinstance(node[part], list) and not isinstance(nxt, int):
            if len(node[part]) != 1:
                raise ValueError(f"--set {key}: there are several device groups; use devices[N]")
            node = node[part][0]
            continue
        node = node[part]
    last = parts[-1]
    if isinstance(last, int):
        if not isinstance(node, list) or last >= len(node):
            raise ValueError(f"--set {key}: index {last} does not exist")
    elif not isinstance(node, dict):
        raise ValueError(f"--set {key}: {format_key_path(parts[:-1])} is not a mapping")
    node[last] = value


# ---------------------------------------------------------------- loading
PATH_KEYS = ("weights", "image_dir", "uplink_trace", "downlink_trace", "uplink_delay_trace", "downlink_delay_trace",
             "light", "heavy", "csv", "hardware")


def _resolve_paths(node: Any, base: Path) -> None:
    """Relative file paths in a topology are relative to the topology file."""
    if isinstance(node, dict):
        for k, v in node.items():
            if k in PATH_KEYS and isinstance(v, str) and not Path(v).is_absolute() \
                    and (k != "hardware" or hardware.is_file(v)):
                try:
                    node[k] = str((base / v).resolve())
                except (OSError, ValueError):  # e.g. a NUL byte: left as written, for _path_problem to report
                    pass
            else:
                _resolve_paths(v, base)
    elif isinstance(node, list):
        for v in node:
            _resolve_paths(v, base)


def _resolve_train_data(raw: dict[str, Any], base: Path) -> None:
    """`train.data` is a path too, unless it names a built-in data set."""
    train = raw.get("train")
    data = train.get("data") if isinstance(train, dict) else None
    if isinstance(train, dict) and isinstance(data, str) and data not in BUILTIN_DATASETS \
            and not Path(data).is_absolute():
        try:
            train["data"] = str((base / data).resolve())
        except (OSError, ValueError):  # e.g. a NUL byte: left as written, for _train_problems to report
            pass


def _merge(base: dict[str, Any], over: Any) -> Any:
    """Field-by-field override of a built-in profile (non-mappings replace)."""
    if not isinstance(over, dict):
        return over
    out = copy.deepcopy(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(out.get(k), dict) else v
    return out


def _with_profiles(raw: dict[str, Any]) -> dict[str, Any]:
    out = dict(raw)
    if isinstance(out.get("devices"), dict):  # one group written as a mapping
        out["devices"] = [out["devices"]]
    for key, builtin in (("networks", profiles.NETWORKS), ("device_classes", profiles.DEVICE_CLASSES)):
        user = out.get(key) or {}
        if not isinstance(user, dict):
            continue  # left for the validator to report
        merged = {name: copy.deepcopy(p) for name, p in builtin.items()}
        for name, p in user.items():
            merged[name] = _merge(merged[name], p) if name in merged else p
            if key == "networks":
                _apply_radio_profile(merged[name], p)
        out[key] = merged
    return out


def _apply_radio_profile(network: Any, user: Any) -> None:
    """A network's radio with a `profile` named by the user: that profile's RRC values, then the user's own keys."""
    radio, own = (x.get("radio") if isinstance(x, dict) else None for x in (network, user))
    if not isinstance(radio, dict) or not isinstance(own, dict) or not isinstance(own.get("profile"), str):
        return  # no profile named here (or not a name: left for the validator to report)
    preset = profiles.RADIO_PROFILES.get(str(radio.get("technology")), {}).get(own["profile"])
    if isinstance(preset, dict):  # an unknown name is left for the validator to report with what is allowed
        network["radio"] = {**radio, **copy.deepcopy(preset), **own}


def _model_at(loc: tuple[Any, ...]) -> type[BaseModel] | None:
    """Walk the model classes along an error location, for 'allowed keys' hints."""
    cls: Any = Topology
    for part in loc:
        if isinstance(part, int) or cls is None:
            continue
        field = cls.model_fields.get(part) if isinstance(cls, type) and issubclass(cls, BaseModel) else None
        if field is None:
            # a dict key (network name) or a list index: look through container types
            continue
        cls = _unwrap(field.annotation)
    return cls if isinstance(cls, type) and issubclass(cls, BaseModel) else None


def _unwrap(annotation: Any) -> Any:
    args = getattr(annotation, "__args__", None)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in args or ():
        found = _unwrap(arg)
        if found is not None:
            return found
    meta = getattr(annotation, "__origin__", None)
    return _unwrap(meta) if meta not in (None, annotation) else None


def _problems_from(err: ValidationError) -> list[Problem]:
    problems = []
    errors = [(tuple(p for p in e["loc"] if not _union_tag(p)), e) for e in err.errors()]
    for loc, e in errors:
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "literal_error" and any(other[:len(loc)] == loc and len(other) > len(loc)
                                                for other, _ in errors):
            continue  # a union of a literal and a list: the list member's error says more
        if e["type"] == "extra_forbidden":
            parent = _model_at(loc[:-1])
            allowed = ", ".join(parent.model_fields) if parent else "see docs"
            msg = f"unknown key; allowed keys here: {allowed}"
        elif e["type"] == "missing":
            msg = "required key is missing"
        problems.append(Problem(format_key_path(loc), msg, e.get("input"), e["type"] != "missing"))
    return problems


def _union_tag(part: Any) -> bool:
    """pydantic names the union member it tried in the error's path (`int`, `list[...]`); not a key."""
    return isinstance(part, str) and (part in ("int", "float", "str", "none", "bool") or "[" in part
                                      or part.startswith(("function-", "literal")))


def _cross_checks(topo: Topology) -> list[Problem]:
    problems = []
    for i, g in enumerate(topo.devices):
        if g.network not in topo.networks:
            problems.append(Problem(f"devices[{i}].network", "unknown network; allowed: "
                                    + ", ".join(sorted(topo.networks)), g.network, True))
        if g.device_class not in topo.device_classes:
            problems.append(Problem(f"devices[{i}].device_class", "unknown device class; allowed: "
                                    + ", ".join(sorted(topo.device_classes)), g.device_class, True))
    if len(set(topo.strategies)) != len(topo.strategies):
        problems.append(Problem("strategies", "each strategy may appear once", topo.strategies, True))
    problems += _policy_problems(topo)
    c = _known_channels(topo.model)
    if c is not None and topo.model.butterfly_channels >= c:
        problems.append(Problem("model.butterfly_channels",
                                f"must be below the {c} channels at split {topo.model.split} "
                                "(the butterfly unit reduces them)", topo.model.butterfly_channels, True))
    for key, value in (("model.weights", topo.model.weights), ("model.image_dir", topo.model.image_dir)):
        if value is not None and (problem := _path_problem(key, value)):
            problems.append(problem)
    problems += _trace_problems(topo)
    problems += _workload_trace_problems(topo)
    problems += _subnet_problems(topo)
    problems += _train_problems(topo)
    problems += _fault_problems(topo)
    problems += _population_problems(topo)
    problems += _hardware_problems(topo)
    if topo.pools.compute == "replay" and topo.throttling.cpu == "cgroup":
        problems.append(Problem("throttling.cpu", "cgroup caps need real device compute; pools.compute is replay",
                                "cgroup", True))
    if topo.throttling.backend == "tc" and topo.ray.address is not None:
        problems.append(Problem("throttling.backend", "tc shapes links in network namespaces on one host; "
                                "on a cluster use userspace or auto", "tc", True))
    if topo.cloud.compute == "real" and topo.cloud.replay_speed != 1.0:
        problems.append(Problem("cloud.replay_speed", "applies to cloud.compute: replay only",
                                topo.cloud.replay_speed, True))
    if topo.cloud.device == "cuda" and topo.cloud.num_gpus <= 0:
        problems.append(Problem("cloud.num_gpus", "must be > 0 when cloud.device is cuda",
                                topo.cloud.num_gpus, True))
    return problems


def _population_problems(topo: Topology) -> list[Problem]:
    """A population CSV is read here, so a bad row stops the run before anything starts."""
    problems = []
    for i, g in enumerate(topo.devices):
        if g.population is None:
            continue
        try:
            draws(g.population, g.count, g.name or f"group{i}", topo.warmup_s + topo.duration_s)
        except PopulationCsvError as e:
            problems.append(Problem(f"devices[{i}].population.csv", str(e)))
        except AvailabilityError as e:
            problems.append(Problem(f"devices[{i}].population.availability", str(e)))
        if g.population.compute_ms is not None and topo.device_classes[g.device_class].hardware is not None:
            problems.append(Problem(f"devices[{i}].population.compute_ms", "the device class has a hardware profile "
                                    f"(device_classes.{g.device_class}.hardware) whose times replace it; give one",
                                    None, True))
        if topo.throttling.cpu != "timescale":
            problems.append(Problem("throttling.cpu", f"devices[{i}] has a population: per-device compute is "
                                    "time-scaled (cgroup caps are per class); use timescale", topo.throttling.cpu,
                                    True))
    return problems


def _hardware_problems(topo: Topology) -> list[Problem]:
    """Hardware profiles that exist, validate, and cover the model, its input size and every cut in use."""
    used = {g.device_class for g in topo.devices}
    places = [(f"device_classes.{n}.hardware", "device", c.hardware) for n, c in topo.device_classes.items()
              if c.hardware is not None and n in used]
    if topo.cloud.hardware is not None:
        places.append(("cloud.hardware", "cloud", topo.cloud.hardware))
    cuts = [c for s in topo.strategies if (c := split_policy.static_cut(s, topo.model.split))]
    if any(s in split_policy.ADAPTIVE for s in topo.strategies):  # auto: every stage may be a candidate
        cuts += list(topo.policy.cuts) if topo.policy.cuts != "auto" else list(SPLIT_POINTS)
    problems = []
    for key, kind, ref in places:
        where = f"{ref}: " if hardware.is_file(ref) else ""
        try:
            prof = hardware.resolve_device(ref) if kind == "device" else hardware.resolve_cloud(ref)
        except hardware.ProfileError as e:
            problems += [Problem(key, f"{where}{k + ': ' if k else ''}{m}", ref, True) for k, m in e.problems]
            continue
        m = topo.model
        if (prof.arch, prof.input_size) != (m.arch, m.input_size):
            problems.append(Problem(key, f"profile {prof.name} covers {prof.arch} at {prof.input_size} px; the model "
                                    f"is {m.arch} at {m.input_size} px (model.arch, model.input_size)", ref, True))
            continue
        if not isinstance(prof, hardware.DeviceHardware) or prof.spread:
            continue  # spread over the cuts by MAC or FLOPs share: every cut of the traced model is covered
        for cut in cuts:  # a profile that lists its cuts' times must list every cut the run names
            try:
                prof.cut_ms(cut)
            except hardware.ProfileError as e:
                problems.append(Problem(key, f"{where}{e}", ref, True))
    return problems


def _known_channels(m: ModelSpec) -> int | None:
    """Channels at model.split where they are known without building the model (ResNet-50's stages); other
    models are checked against their catalogue before the run (testbed.model_check)."""
    return RESNET50_CHANNELS.get(m.split) if m.arch == "resnet50" else None


def _policy_problems(topo: Topology) -> list[Problem]:
    """A butterfly unit exists only at model.split; an energy objective needs every network's radio."""
    problems = []
    prefix = split_policy.STATIC_PREFIX
    places = [(f"strategies[{i}]", s[len(prefix):]) for i, s in enumerate(topo.strategies) if s.startswith(prefix)]
    if topo.policy.cuts != "auto":
        places += [(f"policy.cuts[{i}]", c) for i, c in enumerate(topo.policy.cuts)]
        if len(set(topo.policy.cuts)) != len(topo.policy.cuts):
            problems.append(Problem("policy.cuts", "each cut may appear once", topo.policy.cuts, True))
    for key, cut in places:
        if cut.endswith("+butterfly") and cut != f"{topo.model.split}+butterfly":
            problems.append(Problem(key, f"the butterfly unit sits at model.split ({topo.model.split}); allowed: "
                                    f"{topo.model.split}+butterfly or a cut without it", cut, True))
    adaptive = any(s in split_policy.ADAPTIVE for s in topo.strategies)
    if adaptive and topo.policy.objective != "latency":
        used = sorted({g.network for g in topo.devices if g.network in topo.networks})
        for name in used:
            r = topo.networks[name].radio
            if None in (r.alpha_up_mw_per_mbps, r.alpha_down_mw_per_mbps, r.beta_mw):
                problems.append(Problem("policy.objective", f"objective {topo.policy.objective} needs radio "
                                        f"coefficients; network {name} has none (allowed here: latency)",
                                        topo.policy.objective, True))
    return problems


def _path_problem(key: str, value: str) -> Problem | None:
    """A configured file (weights) or folder (images) that is not there, not that kind of thing, or too large
    (testbed.bounds: os.stat only, so a FIFO never blocks). A path the OS refuses outright (a name too long) is
    reported the same way, never raised."""
    folder = key == "model.image_dir"
    problem = bounds.file_problem(value, bounds.MAX_WEIGHTS_BYTES, folder=folder)
    if problem is None and folder:
        problem = "; ".join(bounds.image_dir_problems(value)[:3]) or None
    return Problem(key, problem, value, True) if problem else None


def _trace_places(topo: Topology) -> list[tuple[str, str]]:
    places = []
    for name, net in topo.networks.items():
        places += [(f"networks.{name}.{k}", getattr(net, k)) for k in ("uplink_trace", "downlink_trace")]
    for i, g in enumerate(topo.devices):
        places += [(f"devices[{i}].link.{k}", getattr(g.link, k)) for k in ("uplink_trace", "downlink_trace")]
    return [(k, v) for k, v in places if v is not None]


def _trace_problems(topo: Topology) -> list[Problem]:
    from throttling.trace import MahimahiTrace, TraceError

    problems = []
    for key, path in _trace_places(topo):
        if problem := bounds.file_problem(path, bounds.MAX_TRACE_BYTES):
            problems.append(Problem(key, f"not a usable Mahimahi trace: {problem}", path, True))
            continue
        try:
            MahimahiTrace.load(path)
        except (TraceError, ValueError) as e:  # ValueError: a path open() refuses (a NUL byte)
            problems.append(Problem(key, f"not a usable Mahimahi trace: {e}", path, True))
    return problems


def _workload_trace_problems(topo: Topology) -> list[Problem]:
    """Delay and CellReplay traces load and validate; a CellReplay direction has no Mahimahi trace beside it."""
    from throttling.cellreplay import DelayTrace, LightTrace
    from throttling.trace import MahimahiTrace, TraceError

    links: list[tuple[str, Any]] = [(f"networks.{n}", net) for n, net in topo.networks.items()]
    links += [(f"devices[{i}].link", g.link) for i, g in enumerate(topo.devices)]
    problems = []
    for where, link in links:
        for d in ("uplink", "downlink"):
            loads: list[tuple[str, Any, Any, str]] = [
                (f"{d}_delay_trace", getattr(link, f"{d}_delay_trace"), DelayTrace.load, "delay trace")]
            pair = getattr(link, f"{d}_cellreplay")
            if pair is not None:
                loads += [(f"{d}_cellreplay.light", pair.light, LightTrace.load, "CellReplay light trace"),
                          (f"{d}_cellreplay.heavy", pair.heavy, MahimahiTrace.load, "Mahimahi trace")]
                if getattr(link, f"{d}_trace") is not None:
                    problems.append(Problem(f"{where}.{d}_trace", f"{d}_cellreplay replaces it; give one of them",
                                            getattr(link, f"{d}_trace"), True))
                if topo.throttling.backend != "userspace":  # auto may pick tc, whose kernel clocks the bytes
                    problems.append(Problem("throttling.backend", f"{where}.{d}_cellreplay needs the userspace "
                                            "link backend; allowed with it: userspace", topo.throttling.backend,
                                            True))
            for key, path, load, what in loads:
                if path is None:
                    continue
                try:
                    load(path)
                except (TraceError, ValueError) as e:
                    problems.append(Problem(f"{where}.{key}", f"not a usable {what}: {e}", path, True))
    return problems


def _train_problems(topo: Topology) -> list[Problem]:
    t, c = topo.train, _known_channels(topo.model)
    problems = [] if c is None else [
        Problem(f"train.channels[{i}]", f"must be below the {c} channels at split {topo.model.split} "
                "(the butterfly unit reduces them)", n, True) for i, n in enumerate(t.channels) if n >= c]
    for key, values in (("channels", t.channels), ("codecs", t.codecs)):
        if len(set(values)) != len(values):
            problems.append(Problem(f"train.{key}", "each value may appear once", values, True))
    if t.data not in BUILTIN_DATASETS:
        try:
            missing = "" if Path(t.data).is_dir() else "no such folder"
        except (OSError, ValueError) as e:  # a path the OS refuses outright (a name too long)
            missing = f"not a usable path: {getattr(e, 'strerror', None) or e}"
        if missing:
            problems.append(Problem("train.data", f"{missing}; allowed: an ImageFolder folder (one subfolder per "
                                    f"class) or a built-in data set: {', '.join(BUILTIN_DATASETS)}", t.data, True))
    return problems


_FAULT_TARGETS = {"link_outage": ("group", "devices"), "link_degrade": ("group", "devices"),
                  "device_leave": ("group", "devices"), "replica_kill": ("replica",), "pool_kill": ("pool",)}


def _fault_problems(topo: Topology) -> list[Problem]:
    """Targets that exist, the fields each kind needs, and no fields it would ignore."""
    from testbed.devices import pool_slices

    problems = []
    groups = [g.name or f"group{i}" for i, g in enumerate(topo.devices)]
    n_pools = len(pool_slices(topo.device_count, topo.pools.devices_per_pool))
    horizon = topo.warmup_s + topo.duration_s
    names = [f.name or f"{f.kind}@{f.at_s:g}s" for f in topo.faults]
    for i, f in enumerate(topo.faults):
        key = f"faults[{i}]"
        if names.count(names[i]) > 1:
            problems.append(Problem(f"{key}.name", "each fault needs its own name (the default is kind@at_s)",
                                    names[i], True))
        targets = _FAULT_TARGETS[f.kind]
        given = [t for t in ("group", "devices", "replica", "pool") if getattr(f, t) is not None]
        if len([t for t in given if t in targets]) != 1:
            problems.append(Problem(key, f"{f.kind} needs exactly one target; allowed: {' or '.join(targets)}",
                                    {t: getattr(f, t) for t in given}, True))
        for t in given:
            if t not in targets:
                problems.append(Problem(f"{key}.{t}", f"not a target of {f.kind}; allowed: {', '.join(targets)}",
                                        getattr(f, t), True))
        if f.group is not None and f.group not in groups:
            problems.append(Problem(f"{key}.group", "unknown device group; allowed: " + ", ".join(groups),
                                    f.group, True))
        for j, d in enumerate(f.devices or []):
            if d >= topo.device_count:
                problems.append(Problem(f"{key}.devices[{j}]", f"no such device; allowed: 0..{topo.device_count - 1}",
                                        d, True))
        if f.replica is not None and f.replica >= topo.cloud.replicas:
            problems.append(Problem(f"{key}.replica", f"no such replica; allowed: 0..{topo.cloud.replicas - 1}",
                                    f.replica, True))
        if f.pool is not None and f.pool >= n_pools:
            problems.append(Problem(f"{key}.pool", f"no such device pool; allowed: 0..{n_pools - 1}", f.pool, True))
        if f.kind in ("link_outage", "link_degrade", "device_leave") and f.duration_s is None:
            problems.append(Problem(f"{key}.duration_s", f"{f.kind} needs a duration", None, False))
        if f.kind == "pool_kill" and f.duration_s is not None:
            problems.append(Problem(f"{key}.duration_s", "a killed pool stays down for the rest of the phase "
                                    "(it is replaced before the next one); allowed: no duration_s", f.duration_s, True))
        if (f.kind == "link_degrade") != (f.rate_factor is not None):
            problems.append(Problem(f"{key}.rate_factor", "link_degrade needs rate_factor (0 < x < 1); "
                                    "allowed on link_degrade only", f.rate_factor, f.rate_factor is not None))
        if f.at_s >= horizon:
            problems.append(Problem(f"{key}.at_s", f"after the phase ends; allowed: 0 <= at_s < "
                                    f"warmup_s + duration_s = {horizon:g}", f.at_s, True))
        for j, s in enumerate(f.strategies or []):
            if s not in topo.strategies:
                problems.append(Problem(f"{key}.strategies[{j}]", "not a strategy of this topology; allowed: "
                                        + ", ".join(topo.strategies), s, True))
    return problems


def _subnet_problems(topo: Topology) -> list[Problem]:
    try:
        net = ipaddress.ip_network(topo.throttling.subnet)
    except ValueError:
        return [Problem("throttling.subnet", "must be an IPv4 network like 10.77.0.0/16",
                        topo.throttling.subnet, True)]
    if net.version != 4 or not net.is_private:
        return [Problem("throttling.subnet", "must be a private IPv4 network (the run's own namespaces)",
                        topo.throttling.subnet, True)]
    if net.num_addresses < topo.device_count + 3:
        return [Problem("throttling.subnet", f"too small for {topo.device_count} devices "
                        f"(needs {topo.device_count + 3} addresses)", topo.throttling.subnet, True)]
    return []


def load_topology(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Topology:
    """Read, override, merge profiles, validate. Raises ConfigError listing every problem."""
    path = Path(path)
    file = str(path)
    if problem := bounds.file_problem(file, bounds.MAX_TOPOLOGY_BYTES):
        raise ConfigError(file, [Problem("", f"cannot read the file: {problem}")])
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(file, [Problem("", f"cannot read the file: {getattr(e, 'strerror', None) or e}")]) from None
    try:
        raw = bounds.load_yaml(text)
    except (yaml.YAMLError, ValueError) as e:  # ValueError: the limits (bounds.YamlLimit), an int of 5,000 digits
        raise ConfigError(file, [Problem(getattr(e, "path", ""), f"not valid YAML: {e}")]) from None
    return topology_from_dict(raw, overrides, file, path.parent)


def topology_from_dict(raw: Any, overrides: list[str] | tuple[str, ...] = (), file: str = "<dict>",
                       base: Path | None = None) -> Topology:
    """The same overrides, profiles and checks as a file (testbed.api passes a dict); `raw` is not modified.
    Relative paths are read from `base` (the topology file's folder; the working folder for a dict)."""
    if not isinstance(raw, dict):
        raise ConfigError(file, [Problem("", "the file must hold a mapping of keys", raw, True)])
    raw = copy.deepcopy(raw)
    for assignment in overrides:
        try:
            apply_override(raw, assignment)
        except ValueError as e:
            raise ConfigError(file, [Problem("", str(e))]) from None
    base = Path.cwd() if base is None else base
    _resolve_paths(raw, base)
    _resolve_train_data(raw, base)
    try:
        topo = Topology.model_validate(_with_profiles(raw))
    except ValidationError as e:
        raise ConfigError(file, _problems_from(e)) from None
    # bounds first: the cross checks build the device table and the pools' slices
    problems = [Problem(k, m, v, True) for k, m, v in bounds.topology_problems(topo)] or _cross_checks(topo)
    if problems:
        raise ConfigError(file, problems)
    return topo
