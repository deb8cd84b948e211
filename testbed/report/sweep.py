"""Parameter sweeps: `run.py TOPOLOGY --sweep devices.count=10,50,100,200`.

Each value is one complete run (its own output folder, its own Ray), so points do
not share warm state. Every point is validated before the first one starts. The
table (`sweep.csv`, appended after each point) and the plot (`sweep.png`) show
throughput, p50/p99 latency, rejections and server busy fraction against the
swept value. The saturation point is marked: the first value at which a strategy
no longer keeps up with the offered load. A point counts as saturated when
requests are rejected or time out, fewer than 95% of them complete, the server
is busy 90% of the time or more, or the median latency has more than doubled
from the sweep's first point. Throughput alone cannot show it, because a queue
that drains after the window still completes every request.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

from testbed.config.schema import Topology
from testbed.report import htmlkit
from testbed.results.folder import CsvLog
from testbed.results.summary_view import SummaryView

SWEEP_COLUMNS = ("value", "strategy", "offered_rps", "throughput_rps", "completed_fraction", "p50_ms", "p99_ms",
                 "rejected", "timed_out", "server_busy_fraction", "saturated")
KEEP_UP = 0.95  # completed / requests below this: saturated
BUSY = 0.9  # server busy fraction at or above this: saturated
LATENCY_GROWTH = 2.0  # p50 above this multiple of the first point's p50: saturated


def offered_rps(topo: Topology) -> float:
    return sum(g.count * g.arrival.rate_hz for g in topo.devices)


def point_rows(value: str, topo: Topology, summary: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    offered = offered_rps(topo)
    v = SummaryView.of(summary)
    for name, st in v.strategies.items():
        reasons = st["failure_reasons"]
        rejected = sum(n for r, n in reasons.items() if r and r.startswith("queue_full"))
        done = st["by_status"]["completed"]
        fraction = done / st["requests"] if st["requests"] else math.nan
        busy = v.server_busy_by_strategy.get(name)
        rows.append({
            "value": value, "strategy": name, "offered_rps": round(offered, 3),
            "throughput_rps": st["throughput_rps"], "completed_fraction": round(fraction, 4),
            "p50_ms": st["latency_ms"]["p50"], "p99_ms": st["latency_ms"]["p99"], "rejected": rejected,
            "timed_out": st["by_status"]["timed_out"],
            "server_busy_fraction": busy,
            "saturated": bool(not fraction >= KEEP_UP or rejected or st["by_status"]["timed_out"]
                              or (busy is not None and busy >= BUSY)),
        })
    return rows


def saturation_points(rows: list[dict[str, Any]]) -> dict[str, str | None]:
    """Per strategy, the first swept value at which it was saturated (None: it kept up throughout)."""
    out: dict[str, str | None] = {}
    first_p50: dict[str, float] = {}
    for r in rows:
        s = r["strategy"]
        out.setdefault(s, None)
        first_p50.setdefault(s, float(r["p50_ms"]))
        slow = float(r["p50_ms"]) > LATENCY_GROWTH * first_p50[s]
        if (r["saturated"] or slow) and out[s] is None:
            out[s] = r["value"]
    return out


def folder_name(key: str, value: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.=-]", "_", f"{key}={value}")


class SweepTable:
    """sweep.csv, flushed after every point (results.CsvLog), and its rows kept for the plot."""

    def __init__(self, path: Path):
        self._log = CsvLog(path, SWEEP_COLUMNS)
        self.rows: list[dict[str, Any]] = []

    def append(self, rows: list[dict[str, Any]]) -> None:
        self._log.append(rows)
        self.rows += rows

    def close(self) -> None:
        self._log.close()


def plot(rows: list[dict[str, Any]], key: str, path: Path) -> Path:
    return htmlkit.save(figure(rows, key), path, dpi=110)


def figure(rows: list[dict[str, Any]], key: str) -> Any:
    """Throughput, p50/p99 latency and server busy fraction against the swept value (a matplotlib Figure)."""
    plt = htmlkit.pyplot()
    sat = saturation_points(rows)
    fig, axes = plt.subplots(2, 2, figsize=(11, 7), sharex=True)
    panels = [("throughput_rps", "throughput (req/s)"), ("p50_ms", "p50 latency (ms)"),
              ("p99_ms", "p99 latency (ms)"), ("server_busy_fraction", "server busy fraction")]
    xs_all = _x_values(rows)
    for ax, (col, label) in zip(axes.flat, panels, strict=True):
        for strategy in dict.fromkeys(r["strategy"] for r in rows):
            pts = [(xs_all[r["value"]], r[col]) for r in rows if r["strategy"] == strategy and r[col] is not None]
            if pts:
                line = ax.plot(*zip(*pts, strict=True), marker="o", label=strategy)[0]
                first = sat.get(strategy)
                if first is not None:
                    ax.axvline(xs_all[first], color=line.get_color(), linestyle=":", alpha=0.7)
        if col == "throughput_rps":
            offered = sorted({(xs_all[r["value"]], r["offered_rps"]) for r in rows})
            ax.plot(*zip(*offered, strict=True), color="grey", linestyle="--", label="offered")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    for ax in axes[1]:
        ax.set_xlabel(key)
    axes[0][0].legend(fontsize=8)
    fig.suptitle(f"sweep over {key} (dotted: first saturated value)")
    fig.tight_layout()
    return fig


def _x_values(rows: list[dict[str, Any]]) -> dict[str, float]:
    """Numeric x positions for the swept values (their rank where they are not numbers)."""
    values = list(dict.fromkeys(r["value"] for r in rows))
    try:
        return {v: float(v) for v in values}
    except ValueError:
        return {v: float(i) for i, v in enumerate(values)}
