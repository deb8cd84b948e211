"""Hardware profiles: the compute times of named devices and cloud accelerators, not this host's.

A topology names a profile (`device_classes.<name>.hardware: jetson_tx2`, `cloud.hardware: gtx_1080ti`)
or a YAML file of its own (`hardware: my_board.yaml`, validated like the topology). A device profile
gives the head time at each cut (named by module path: `layer1`..`layer4` are torchvision ResNet-50's
stages), the butterfly reduction time and the compute power; a cloud profile gives the full model's
latency(batch) curve, from which each cut's tail time follows, and the board power where published.

Where a source gives only the full-model time, it is spread over the cuts by each part's share of
the model's multiply-accumulates (MACS_SHARE, counted here by forward hooks on torchvision's
ResNet-50 at 224x224; tests/test_hardware.py recounts them). Every number's source is in
docs/sources.md; the ones not checked say so. Pure: no Ray, no torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from testbed.base import files

CUT_ORDER = ("layer1", "layer2", "layer3", "layer4")
# Share of ResNet-50's MACs (224x224, torchvision) up to and including each stage; the butterfly
# reduction (1x1 conv to 8 channels) and restoration (back to the stage's channels) per cut.
MACS_TOTAL = 4_089_184_256
MACS_SHARE = {"resnet50": {"layer1": 0.1922, "layer2": 0.4435, "layer3": 0.8016, "layer4": 0.9995}}
BUTTERFLY_MACS = {"layer1": 256 * 8 * 56 * 56, "layer2": 512 * 8 * 28 * 28, "layer3": 1024 * 8 * 14 * 14,
                  "layer4": 2048 * 8 * 7 * 7}  # at butterfly_channels 8; each direction
UNCHECKED = "recalled, not checked"


class ProfileError(ValueError):
    """A profile that cannot be used: every problem as (key path, message)."""

    def __init__(self, problems: list[tuple[str, str]]):
        self.problems = problems
        super().__init__("; ".join(f"{k}: {m}" for k, m in problems))


PosMs = Annotated[float, Field(gt=0)]
NonNegMs = Annotated[float, Field(ge=0)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DeviceProfile(_Strict):
    """head_ms per cut (or full_model_ms spread by MACs), butterfly_ms (or its MAC share), power."""

    kind: Literal["device"] = "device"
    arch: str = "resnet50"
    input_size: Annotated[int, Field(ge=32)] = 224
    full_model_ms: PosMs
    head_ms: dict[str, PosMs] | None = None
    butterfly_ms: NonNegMs | None = None
    compute_power_w: Annotated[float, Field(ge=0)]
    source: str = ""

    @model_validator(mode="after")
    def _cuts_increase(self) -> DeviceProfile:
        if self.head_ms is None and self.arch not in MACS_SHARE:
            raise ValueError(f"head_ms is required for arch {self.arch!r} (no MAC shares to spread "
                             f"full_model_ms; known: {', '.join(MACS_SHARE)})")
        return self


class CloudProfile(_Strict):
    """batch_ms: the full model's latency for batches of n (increasing); tail_batch_ms: per-cut curves."""

    kind: Literal["cloud"] = "cloud"
    arch: str = "resnet50"
    input_size: Annotated[int, Field(ge=32)] = 224
    batch_ms: Annotated[dict[Annotated[int, Field(ge=1)], PosMs], Field(min_length=1)]
    tail_batch_ms: dict[str, dict[Annotated[int, Field(ge=1)], PosMs]] = {}
    power_w: Annotated[float, Field(ge=0)] | None = None
    source: str = ""


def _spread(arch: str, full_ms: float) -> dict[str, float]:
    return {c: round(full_ms * s, 4) for c, s in MACS_SHARE[arch].items()}


