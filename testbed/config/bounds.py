"""What a topology may ask for: an upper bound on every number, list and text, and the totals that follow.

After the schema has typed a topology, every count, rate, duration and size is held against an upper bound that
follows from what a run can do (`topology_problems`): devices a /16 subnet and the pools can hold, replicas the
cluster can place, requests that fit in the driver's records. The YAML text and the files it names are limited
before that, in testbed.base.files. Pure functions; testbed.config.loading reports what they find the same way
as every other problem (file, key path, value, what is allowed), exit 2 from run.py.
"""

from __future__ import annotations

import math
import os
from typing import Any

from testbed.base.files import MAX_IMAGE_BYTES, MAX_IMAGE_FILES, file_problem
from testbed.base.keypaths import format_key_path
from testbed.domain.frames import IMAGE_SUFFIXES

MAX_DEVICES = 65_533  # what a /16 subnet holds besides the cloud (the tc backend's default subnet)
MAX_POOLS = 1_000  # one process each (about 0.5 GB with its model)
MAX_REPLICAS = 256  # one process and one model each
MAX_PLANNED_REQUESTS = 2_000_000  # every request ends as one record the driver keeps (about 2.5 KB each)
WEEK_S = 7 * 86_400.0
SEED = 2**63 - 1

# key path (list index: [*], free mapping key: *) -> (largest allowed |value|, why)
LIMITS: dict[str, tuple[float, str]] = {
    "duration_s": (WEEK_S, "a week per phase"),
    "warmup_s": (WEEK_S, "a week per phase"),
    "request_timeout_s": (86_400.0, "a day"),
    "devices[*].count": (MAX_DEVICES, "the devices a /16 subnet holds"),
    "devices[*].arrival.rate_hz": (1_000.0, "a frame per ms per device"),
    "devices[*].arrival.seed": (SEED, "a 64-bit seed"),
    "devices[*].link.uplink_mbps": (100_000.0, "100 Gbit/s"),
    "devices[*].link.downlink_mbps": (100_000.0, "100 Gbit/s"),
    "devices[*].link.rtt_ms": (600_000.0, "10 minutes"),
    "devices[*].link.jitter_ms": (600_000.0, "10 minutes"),
    "devices[*].link.trace_offset_ms": (WEEK_S * 1000, "a week"),
    "networks.*.uplink_mbps": (100_000.0, "100 Gbit/s"),
    "networks.*.downlink_mbps": (100_000.0, "100 Gbit/s"),
    "networks.*.rtt_ms": (600_000.0, "10 minutes"),
    "networks.*.jitter_ms": (600_000.0, "10 minutes"),
    "networks.*.trace_offset_ms": (WEEK_S * 1000, "a week"),
    "networks.*.radio.alpha_up_mw_per_mbps": (1e6, "1 kW per Mbit/s"),
    "networks.*.radio.alpha_down_mw_per_mbps": (1e6, "1 kW per Mbit/s"),
    "networks.*.radio.beta_mw": (1e6, "1 kW"),
    "networks.*.radio.promotion_ms": (600_000.0, "10 minutes"),
    "networks.*.radio.promotion_mw": (1e6, "1 kW"),
    "networks.*.radio.tail[*].ms": (600_000.0, "10 minutes"),
    "networks.*.radio.tail[*].mw": (1e6, "1 kW"),
    "device_classes.*.compute_power_w": (10_000.0, "10 kW"),
    "device_classes.*.full_model_ms": (3_600_000.0, "an hour per frame"),
    "model.seed": (SEED, "a 64-bit seed"),
    "model.butterfly_channels": (4_096, "more than any split point has"),
    "train.epochs": (10_000, "ten thousand epochs"),
    "train.finetune_epochs": (10_000, "ten thousand epochs"),
    "train.max_steps_per_epoch": (10_000_000, "ten million steps"),
    "train.batch_size": (65_536, "64 Ki images"),
    "train.lr": (1_000.0, "a learning rate of 1000"),
    "train.distill_temperature": (1_000.0, "a temperature of 1000"),
    "train.channels[*]": (4_096, "more than any split point has"),
    "train.seed": (SEED, "a 64-bit seed"),
    "cloud.replicas": (MAX_REPLICAS, "one process and model copy each"),
    "cloud.max_batch_size": (1_024, "1024 items per batch"),
    "cloud.max_batch_wait_ms": (60_000.0, "a minute"),
    "cloud.queue_limit": (1_000_000, "a million queued jobs"),
    "cloud.torch_threads": (1_024, "1024 threads"),
    "cloud.num_cpus": (10_000.0, "10,000 CPUs"),
    "cloud.num_gpus": (1_024.0, "1024 GPUs"),
    "cloud.resources.*": (1e6, "a million units"),
    "cloud.replay_speed": (1e6, "a million times this host"),
    "pools.devices_per_pool": (MAX_DEVICES, "every device in one pool"),
    "pools.torch_threads": (1_024, "1024 threads"),
    "pools.num_cpus": (10_000.0, "10,000 CPUs"),
    "pools.resources.*": (1e6, "a million units"),
    "throttling.trace_update_ms": (3_600_000.0, "an hour"),
    "references[*].latency_x": (1e6, "a million times"),
    "references[*].energy_x": (1e6, "a million times"),
    "policy.energy_weight_ms_per_mj": (1e9, "1e9 ms per mJ"),
    "policy.bandwidth_window": (10_000, "10,000 requests"),
    "policy.estimate_ttl_s": (86_400.0, "a day"),
    "devices[*].population.seed": (SEED, "a 64-bit seed"),
    "devices[*].population.compute_ms.median": (3600000.0, "an hour per frame"),
    "devices[*].population.compute_ms.mean": (3600000.0, "an hour per frame"),
    "devices[*].population.compute_ms.sd": (3600000.0, "an hour per frame"),
    "devices[*].population.compute_ms.low": (3600000.0, "an hour per frame"),
    "devices[*].population.compute_ms.high": (3600000.0, "an hour per frame"),
    "devices[*].population.compute_ms.sigma": (10.0, "a log-spread of e^10"),
    "devices[*].population.uplink_kbps.median": (100000000.0, "100 Gbit/s"),
    "devices[*].population.uplink_kbps.mean": (100000000.0, "100 Gbit/s"),
    "devices[*].population.uplink_kbps.sd": (100000000.0, "100 Gbit/s"),
    "devices[*].population.uplink_kbps.low": (100000000.0, "100 Gbit/s"),
    "devices[*].population.uplink_kbps.high": (100000000.0, "100 Gbit/s"),
    "devices[*].population.uplink_kbps.sigma": (10.0, "a log-spread of e^10"),
    "devices[*].population.downlink_kbps.median": (100000000.0, "100 Gbit/s"),
    "devices[*].population.downlink_kbps.mean": (100000000.0, "100 Gbit/s"),
    "devices[*].population.downlink_kbps.sd": (100000000.0, "100 Gbit/s"),
    "devices[*].population.downlink_kbps.low": (100000000.0, "100 Gbit/s"),
    "devices[*].population.downlink_kbps.high": (100000000.0, "100 Gbit/s"),
    "devices[*].population.downlink_kbps.sigma": (10.0, "a log-spread of e^10"),
    "devices[*].population.availability.on_s.median": (WEEK_S, "a week"),
    "devices[*].population.availability.on_s.mean": (WEEK_S, "a week"),
    "devices[*].population.availability.on_s.sd": (WEEK_S, "a week"),
    "devices[*].population.availability.on_s.low": (WEEK_S, "a week"),
    "devices[*].population.availability.on_s.high": (WEEK_S, "a week"),
    "devices[*].population.availability.off_s.median": (WEEK_S, "a week"),
    "devices[*].population.availability.off_s.mean": (WEEK_S, "a week"),
    "devices[*].population.availability.off_s.sd": (WEEK_S, "a week"),
    "devices[*].population.availability.off_s.low": (WEEK_S, "a week"),
    "devices[*].population.availability.off_s.high": (WEEK_S, "a week"),
    "devices[*].population.availability.on_s.sigma": (10.0, "a log-spread of e^10"),
    "devices[*].population.availability.off_s.sigma": (10.0, "a log-spread of e^10"),
    "devices[*].link.uplink_queue.packets": (1_000_000, "a million packets"),
    "devices[*].link.uplink_queue.bytes": (1 << 30, "1 GiB"),
    "devices[*].link.uplink_cellreplay.long_to_short_ms": (600_000.0, "10 minutes"),
    "devices[*].link.downlink_queue.packets": (1_000_000, "a million packets"),
    "devices[*].link.downlink_queue.bytes": (1 << 30, "1 GiB"),
    "devices[*].link.downlink_cellreplay.long_to_short_ms": (600_000.0, "10 minutes"),
    "networks.*.uplink_queue.packets": (1_000_000, "a million packets"),
    "networks.*.uplink_queue.bytes": (1 << 30, "1 GiB"),
    "networks.*.uplink_cellreplay.long_to_short_ms": (600_000.0, "10 minutes"),
    "networks.*.downlink_queue.packets": (1_000_000, "a million packets"),
    "networks.*.downlink_queue.bytes": (1 << 30, "1 GiB"),
    "networks.*.downlink_cellreplay.long_to_short_ms": (600_000.0, "10 minutes"),
    "networks.*.radio.tail[*].cycle_ms": (600_000.0, "10 minutes"),
    "networks.*.radio.tail[*].on_ms": (600_000.0, "10 minutes"),
    "networks.*.radio.tail[*].promotion_ms": (600_000.0, "10 minutes"),
    "networks.*.radio.tail[*].promotion_mw": (1e6, "1 kW"),
    "networks.*.radio.idle.cycle_ms": (600_000.0, "10 minutes"),
    "networks.*.radio.idle.on_ms": (600_000.0, "10 minutes"),
    "faults[*].at_s": (2 * WEEK_S, "warm-up + duration"),
    "faults[*].duration_s": (2 * WEEK_S, "warm-up + duration"),
    "faults[*].devices[*]": (MAX_DEVICES, "the largest device id"),
    "faults[*].replica": (MAX_REPLICAS, "the largest replica index"),
    "faults[*].pool": (MAX_POOLS, "the largest pool index"),
}
# Numbers whose range the schema already closes (a percentage, a fraction, a JPEG quality, a zstd level)
CLOSED = ("loss_pct", "loss_good", "loss_bad", "p_good_bad", "p_bad_good",
          "speed", "zstd_level", "jpeg_quality", "input_size", "test_fraction", "shift_px",
          "distill_weight", "rate_factor")
