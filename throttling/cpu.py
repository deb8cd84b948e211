"""Device CPU emulation by time scaling (no real cap).

A device class has a speed relative to this host. Each run times the model
pieces on this host once (calibration); a device's compute then runs for real
and the device waits until `host_ms / speed` has passed since it started, so
the emulated compute time does not depend on how busy the host happens to be.
If the real compute overruns its target (the host is overloaded), the request
keeps the longer, real time and the overrun is counted.

This is labelled "time-scaled" in every run's output: it stretches time, it
does not cap the CPU (cgroup caps are a separate backend).
"""

from __future__ import annotations

from dataclasses import dataclass

MECHANISM = "time-scaled (compute runs at host speed, then waits to the device's calibrated time; not a real CPU cap)"


@dataclass(frozen=True)
class TimeScaledCpu:
    speed: float  # relative to this host; 0.5 = twice as slow

    def __post_init__(self) -> None:
        if not 0 < self.speed <= 1:
            raise ValueError("speed must be in (0, 1]: a time-scaled device cannot be faster than the host")

    def target_ms(self, host_ms: float) -> float:
        return host_ms / self.speed
