"""Results folders for report tests, without running anything: plausible synthetic rows in the real columns
(testbed.results.metrics), written through the real writers (testbed.results.folder), with the summary computed
by the real metrics path. Seconds to build, where a real run takes a minute."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

from testbed.results.folder import RunFolder
from testbed.results.metrics import ENERGY_PARTS, LOAD_COLUMNS, new_record, ratios, summarize_strategies

RADIO_PARTS = tuple(f"energy_{p}_mj" for p in ENERGY_PARTS[1:])


def _request(rng: random.Random, strategy: str, t: float, warmup_s: float, i: int, emu_wait: bool) -> dict[str, Any]:
    head = 75.0 if strategy == "butterfly" else 0.0
    up = 40.0 if strategy == "butterfly" else 60.0
    parts = {"emu_wait_ms": rng.uniform(1, 5) if emu_wait else 0.0, "head_ms": head + rng.uniform(0, 5),
             "encode_ms": rng.uniform(0.5, 1.5), "uplink_ms": up + rng.uniform(0, 30), "queue_ms": rng.uniform(0, 20),
             "cloud_ms": rng.uniform(45, 60), "downlink_ms": rng.uniform(30, 40)}
    compute, radio = head * 3.0, up * 2.0
    status = "completed" if i % 17 else "timed_out"
    done = status == "completed"
    return new_record(
        strategy=strategy, phase="warmup" if t < warmup_s else "measure", device_id=i % 5, group="lte", request_id=i,
        t_arrival_s=round(t, 4), status=status, reason=None if done else "no answer within request_timeout_s=20",
        bytes_up=3700 if strategy == "butterfly" else 15800, bytes_down=270,
        **{k: (round(v, 3) if done else None) for k, v in parts.items()},
        server_ms=parts["queue_ms"] + parts["cloud_ms"] if done else None,
        e2e_ms=round(sum(parts.values()), 3) if done else None,
        energy_mj=compute + radio if done else None, energy_compute_mj=compute if done else None,
        energy_radio_mj=radio if done else None, replica=0, batch_size=1, uplink_ideal_ms=up,
        uplink_error_ms=rng.uniform(0, 2), lost_packets=0, top1=568)


def make_run(folder: Path, strategies: tuple[str, ...] = ("butterfly", "cloud_only"), per_strategy: int = 40,
             duration_s: float = 8.0, warmup_s: float = 1.0, faults: list[dict[str, Any]] | None = None,
             radio_parts: bool = False, emu_wait: bool = True, status: str = "complete", seed: int = 0) -> Path:
    """A run's folder: requests.csv, server_load.csv, summary.json. `radio_parts` fills the finer radio
    energy columns (transfer, promotion, tail); without it they are empty, as in an older run's folder."""
    rng = random.Random(seed)
    out = RunFolder(folder)
    records: list[dict[str, Any]] = []
    load: list[dict[str, Any]] = []
    for strategy in strategies:
        times = sorted(rng.uniform(0, warmup_s + duration_s) for _ in range(per_strategy))
        records += [_request(rng, strategy, t, warmup_s, len(records) + i, emu_wait) for i, t in enumerate(times)]
        load += [dict.fromkeys(LOAD_COLUMNS) | {
            "strategy": strategy, "replica": 0, "t_s": 0.5 * (k + 1), "arrivals_per_s": rng.uniform(0, 6),
            "completed_per_s": rng.uniform(0, 6), "queue_depth": rng.randint(0, 3), "in_flight": rng.randint(0, 3),
            "batch_size": 1.0, "busy_fraction": rng.uniform(0, 0.5), "rejected": 0, "cpu_percent": rng.uniform(0, 50),
            "rss_mb": 860.0} for k in range(int(2 * (warmup_s + duration_s)))]
    if radio_parts:
        for r in records:
            radio = r["energy_radio_mj"]
            r.update(zip(RADIO_PARTS, (None,) * 3 if radio is None else (radio * 0.6, radio * 0.1, radio * 0.3),
                         strict=True))
    out.requests.append(records)
    out.server_load.append(load)
    out.close()
    per = summarize_strategies(records, dict.fromkeys(strategies, duration_s))
    out.write_summary(summary(folder.name, strategies, per, duration_s, warmup_s, faults, status, load))
    return folder


def summary(name: str, strategies: tuple[str, ...], per: dict[str, Any], duration_s: float, warmup_s: float,
            faults: list[dict[str, Any]] | None, status: str, load: list[dict[str, Any]]) -> dict[str, Any]:
    s: dict[str, Any] = {
        "status": status, "partial": status != "complete", "error": None, "started_at": "2026-01-01T00:00:00+00:00",
        "wall_s": 30.0, "topology_file": f"topologies/{name}.yaml",
        "topology": {"name": name, "description": "synthetic", "duration_s": duration_s, "warmup_s": warmup_s,
                     "strategies": list(strategies), "devices": [{"count": 5}]},
        "host": {"cpu_model": "Test CPU", "cpus": 2}, "ray": {"node_ip": "127.0.0.1"},
        "backends": {"link": "userspace shaper (synthetic)", "link_backend": {"name": "userspace", "netem": False},
                     "cpu": "time-scaled (synthetic)", "cpu_mechanism": "timescale",
                     "cloud_device": ["Test CPU (cpu)"]},
        "phases_done": list(strategies), "strategies": per, "comparison": ratios(per),
        "replicas": [{"replica": 0, "device": "cpu", "requests": 80, "completed": 78, "rejected": 0,
                      "mean_batch_size": 1.02, "batch_histogram": {"1": 77, "2": 1}, "busy_fraction_of_run": 0.21,
                      "max_queue_depth": 3}],
        "server_busy_by_strategy": {st: 0.2 for st in strategies},
        "fidelity": {"uplink_vs_configured_pct": {"p50": 2.0, "p95": 30.0, "n": 70}, "uplink_error_ms_p95": 1.5,
                     "emu_wait_ms_p95": 4.0, "note": "synthetic"},
    }
    if faults is not None:
        s["faults"] = faults
    return s


def write_summary_only(folder: Path, data: Any) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "summary.json").write_text(json.dumps(data))
    return folder