LENGTHS: dict[str, int] = {"devices": 1_000, "networks": 1_000, "device_classes": 1_000, "faults": 1_000,
                           "references": 1_000, "train.channels": 64, "train.codecs": 3, "strategies": 64,
                           "policy.cuts": 64, "networks.*.radio.tail": 64, "faults[*].devices": MAX_DEVICES,
                           "faults[*].strategies": 64, "cloud.resources": 64, "pools.resources": 64}
MAX_TEXT_CHARS = 4_096  # any string: names, paths, sources
FREE_KEYS = ("networks", "device_classes", "resources")  # mappings whose keys the user names


def image_dir_problems(folder: str) -> list[str]:
    """What is wrong under model.image_dir: image files that are not regular files within MAX_IMAGE_BYTES, or
    more than MAX_IMAGE_FILES entries (the walk stops there, so a huge tree cannot keep validation busy)."""
    out: list[str] = []
    seen = 0
    pending = [folder]
    while pending:
        try:
            entries = list(os.scandir(pending.pop()))
        except OSError as e:
            out.append(f"cannot list {e.filename}: {e.strerror}")
            continue
        for entry in entries:
            seen += 1
            if seen > MAX_IMAGE_FILES:
                return out + [f"more than {MAX_IMAGE_FILES} entries; allowed: at most {MAX_IMAGE_FILES}"]
            if entry.is_dir(follow_symlinks=False):
                pending.append(entry.path)
            elif os.path.splitext(entry.name)[1].lower() in IMAGE_SUFFIXES:
                if problem := file_problem(entry.path, MAX_IMAGE_BYTES):
                    out.append(f"{entry.path}: {problem}")
    return out


