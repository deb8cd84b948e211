"""Device CPU emulation by time scaling (no real cap).

A device class has a speed relative to this host. Each run times the model
pieces on this host once (calibration); a device's compute then runs for real
and the device waits until `host_ms / speed` has passed since it started, so
the emulated compute time does not depend on how busy the host happens to be.
If the real compute overruns its target (the host is overloaded), the request
keeps the longer, real time and the overrun is counted.

This is labelled "time-scaled" in every run's output: it stretches time, it
does not cap the CPU. `throttling.cpu: cgroup` uses real caps instead
(`throttling.cgroup`), calibrated to the same target time; `auto` picks caps
where this process can create cgroups and says why when it cannot.
"""

from __future__ import annotations

from dataclasses import dataclass

from throttling import cgroup

MECHANISM = "time-scaled (compute runs at host speed, then waits to the device's calibrated time; not a real CPU cap)"


@dataclass(frozen=True)
class TimeScaledCpu:
    speed: float  # relative to this host; 0.5 = twice as slow

    def __post_init__(self) -> None:
        if not 0 < self.speed <= 1:
            raise ValueError("speed must be in (0, 1]: a time-scaled device cannot be faster than the host")

    def target_ms(self, host_ms: float) -> float:
        return host_ms / self.speed


class CpuCapUnavailable(RuntimeError):
    """The topology asks for cgroup caps and this machine cannot provide them."""


@dataclass(frozen=True)
class CpuMechanism:
    name: str  # "timescale" | "cgroup"
    description: str
    run_id: str = ""

    def to_dict(self) -> dict[str, str]:
        return {"name": self.name, "description": self.description, "run_id": self.run_id}


REPLAY = ("replayed: each frame's device output and host timings were computed once at start; every request "
          "reuses them, stretched to the device's speed (no device compute per request)")


def choose_cpu(requested: str, run_id: str, replay: bool = False) -> CpuMechanism:
    if replay:
        return CpuMechanism("replay", REPLAY)
    if requested == "timescale":
        return CpuMechanism("timescale", MECHANISM)

    support = cgroup.detect()
    if support.writable:
        return CpuMechanism("cgroup", cgroup.describe(support) + "; one capped thread per device class and pool",
                            run_id)
    if requested == "cgroup":
        raise CpuCapUnavailable(f"throttling.cpu is cgroup, but {support.reason}")
    return CpuMechanism("timescale", f"{MECHANISM} [auto: no cgroup caps here: {support.reason}]")
