"""Facts about the machine a component runs on, for the run's summary."""

from __future__ import annotations

import gc
import os
import platform
from typing import Any

import psutil


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def host_facts() -> dict[str, Any]:
    return {
        "hostname": platform.node(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
    }


def ray_node_id() -> str | None:
    """The Ray node this process runs on (None outside Ray), for the run's placement report."""
    try:
        import ray  # ray: only the driver and the actors start it
    except ImportError:
        return None
    return ray.get_runtime_context().get_node_id() if ray.is_initialized() else None


def ray_node_ip() -> str:
    """This node's Ray address (127.0.0.1 for an embedded Ray; loopback outside Ray)."""
    try:
        import ray  # ray: only the driver and the actors start it
    except ImportError:
        return "127.0.0.1"
    return str(ray.util.get_node_ip_address()) if ray.is_initialized() else "127.0.0.1"


class ProcessUsage:
    """CPU (percent of one core since the last sample), resident memory, and GPU use when there is one."""

    def __init__(self, gpu: bool = False):
        self._proc = psutil.Process()
        self._proc.cpu_percent(interval=None)  # the first call only starts the measurement
        self._gpu = gpu

    def sample(self) -> dict[str, float | None]:
        out: dict[str, float | None] = {
            "cpu_percent": round(self._proc.cpu_percent(interval=None), 1),
            "rss_mb": round(self._proc.memory_info().rss / 2**20, 1),
            "gpu_util_percent": None, "gpu_mem_mb": None,
        }
        if self._gpu:
            import torch  # torch: seconds to import, only where a model runs

            out["gpu_mem_mb"] = round(torch.cuda.memory_allocated() / 2**20, 1)
            try:  # needs NVML (the nvidia-ml-py package); memory is reported without it
                out["gpu_util_percent"] = float(torch.cuda.utilization())
            except Exception:  # noqa: BLE001 - utilisation is optional
                pass
        return out


def freeze_heap() -> None:
    """Exempt everything allocated so far (torch, Ray, the model: about 360,000 objects) from garbage collection.

    A full collection over that heap takes 100-200 ms on this host, and it stops the event loop that writes the
    shaped bytes and stamps their arrival: the link timings showed it as rare 100-200 ms outliers. Called once
    an actor is set up; what the run allocates later is collected as usual.
    """

    gc.collect()
    gc.freeze()