# ---------------------------------------------------------------- numbers
def topology_problems(topo: Any) -> list[tuple[str, str, Any]]:
    """(key path, what is allowed, value) for every number, list or text beyond its bound, then the totals
    that follow from them (devices, pools, planned requests). `topo` is a validated Topology."""
    out: list[tuple[str, str, Any]] = []
    for parts, pattern, value in _leaves(topo.model_dump(), (), ()):
        key = format_key_path(parts)
        if isinstance(value, list | dict):
            limit = LENGTHS.get(pattern)
            if limit is not None and len(value) > limit:
                out.append((key, f"{len(value)} entries; allowed: at most {limit}", f"<{len(value)} entries>"))
        elif isinstance(value, str):
            if len(value) > MAX_TEXT_CHARS:
                out.append((key, f"{len(value)} characters; allowed: at most {MAX_TEXT_CHARS} characters",
                            value[:40] + "..."))
        elif isinstance(value, int | float) and not isinstance(value, bool):
            if isinstance(value, float) and not math.isfinite(value):
                out.append((key, "allowed: a finite number", value))
            elif pattern in LIMITS and abs(value) > LIMITS[pattern][0]:
                bound, why = LIMITS[pattern]
                out.append((key, f"too large; allowed: at most {bound:g} ({why})", value))
    return out or _total_problems(topo)