# ------------------------------------------------------------------ built-in profiles (docs/sources.md)
DEVICES: dict[str, dict[str, Any]] = {
    "jetson_tx2": {"full_model_ms": 11.0, "compute_power_w": 7.5,
                   "source": f"ResNet-50 batch 1, TensorRT FP16 on the TX2 GPU, ~11 ms ({UNCHECKED}); "
                             "7.5 W: NVIDIA TX2 Max-Q module budget; spread over cuts by MAC share"},
    "phone_sd8gen2": {"full_model_ms": 6.0, "compute_power_w": 3.0,
                      "source": f"ResNet-50 INT8 on a Snapdragon 8 Gen 2 NPU, ~6 ms ({UNCHECKED}); 3 W assumed; "
                                "spread over cuts by MAC share"},
    "phone_cpu": {"full_model_ms": 180.0, "compute_power_w": 2.5,
                  "source": f"ResNet-50 FP32 on a mid-range phone's big CPU cores (TFLite, 4 threads), ~180 ms "
                            f"({UNCHECKED}); 2.5 W assumed; spread over cuts by MAC share"},
    "raspberry_pi4": {"full_model_ms": 1200.0, "compute_power_w": 6.4,
                      "source": f"ResNet-50 FP32 on the Pi 4B's 4 Cortex-A72 cores, ~1.2 s ({UNCHECKED}); "
                                "6.4 W: assumed board power under full CPU load; spread over cuts by MAC share"},
}
CLOUDS: dict[str, dict[str, Any]] = {
    "gtx_1080ti": {"batch_ms": {1: 7.0, 16: 38.7}, "power_w": 250.0,
                   "source": "batch 16: 50.67 ms on a GTX 1080 (jcjohnson/cnn-benchmarks README, ResNet-50 "
                             f"forward, cuDNN 5005) / 1.31 (1080 Ti ~ Pascal Titan X, 1.31x a 1080, same README; "
                             f"the Ti equivalence {UNCHECKED}); batch 1: 7 ms ({UNCHECKED}); 250 W TDP"},
    "v100": {"batch_ms": {1: 1.1, 128: 16.2}, "power_w": 300.0,
             "source": f"NVIDIA V100 TensorRT INT8 ResNet-50: ~1.1 ms at batch 1, ~7,900 img/s at batch 128 "
                       f"({UNCHECKED}); 300 W TDP (SXM2)"},
    "a100": {"batch_ms": {1: 0.6, 128: 4.4}, "power_w": 400.0,
             "source": f"MLPerf Inference v1.0 ResNet-50, A100-SXM4: single-stream ~0.6 ms, offline ~29,000 img/s "
                       f"per GPU ({UNCHECKED}); 400 W TDP"},
    "h100": {"batch_ms": {1: 0.4, 128: 1.7}, "power_w": 700.0,
             "source": f"MLPerf Inference v3.0 ResNet-50, H100-SXM: single-stream ~0.4 ms, offline ~75,000 img/s "
                       f"per GPU ({UNCHECKED}); 700 W TDP"},
}


@dataclass(frozen=True)
class DeviceHardware:
    """A resolved device profile: the device's time for each cut the pools run."""

    name: str
    arch: str
    input_size: int
    head_ms: dict[str, float]
    butterfly_ms: dict[str, float]
    full_model_ms: float
    compute_power_w: float
    source: str
    spread: bool = True  # head_ms spread from full_model_ms (False: the profile lists them, and only those count)

    def cut_ms(self, cut: str, flops_share: float | None = None) -> float:
        """Device compute of a cut (`cloud_only` 0, `device_only` the whole model, `<cut>+butterfly`). A spread
        profile's cut without a MAC share here (any cut of the traced catalogue) takes `flops_share` of the full
        model: the catalogue's share of FLOPs before the cut (testbed.model.cut_catalogue)."""
        if cut == "cloud_only":
            return 0.0
        if cut == "device_only":
            return self.full_model_ms
        base, _, extra = cut.partition("+")
        if base not in self.head_ms and self.spread and flops_share is not None:
            return self.full_model_ms * flops_share
        if base not in self.head_ms:
            raise ProfileError([(f"head_ms.{base}", f"profile {self.name} does not cover cut {base}; "
                                 f"covered: {', '.join(self.head_ms)}")])
        return self.head_ms[base] + (self.butterfly_ms.get(base, 0.0) if extra == "butterfly" else 0.0)


