"""summary.json's `hardware` section: per device class and per replica, how its compute was emulated and why,
and whether this host kept up with the profile (when it did not, that part of the result is the host's)."""

from __future__ import annotations

from typing import Any

OVERRUN_TOLERANCE = 1.02  # a device's head time more than 2% over its profile's: the host did not keep up
EMU_WAIT_WARN_MS = 10.0  # a profiled device that waited longer than this for its pool's executor: host overloaded


def hardware_summary(topo: Any, pools: list[dict[str, Any]], replicas: list[dict[str, Any]],
                     replica_stats: list[dict[str, Any]], records: list[dict[str, Any]]) -> dict[str, Any]:
    classes: dict[str, dict[str, Any]] = {}
    for p in pools:
        for cls, m in (p.get("device_mechanisms") or {}).items():
            classes.setdefault(cls, m)
    for g in topo.devices:
        dc = topo.device_classes.get(g.device_class)
        if dc is not None and dc.hardware is None:
            classes.setdefault(g.device_class, {"mechanism": topo.throttling.cpu, "profile": None,
                                                "why": "no hardware profile: speed relative to this host"})
    warnings = _device_warnings(topo, classes, records)
    reps: dict[str, dict[str, Any]] = {}
    stats = {s["replica"]: s for s in replica_stats}
    for r in replicas:
        st = stats.get(r["replica"], {})
        compute = r.get("compute", "real")
        entry = {"mechanism": compute, "profile": (r.get("hardware") or {}).get("profile"),
                 "why": {"profile": "cloud.hardware: batch times from the profile, answers real",
                         "replay": "cloud.compute replay: host-calibrated time / replay_speed, no model run",
                         }.get(compute, f"real model on this host's {r.get('device', '?')}"),
                 "latency_by_batch": (r.get("hardware") or {}).get("latency_by_batch"),
                 "measured_batch_ms": r.get("measured_batch_ms")}
        if "overrun_batches" in st:
            entry.update(overrun_batches=st["overrun_batches"], max_overrun_ms=st["max_overrun_ms"],
                         host_kept_up=st["host_kept_up"])
            if st["overrun_batches"]:
                warnings.append(f"replica {r['replica']}: {st['overrun_batches']} batches took longer than the "
                                f"profile's time (up to {st['max_overrun_ms']:.1f} ms over): the host did not keep "
                                f"up; those answers are late ({st.get('computed_on_arrival', 0)} payloads were not "
                                "computed ahead and were computed on arrival)")
        reps[f"replica{r['replica']}"] = entry
    return {"device_classes": classes, "replicas": reps, "warnings": warnings}


def _device_warnings(topo: Any, classes: dict[str, dict[str, Any]], records: list[dict[str, Any]]) -> list[str]:
    """Profiled, time-scaled device classes whose real compute overran the profile's time."""
    by_group = {g.name or f"group{i}": g.device_class for i, g in enumerate(topo.devices)}
    out = []
    for cls, m in classes.items():
        if not m.get("profile"):
            continue
        cuts = m.get("cuts") or {}
        mine = [r for r in records if by_group.get(r["group"]) == cls and r.get("phase") != "warmup"]
        late = [r for r in mine if r.get("cut") in cuts and r.get("head_ms") is not None
                and r["head_ms"] > OVERRUN_TOLERANCE * cuts[r["cut"]]["profile_ms"]]
        waited = [r for r in mine if (r.get("emu_wait_ms") or 0.0) > EMU_WAIT_WARN_MS]
        m["overrun_requests"], m["emu_wait_requests"] = len(late), len(waited)
        if late:
            out.append(f"device class {cls}: {len(late)} requests' head took longer than the profile's time "
                       "(the host did not keep up; those head times are the host's)")
        if waited:
            out.append(f"device class {cls}: {len(waited)} requests waited over {EMU_WAIT_WARN_MS:g} ms for the "
                       "pool's executor before their compute (the host was overloaded; their latency includes it)")
    return out
