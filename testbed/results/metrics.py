"""One metrics path: the request record, and the statistics computed from records.

Device pools create one record per request (every request ends as exactly one:
completed, failed with a reason, or timed_out). The driver writes them to
`requests.csv` as they arrive and computes the summary from the same rows.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Iterable
from typing import Any

from testbed.results.record import COLUMNS, record_row

STATUSES = ("completed", "failed", "timed_out")
ENERGY_PARTS = ("compute", "transfer", "promotion", "tail")  # energy_<part>_mj; the last three are the radio's

REQUEST_COLUMNS = COLUMNS  # the fields of testbed.results.record.RequestRecord, in order

# The parts of e2e_ms, in the order the request goes through them; every report reads them from here
BREAKDOWN_KEYS = ("emu_wait_ms", "head_ms", "encode_ms", "uplink_ms", "queue_ms", "cloud_ms", "downlink_ms")

LOAD_COLUMNS = (
    "strategy", "replica", "t_s", "arrivals_per_s", "completed_per_s", "queue_depth", "in_flight", "batch_size",
    "busy_fraction", "rejected", "refused", "refused_reasons", "cpu_percent", "rss_mb", "gpu_util_percent",
    "gpu_mem_mb",
)


def new_record(**fields: Any) -> dict[str, Any]:
    """A request row with the given fields and every other column empty (testbed.results.record.record_row)."""
    return record_row(**fields)


def percentile(values: list[float], q: float) -> float:
    """Linear-interpolated percentile (numpy's default method), q in [0, 100]."""
    if not values:
        return math.nan
    xs = sorted(values)
    pos = (len(xs) - 1) * q / 100.0
    lo, hi = math.floor(pos), math.ceil(pos)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else math.nan


def strategy_stats(records: Iterable[dict[str, Any]], window_s: float) -> dict[str, Any]:
    """Summary of one strategy's measured (non-warm-up) records."""
    recs = list(records)
    done = [r for r in recs if r["status"] == "completed"]
    e2e = [float(r["e2e_ms"]) for r in done]
    link_errors = [float(r["uplink_error_ms"]) for r in done if r["uplink_error_ms"] is not None]
    reasons = Counter(r["reason"] for r in recs if r["status"] != "completed")

    def mean_of(key: str) -> float:
        return _mean([float(r[key]) for r in done if r[key] is not None])

    return {
        "requests": len(recs),
        "by_status": {s: sum(1 for r in recs if r["status"] == s) for s in STATUSES},
        "failure_reasons": dict(reasons),
        "latency_ms": {
            "p50": percentile(e2e, 50), "p95": percentile(e2e, 95), "p99": percentile(e2e, 99),
            "mean": _mean(e2e), "max": max(e2e) if e2e else math.nan,
        },
        "breakdown_ms_mean": {k: mean_of(k) for k in BREAKDOWN_KEYS},
        "throughput_rps": len(done) / window_s if window_s > 0 else math.nan,
        "energy_mj_mean": mean_of("energy_mj"),
        "energy_compute_mj_mean": mean_of("energy_compute_mj"),
        "energy_radio_mj_mean": mean_of("energy_radio_mj"),
        "energy_breakdown_mj_mean": {k: mean_of(f"energy_{k}_mj") for k in ENERGY_PARTS},
        "bytes_up_mean": mean_of("bytes_up"),
        "bytes_down_mean": mean_of("bytes_down"),
        "uplink_error_ms": {"p50": percentile(link_errors, 50), "p95": percentile(link_errors, 95)},
        "cuts": dict(Counter(r["cut"] for r in recs if r["cut"])),
        "rrc_ms_mean": {k: mean_of(f"rrc_{k}") for k in ("promotion_ms", "drx_ms", "ms")},
        "rrc_states": dict(Counter(r["rrc_state"] for r in recs if r["rrc_state"])),
        "uplink_packets_lost": sum(int(r["lost_packets"] or 0) for r in recs),
        "uplink_queue_drops": sum(int(r["queue_drops"] or 0) for r in recs),
        "prediction_error_pct": _prediction_error(done),
    }


def _prediction_error(done: list[dict[str, Any]]) -> dict[str, float]:
    """How far the split policy's predicted latency was from the measured one: 100 * (measured / predicted - 1)."""
    errors = [100 * (float(r["e2e_ms"]) / float(r["predicted_ms"]) - 1) for r in done if r["predicted_ms"]]
    return {"p50": percentile(errors, 50), "p95_abs": percentile([abs(e) for e in errors], 95), "n": len(errors)}


def summarize_strategies(records: Iterable[dict[str, Any]], windows_s: dict[str, float]) -> dict[str, Any]:
    by_strategy: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in records:
        if r["phase"] == "measure":
            by_strategy[r["strategy"]].append(r)
    return {s: strategy_stats(by_strategy.get(s, []), w) for s, w in windows_s.items()}


def summarize_groups(records: Iterable[dict[str, Any]], windows_s: dict[str, float]) -> dict[str, Any]:
    """Per device group (e.g. one per network), the same statistics as per strategy."""
    by_group: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in records:
        by_group[r["group"]].append(r)
    return {g: summarize_strategies(recs, windows_s) for g, recs in by_group.items()}


def ratios(per_strategy: dict[str, Any], baseline: str = "cloud_only") -> dict[str, Any]:
    """baseline/other for latency and energy: >1 means `other` is better than the baseline."""
    if baseline not in per_strategy:
        return {}
    base = per_strategy[baseline]
    out = {}
    for name, st in per_strategy.items():
        if name == baseline:
            continue
        out[f"{baseline}/{name}"] = {
            "latency_p50": ratio(base["latency_ms"]["p50"], st["latency_ms"]["p50"]),
            "latency_mean": ratio(base["latency_ms"]["mean"], st["latency_ms"]["mean"]),
            "energy_mean": ratio(base["energy_mj_mean"], st["energy_mj_mean"]),
            "bytes_up_mean": ratio(base["bytes_up_mean"], st["bytes_up_mean"]),
        }
    return out


def ratio(a: float | None, b: float | None) -> float:
    """a / b, NaN where either is unknown or b is 0."""
    if b is None or a is None or math.isnan(a) or math.isnan(b) or b == 0:
        return math.nan
    return a / b