@dataclass(frozen=True)
class CloudHardware:
    """A resolved cloud profile: the tail's time for a batch of n at each cut."""

    name: str
    arch: str
    input_size: int
    batch_ms: dict[int, float]
    tail_batch_ms: dict[str, dict[int, float]]
    power_w: float | None
    source: str

    def tail_ms(self, cut: str, n: int, flops_share: float | None = None) -> float:
        """The tail's time for a batch of n: the cut's own curve, else the full model's curve less the head's
        MAC share (ResNet-50's stages), else less `flops_share` (the catalogue's FLOPs before the cut)."""
        base, _, extra = cut.partition("+")
        if base in self.tail_batch_ms:
            return interpolate(self.tail_batch_ms[base], n)
        full = interpolate(self.batch_ms, n)
        if cut == "cloud_only":
            return full
        share = MACS_SHARE.get(self.arch, {})
        if base not in share and flops_share is not None:
            return full * (1.0 - flops_share)
        if base not in share:
            raise ProfileError([(f"tail_batch_ms.{base}", f"profile {self.name} does not cover cut {base}")])
        restore = BUTTERFLY_MACS.get(base, 0) / MACS_TOTAL if extra == "butterfly" else 0.0
        return full * (1.0 - share[base] + restore)

    def covers(self, cut: str) -> bool:
        base = cut.partition("+")[0]
        return cut == "cloud_only" or base in self.tail_batch_ms or base in MACS_SHARE.get(self.arch, {})


def interpolate(points: dict[int, float], n: int) -> float:
    """Linear between the profile's batch sizes, proportional below the first, per item past the last."""
    sizes = sorted(points)
    if n <= sizes[0]:
        return points[sizes[0]] * n / sizes[0]
    for lo, hi in zip(sizes, sizes[1:], strict=False):
        if n <= hi:
            return points[lo] + (points[hi] - points[lo]) * (n - lo) / (hi - lo)
    if len(sizes) == 1:
        return points[sizes[0]] * n / sizes[0]
    lo, hi = sizes[-2], sizes[-1]
    return points[hi] + (points[hi] - points[lo]) / (hi - lo) * (n - hi)


def known(kind: str) -> list[str]:
    return sorted(DEVICES if kind == "device" else CLOUDS)


def is_file(ref: str) -> bool:
    return ref.endswith((".yaml", ".yml"))


def resolve_device(ref: str) -> DeviceHardware:
    p = _validated(ref, "device")
    assert isinstance(p, DeviceProfile)
    head = dict(p.head_ms) if p.head_ms is not None else _spread(p.arch, p.full_model_ms)
    if p.butterfly_ms is not None:
        bfly = {c: p.butterfly_ms for c in head}
    else:
        bfly = {c: round(p.full_model_ms * m / MACS_TOTAL, 4) for c, m in BUTTERFLY_MACS.items() if c in head}
    return DeviceHardware(Path(ref).stem if is_file(ref) else ref, p.arch, p.input_size, head, bfly,
                          p.full_model_ms, p.compute_power_w, p.source, spread=p.head_ms is None)


def resolve_cloud(ref: str) -> CloudHardware:
    p = _validated(ref, "cloud")
    assert isinstance(p, CloudProfile)
    return CloudHardware(Path(ref).stem if is_file(ref) else ref, p.arch, p.input_size, dict(p.batch_ms),
                         {c: dict(v) for c, v in p.tail_batch_ms.items()}, p.power_w, p.source)


def _validated(ref: str, kind: str) -> DeviceProfile | CloudProfile:
    """The profile named `ref` (built-in or a YAML file), validated; ProfileError names each key path."""
    builtin = DEVICES if kind == "device" else CLOUDS
    if is_file(ref):
        raw = _read(ref)
    elif ref in builtin:
        raw = builtin[ref]
    else:
        raise ProfileError([("", f"unknown {kind} hardware profile; known: {', '.join(known(kind))} "
                             "(or a profile file ending in .yaml)")])
    cls = DeviceProfile if kind == "device" else CloudProfile
    try:
        prof = cls.model_validate(raw)
    except ValidationError as e:
        raise ProfileError([(".".join(str(p) for p in err["loc"]) or "<top level>",
                             err["msg"].removeprefix("Value error, ")) for err in e.errors()]) from None
    problems = _order_problems(prof)
    if problems:
        raise ProfileError(problems)
    return prof


