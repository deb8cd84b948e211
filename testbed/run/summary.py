"""summary.json: built by one pure function from the records, the load rows and the run's facts.

`RunFacts` holds what the run knows besides its rows (status, mechanisms, actors' start answers, events);
`build_summary` turns facts and rows into the summary dict, reading nothing else (no clock, no host: the
caller passes the run's wall time and the host's facts), so it can be tested on synthetic rows. The report
modules read the result through `testbed.results.summary_view`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from testbed import __version__
from testbed.config.schema import Topology
from testbed.plan.devices import device_table, device_values, replay_summary, rrc_summary
from testbed.plan.faults import fault_summary
from testbed.report.hardware_report import hardware_summary
from testbed.results.metrics import percentile, ratios, summarize_groups, summarize_strategies
from throttling.cpu import CpuMechanism, choose_cpu
from throttling.links import LinkBackend


@dataclass
class RunFacts:
    """What a run knows besides its records and load rows; all of it lands in summary.json."""
    topo: Topology
    topology_file: str
    started_at: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))
    t0: float = field(default_factory=time.monotonic)
    current_strategy: str | None = None  # the strategy under way (or the last one run)
    strategies_done: list[str] = field(default_factory=list)  # summary.json "phases_done"
    status: str = "running"
    error: str | None = None
    ray_info: dict[str, Any] = field(default_factory=dict)
    replicas: list[dict[str, Any]] = field(default_factory=list)  # each replica's start answer (current one)
    pools: list[dict[str, Any]] = field(default_factory=list)  # each pool's connect answer (current one)
    replica_stats: list[dict[str, Any]] = field(default_factory=list)
    backend: LinkBackend = field(default_factory=lambda: LinkBackend("userspace"))
    link_check: list[dict[str, Any]] = field(default_factory=list)
    cpu: CpuMechanism = field(default_factory=lambda: choose_cpu("timescale", ""))
    fault_events: list[dict[str, Any]] = field(default_factory=list)  # what the fault driver did, and when
    failover: dict[str, Any] = field(default_factory=dict)  # per strategy, per pool: reconnects and retries
    timeline: dict[str, float] = field(default_factory=dict)  # s since the command started (testbed.domain.live)
    deaths: list[dict[str, Any]] = field(default_factory=list)  # actors found dead, not killed by a fault


def busy_by_strategy(load_rows: list[dict[str, Any]]) -> dict[str, float]:
    """Mean busy fraction of the replicas' load samples, per strategy, in the order the strategies appear."""
    by: dict[str, list[float]] = {}
    for row in load_rows:
        by.setdefault(row["strategy"], []).append(row["busy_fraction"])
    return {s: sum(v) / len(v) for s, v in by.items() if v}


def measured_windows_s(facts: RunFacts) -> dict[str, float]:
    """Each strategy's measured window: those done, and the one under way (partial)."""
    topo = facts.topo
    windows: dict[str, float] = {s: topo.duration_s for s in topo.strategies if s in facts.strategies_done}
    if facts.current_strategy in topo.strategies and facts.current_strategy not in windows:
        windows[facts.current_strategy] = topo.duration_s
    return windows


def build_summary(facts: RunFacts, records: list[dict[str, Any]], load_rows: list[dict[str, Any]],
                  wall_s: float, host: dict[str, Any]) -> dict[str, Any]:
    """summary.json from the rows so far and the run's facts; wall_s: seconds since the run began."""
    topo = facts.topo
    windows = measured_windows_s(facts)
    per_strategy = summarize_strategies(records, windows)
    return {
        "splitbed_version": __version__,
        "status": facts.status,
        "partial": facts.status != "complete",
        "error": facts.error,
        "started_at": facts.started_at,
        "wall_s": round(wall_s, 2),
        "timeline_s": facts.timeline,
        "topology_file": facts.topology_file,
        "topology": topo.model_dump(mode="json"),
        "host": host,
        "ray": facts.ray_info,
        **_actors_part(facts, records),
        "phases_done": facts.strategies_done,
        "processes": {"pools": {f"pool{p['pool']}": p.get("pid") for p in facts.pools},
                      "replicas": {f"replica{r['replica']}": r.get("pid") for r in facts.replicas}},
        "deaths": facts.deaths,
        "strategies": per_strategy,
        "comparison": ratios(per_strategy),
        "groups": summarize_groups(records, windows),
        "replicas": [{**s, "busy_fraction_of_run": s["busy_s"] / max(1e-9, wall_s)} for s in facts.replica_stats],
        "server_busy_by_strategy": busy_by_strategy(load_rows),
        "fidelity": fidelity(records),
        "link_check": facts.link_check,
        "rrc": rrc_summary(topo),
        "trace_replay": replay_summary(topo),
        **fault_summary(topo, records, facts.fault_events, facts.failover, facts.backend.name),
    }


