"""Injected faults: which apply to a phase, whom they hit and when, and how they are counted.

Pure functions of the topology (no Ray, no torch), so the driver, the device pools, the summary and the
tests agree on one schedule. Times are seconds from the start of a phase (warm-up included), the axis of
`t_arrival_s` in requests.csv and of the report's time plots.

- `link_outage` / `link_degrade`: the targeted devices' links carry nothing / `rate_factor` of their
  capacity for `duration_s` (the one userspace shaper does it: `LinkShaper.set_faults`).
- `device_leave`: the targeted devices generate no frames for `duration_s`, then rejoin. Frames they
  would have generated in the window do not exist (there is no record for them); requests already in
  flight when they leave finish normally.
- `replica_kill`: the driver kills the replica's actor; devices fail over to the other replicas (a request
  in flight on it is retried once elsewhere if its deadline allows, else recorded as failed naming the
  replica). With `duration_s` a new replica is started after it; either way one is in place for the next phase.
- `pool_kill`: the driver kills the pool's actor. Every frame its devices would have generated in the
  phase that has no record from the pool is recorded by the driver as failed, with a reason saying whether
  it was in flight (or not yet collected) when the pool died or arrived after. A new pool replaces it for
  the next phase.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from testbed.config.schema import Fault, Topology
from testbed.plan.devices import arrivals, device_table
from testbed.results.metrics import STATUSES, new_record

LINK_KINDS = ("link_outage", "link_degrade")


@dataclass(frozen=True)
class Window:
    name: str
    kind: str
    start_s: float
    end_s: float
    target: str
    devices: frozenset[int] | None  # None: every device (a replica's loss reaches all of them)
    fault: Fault

    def hits(self, device_id: int, t_s: float) -> bool:
        return self.start_s <= t_s < self.end_s and (self.devices is None or device_id in self.devices)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "start_s": self.start_s, "end_s": self.end_s,
                "target": self.target}


def horizon_s(topo: Topology) -> float:
    return topo.warmup_s + topo.duration_s


def windows(topo: Topology, strategy: str) -> list[Window]:
    """The faults of one strategy's phase, as windows on the phase's clock (builds the device table: call it once
    per phase, not per device)."""
    if not topo.faults:
        return []
    groups: dict[str, set[int]] = {}
    for spec in device_table(topo):
        groups.setdefault(spec.group, set()).add(spec.device_id)
    slices = topo.pool_slices()
    out = []
    for f in topo.faults:
        if f.strategies is not None and strategy not in f.strategies:
            continue
        end = min(horizon_s(topo), f.at_s + f.duration_s) if f.duration_s is not None else horizon_s(topo)
        devices: frozenset[int] | None
        if f.kind == "replica_kill":
            target, devices = f"replica {f.replica}", None
        elif f.kind == "pool_kill":
            target, devices = f"pool {f.pool}", frozenset(slices[f.pool or 0])
        elif f.group is not None:
            target, devices = f"group {f.group}", frozenset(groups[f.group])
        else:
            target, devices = f"devices {f.devices}", frozenset(f.devices or ())
        out.append(Window(f.name or f"{f.kind}@{f.at_s:g}s", f.kind, f.at_s, end, target, devices, f))
    return out


def link_windows(topo: Topology, strategy: str, device_id: int, direction: str,
                 wins: list[Window] | None = None) -> list[tuple[float, float, float]]:
    """(start_s, end_s, capacity factor) of one device's link direction ('uplink' | 'downlink') in a phase;
    `wins`: the phase's windows() where the caller has them (a pool asks for every device)."""
    return [(w.start_s, w.end_s, 0.0 if w.kind == "link_outage" else float(w.fault.rate_factor or 1.0))
            for w in (windows(topo, strategy) if wins is None else wins)
            if w.kind in LINK_KINDS and w.fault.direction in ("both", direction) and w.hits(device_id, w.start_s)]


def absent(wins: Iterable[Window], device_id: int, t_s: float,
           offline_s: tuple[tuple[float, float], ...] = ()) -> bool:
    """Whether a device has left (device_leave) at t_s, or is offline then in its population's on/off intervals:
    it generates no frame then."""
    return (any(a <= t_s < b for a, b in offline_s)
            or any(w.kind == "device_leave" and w.hits(device_id, t_s) for w in wins))