def _read(path: str) -> Any:
    """A user's profile file, read within the topology's limits (a regular file; YAML size, depth and aliases)."""
    if problem := files.file_problem(path, files.MAX_TOPOLOGY_BYTES):
        raise ProfileError([("", f"cannot read the profile file {path!r}: {problem}")])
    try:
        raw = files.load_yaml(Path(path).read_text())
    except (OSError, ValueError, UnicodeDecodeError) as e:  # ValueError: a path open() refuses (a NUL byte)
        raise ProfileError([("", f"cannot read the profile file {path!r}: {getattr(e, 'strerror', None) or e}")]) \
            from None
    except yaml.YAMLError as e:
        raise ProfileError([("", f"profile file {path} is not valid YAML: {e}")]) from None
    if not isinstance(raw, dict):
        raise ProfileError([("", f"profile file {path} must hold a mapping of keys")])
    return raw


def _order_problems(p: DeviceProfile | CloudProfile) -> list[tuple[str, str]]:
    """Head times grow with the cut and every cut is there; batch curves grow with the batch."""
    out: list[tuple[str, str]] = []
    if isinstance(p, DeviceProfile) and p.head_ms is not None and p.arch == "resnet50":
        missing = [c for c in CUT_ORDER if c not in p.head_ms]
        out += [(f"head_ms.{c}", "missing cut; resnet50 profiles give every cut: " + ", ".join(CUT_ORDER))
                for c in missing]
        given = [(c, p.head_ms[c]) for c in CUT_ORDER if c in p.head_ms]
        out += [(f"head_ms.{b}", f"must be larger than head_ms.{a} ({ta:g} ms): a later cut runs more layers")
                for (a, ta), (b, tb) in zip(given, given[1:], strict=False) if tb <= ta]
        if given and given[-1][1] > p.full_model_ms:
            out.append((f"head_ms.{given[-1][0]}", f"must not exceed full_model_ms ({p.full_model_ms:g})"))
    if isinstance(p, CloudProfile):
        for key, curve in [("batch_ms", p.batch_ms), *((f"tail_batch_ms.{c}", v) for c, v in p.tail_batch_ms.items())]:
            pts = sorted(curve.items())
            out += [(f"{key}.{b}", f"must be larger than {key}.{a} ({ta:g} ms): a batch curve increases")
                    for (a, ta), (b, tb) in zip(pts, pts[1:], strict=False) if tb <= ta]
    return out


REPLAYED = "replayed"
# A profile within this factor of the host's calibrated time is replayed too: the host's time moves by 10-30% with
# load, so real compute that only just keeps up on a quiet host overruns the profile on a busy one.
HEADROOM = 1.25
TIME_SCALED = "time-scaled"


def device_mechanism(profile: DeviceHardware, host_ms: dict[str, float], cuts: list[str],
                     flops_share: dict[str, float] | None = None) -> dict[str, Any]:
    """How a profiled device class is emulated on this host, and why.

    Faster than this host at any cut it runs: its outputs are computed ahead (real tensors, real bytes) and each
    result is released at the profile's time; otherwise the real compute runs per request and the device waits
    to the profile's time (time scaling)."""
    timed = [c for c in cuts if c in host_ms and c != "cloud_only"]
    shares = flops_share or {}
    ms = {c: profile.cut_ms(c, shares.get(c.partition("+")[0])) for c in timed}
    faster = [c for c in timed if ms[c] < HEADROOM * host_ms[c]]
    per_cut = {c: {"profile_ms": round(ms[c], 3), "host_ms": round(host_ms[c], 3)} for c in timed}
    if faster:
        why = (f"profile {profile.name}, faster than host (or within {HEADROOM - 1:.0%} of it) at {', '.join(faster)}: "
               "replayed (outputs computed ahead on this host, each released at the profile's time)")
        return {"mechanism": REPLAYED, "profile": profile.name, "why": why, "cuts": per_cut}
    why = f"profile {profile.name}, slower than host at every cut: time-scaled to the profile's time"
    return {"mechanism": TIME_SCALED, "profile": profile.name, "why": why, "cuts": per_cut}