def _leaves(node: Any, parts: tuple[Any, ...], pattern: tuple[str, ...]) -> Any:
    """(key parts, pattern, value) for every node; list indices become [*] and user-named keys * in the
    pattern. Lists and mappings are yielded too (for their length)."""
    if parts:
        yield parts, _pattern(pattern), node
    if isinstance(node, dict):
        free = bool(parts) and parts[-1] in FREE_KEYS
        for k, v in node.items():
            yield from _leaves(v, (*parts, k), (*pattern, "*" if free else str(k)))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _leaves(v, (*parts, i), (*pattern, "[*]"))


def _pattern(pattern: tuple[str, ...]) -> str:
    out = ""
    for p in pattern:
        out += p if p == "[*]" else (f".{p}" if out else p)
    return out


def _total_problems(topo: Any) -> list[tuple[str, str, Any]]:
    """Bounds on what the numbers add up to."""
    out: list[tuple[str, str, Any]] = []
    n = topo.device_count
    if n > MAX_DEVICES:
        out.append(("devices", f"{n} devices in all; allowed: at most {MAX_DEVICES} (a /16 subnet)", n))
        return out
    pools = -(-n // topo.pools.devices_per_pool)
    if pools > MAX_POOLS:
        out.append(("pools.devices_per_pool", f"{n} devices make {pools} pools; allowed: at most {MAX_POOLS} "
                    f"pools (one process each): at least {-(-n // MAX_POOLS)} devices per pool",
                    topo.pools.devices_per_pool))
    horizon = topo.warmup_s + topo.duration_s
    planned = len(topo.strategies) * horizon * sum(g.count * g.arrival.rate_hz for g in topo.devices)
    if planned > MAX_PLANNED_REQUESTS:
        out.append(("duration_s", f"plans {planned:.3g} requests (devices x rate_hz x (warmup_s + duration_s) x "
                    f"strategies); allowed: at most {MAX_PLANNED_REQUESTS:,}, one record each in the driver",
                    topo.duration_s))
    return out