def planned_arrivals(topo: Topology, strategy: str, phase: int, device_ids: Iterable[int]) -> list[tuple[int, float]]:
    """(device_id, t_s) of every frame the devices generate in the phase: devices.arrivals within the phase,
    minus those inside the device's own device_leave windows. The pools generate exactly these."""
    specs = device_table(topo)
    wins = windows(topo, strategy)
    out = []
    for d in device_ids:
        for t in arrivals(specs[d].arrival, d, phase):
            if t >= horizon_s(topo):
                break
            if not absent(wins, d, t, specs[d].offline_s):
                out.append((d, t))
    return out


def lost_pool_records(topo: Topology, strategy: str, phase: int, pool: int, killed_at_s: float,
                      recorded: set[tuple[int, float]]) -> list[dict[str, Any]]:
    """A failed record for each frame of a killed pool's devices that the pool never reported."""
    specs = device_table(topo)
    ids = topo.pool_slices()[pool]
    out = []
    for d, t in planned_arrivals(topo, strategy, phase, ids):
        if (d, round(t, 4)) in recorded:
            continue
        when = "in flight or not yet collected" if t < killed_at_s else "arrived after it"
        out.append(new_record(strategy=strategy, phase="warmup" if t < topo.warmup_s else "measure", device_id=d,
                              group=specs[d].group, t_arrival_s=round(t, 4), status="failed",
                              reason=f"device pool {pool} killed at {killed_at_s:.3f} s ({when})"))
    return out


def summarize(topo: Topology, records: Iterable[dict[str, Any]]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """summary["faults"]: each window (the report shades start_s..end_s) with its records' counts by status per
    strategy; and the 'no fault' baseline: the records of each strategy outside every window of its phase.
    Warm-up records count too: windows are on the phase's clock."""
    names: dict[str, dict[str, Any]] = {}
    baseline: dict[str, dict[str, int]] = {}
    per_strategy = {s: windows(topo, s) for s in topo.strategies}
    for s, wins in per_strategy.items():
        for w in wins:
            entry = names.setdefault(w.name, {**w.to_dict(), "strategies": [], "counts": {}})
            entry["strategies"].append(s)
            entry["counts"][s] = dict.fromkeys(STATUSES, 0)
    for r in records:
        s = r["strategy"]
        hit = False
        for w in per_strategy.get(s, []):
            if w.hits(int(r["device_id"]), float(r["t_arrival_s"])):
                names[w.name]["counts"][s][r["status"]] += 1
                hit = True
        if not hit:
            baseline.setdefault(s, dict.fromkeys(STATUSES, 0))[r["status"]] += 1
    return list(names.values()), baseline


def mechanism(topo: Topology, link_backend: str) -> str:
    """How this run applies its faults, in words (printed at start, kept in summary.json)."""
    kinds = {f.kind for f in topo.faults}
    out = []
    if kinds & set(LINK_KINDS):
        out.append("link faults: windows of the userspace shaper on both sides of each link" + (
            " (under tc: an outage holds the bytes in front of the kernel's tbf; a degradation sets the tbf rate at "
            "the window's edges, by the driver within its poll latency, traced links excepted)"
            if link_backend == "tc" else ""))
    if "device_leave" in kinds:
        out.append("device churn: a device generates no frames while it has left")
    if kinds & {"replica_kill", "pool_kill"}:
        out.append("kills: ray.kill by the driver at at_s; replacements started by the driver")
    return "; ".join(out)


def fault_summary(topo: Topology, records: Iterable[dict[str, Any]], events: list[dict[str, Any]],
                  failover: dict[str, Any], link_backend: str) -> dict[str, Any]:
    """The summary.json keys of faults (empty where the topology has none)."""
    if not topo.faults:
        return {"faults": []}
    wins, baseline = summarize(topo, records)
    return {"faults": wins, "fault_baseline": baseline, "fault_events": events, "failover": failover,
            "fault_mechanism": mechanism(topo, link_backend)}