def _actors_part(facts: RunFacts, records: list[dict[str, Any]]) -> dict[str, Any]:
    """The mechanisms and what the actors reported at start (in summary.json's key order)."""
    pools, replicas = facts.pools, facts.replicas
    return {
        "backends": {"link": facts.backend.describe(), "link_backend": facts.backend.to_dict(),
                     "cpu": facts.cpu.description, "cpu_mechanism": facts.cpu.name,
                     "cloud_device": sorted({r.get("device_name", "?") + f" ({r.get('device')})" for r in replicas}),
                     "event_loop": sorted({str(r["event_loop"]) for r in replicas if r.get("event_loop")})},
        "placement": {"pools": {f"pool{p['pool']}": p.get("node_id") for p in pools},
                      "replicas": {f"replica{r['replica']}": r.get("node_id") for r in replicas}},
        "calibration_host_ms": {f"pool{p['pool']}": p["calibration_host_ms"] for p in pools},
        "calibration_cloud_ms": {f"replica{r['replica']}": r["cut_cloud_ms"] for r in replicas
                                 if r.get("cut_cloud_ms")},
        "cpu_caps": {f"pool{p['pool']}": p["cpu_caps"] for p in pools if p.get("cpu_caps")},
        "device_speeds": {f"pool{p['pool']}": p.get("device_speeds") for p in pools},
        "device_population": population_summary(facts.topo),
        "hardware": hardware_summary(facts.topo, pools, replicas, facts.replica_stats, records),
        "split_catalogue": replicas[0]["split_catalogue"] if replicas else None,
        "accuracy_by_cut": replicas[0].get("accuracy_by_cut") if replicas else None,
    }


def population_summary(topo: Topology) -> dict[str, Any]:
    """Per group with a population: each device's own compute time and rates (empty without one)."""
    groups = {g.name or f"group{i}": g.population for i, g in enumerate(topo.devices)}
    out: dict[str, Any] = {}
    for spec in device_table(topo) if any(groups.values()) else []:
        if groups.get(spec.group) is not None:
            out.setdefault(spec.group, []).append({"device_id": spec.device_id, **device_values(spec),
                                                   "offline_s": [list(iv) for iv in spec.offline_s]})
    return out


def fidelity(records: list[dict[str, Any]]) -> dict[str, Any]:
    """How well the emulation kept its promises in this run."""
    def p95(key: str) -> float:
        return percentile([float(r[key]) for r in records if r[key] is not None], 95)

    rel = [100 * (float(r["uplink_ms"]) - float(r["uplink_ideal_ms"])) / float(r["uplink_ideal_ms"])
           for r in records if r["status"] == "completed" and r["uplink_ideal_ms"]]
    return {
        "uplink_vs_configured_pct": {"p50": percentile(rel, 50), "p95": percentile(rel, 95), "n": len(rel)},
        "uplink_error_ms_p95": p95("uplink_error_ms"),
        "emu_wait_ms_p95": p95("emu_wait_ms"),
        "note": ("uplink_vs_configured_pct: measured uplink time against bytes/rate + one-way delay of the "
                 "configured link (fixed-rate links; jitter and queueing behind a device's own earlier "
                 "frames widen it); uplink_error_ms: real write of the last byte minus its planned time; "
                 "emu_wait_ms: time a device waited for its pool's shared executor (an emulation "
                 "artefact kept out of device compute time; large values mean the host is overloaded)"),
    }
