"""The server-load report: `server_load.html` (self-contained) and one PNG per strategy phase.

Per phase, stacked on one time axis: the devices' end-to-end latency (each
request at its arrival time, with a rolling median), each replica's arrivals and
completions per second, its queue depth, and its busy fraction and CPU use. A
table per replica follows: requests, batch-size histogram, busy fraction, max
queue and rejections. Server samples are placed on the phase's time axis from
the replica's own clock, aligned to the phase's first sample (about +-0.5 s).
"""

from __future__ import annotations

import html
import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any

from testbed.report import htmlkit
from testbed.results.summary_view import SummaryView


def _phase_series(records: list[dict[str, Any]], load: list[dict[str, Any]], strategy: str) -> tuple[Any, Any]:
    lat = sorted((float(r["t_arrival_s"]), float(r["e2e_ms"])) for r in records
                 if r["strategy"] == strategy and r["status"] == "completed")
    rows = [r for r in load if r["strategy"] == strategy]
    by_replica: dict[int, list[dict[str, Any]]] = defaultdict(list)
    if rows:
        t0 = min(float(r["t_s"]) for r in rows) - 0.5
        for r in rows:
            by_replica[int(r["replica"])].append({**r, "t": float(r["t_s"]) - t0})
    return lat, by_replica


def rolling_median(points: list[tuple[float, float]], window: int = 25) -> list[tuple[float, float]]:
    return [(points[i][0], statistics.median(p for _, p in points[max(0, i - window + 1): i + 1]))
            for i in range(len(points))]


def plot_phase(records: list[dict[str, Any]], load: list[dict[str, Any]], strategy: str, path: Path) -> Path:
    return htmlkit.save(phase_figure(records, load, strategy), path)


def phase_figure(records: list[dict[str, Any]], load: list[dict[str, Any]], strategy: str) -> Any:
    """One phase's device latency stacked over each replica's load (a matplotlib Figure)."""
    plt = htmlkit.pyplot()
    lat, by_replica = _phase_series(records, load, strategy)
    fig, axes = plt.subplots(4, 1, figsize=(10, 10), sharex=True)
    if lat:
        axes[0].scatter(*zip(*lat, strict=True), s=6, alpha=0.4, label="request e2e")
        axes[0].plot(*zip(*rolling_median(lat), strict=True), color="black", label="rolling median")
        axes[0].legend(fontsize=8)
    axes[0].set_ylabel("device e2e latency (ms)")
    for replica, rows in sorted(by_replica.items()):
        t, c = [r["t"] for r in rows], f"C{replica % 10}"  # one colour per replica in every panel
        axes[1].plot(t, [r["arrivals_per_s"] for r in rows], color=c, label=f"r{replica} arrivals/s")
        axes[1].plot(t, [r["completed_per_s"] for r in rows], color=c, linestyle="--", label=f"r{replica} completed/s")
        axes[2].plot(t, [r["queue_depth"] for r in rows], color=c, label=f"r{replica}")
        axes[3].plot(t, [r["busy_fraction"] for r in rows], color=c, label=f"r{replica} busy")
        axes[3].plot(t, [(r["cpu_percent"] or 0) / 100 for r in rows], color=c, linestyle=":",
                     label=f"r{replica} CPU/core")
    axes[1].set_ylabel("requests/s")
    axes[2].set_ylabel("queue depth")
    axes[3].set_ylabel("fraction")
    axes[3].set_xlabel(f"seconds since the {strategy} phase began")
    for ax in axes[1:]:
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    for ax in axes:
        ax.grid(alpha=0.3)
    fig.suptitle(f"{strategy}: device latency and server load")
    fig.tight_layout()
    return fig


def replica_table(summary: dict[str, Any]) -> str:
    head = ("<tr><th>replica</th><th>device</th><th>requests</th><th>completed</th><th>rejected</th>"
            "<th>mean batch</th><th>batch histogram</th><th>busy (run)</th><th>max queue</th></tr>")
    rows = "".join(
        f"<tr><td>{r['replica']}</td><td>{html.escape(str(r['device']))}</td><td>{r['requests']}</td>"
        f"<td>{r['completed']}</td><td>{r['rejected']}</td><td>{r['mean_batch_size']:.2f}</td>"
        f"<td>{html.escape(str(r['batch_histogram']))}</td><td>{r['busy_fraction_of_run']:.0%}</td>"
        f"<td>{r['max_queue_depth']}</td></tr>" for r in SummaryView.of(summary).replicas)
    return f"<table>{head}{rows}</table>"


def write_report(out_dir: Path, summary: dict[str, Any], records: list[dict[str, Any]],
                 load: list[dict[str, Any]]) -> Path:
    """Write the PNGs and server_load.html into out_dir; returns the HTML path."""
    v = SummaryView.of(summary)
    sections = []
    for strategy in v.strategies_done or list(dict.fromkeys(r["strategy"] for r in load)):
        png = plot_phase(records, load, strategy, out_dir / f"server_load_{strategy.replace(':', '-')}.png")
        busy = v.server_busy_by_strategy.get(strategy)
        note = f" (mean server busy fraction {busy:.0%})" if busy is not None else ""
        sections.append(f"<h2>{html.escape(strategy)}{note}</h2>"
                        + htmlkit.img(png.read_bytes(), f"{strategy} load", f"server_load_{strategy}"))
    body = (f"<p>{html.escape(v.link_text)}<br>{html.escape(v.cpu_text)}</p>"
            f"{replica_table(summary)}{''.join(sections)}")
    path = out_dir / "server_load.html"
    path.write_text(htmlkit.page(f"Server load: {v.name} ({v.status})", body))
    return path
