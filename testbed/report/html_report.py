"""report.html: one self-contained page per results folder, built only from the files in it.

It is rebuilt from `summary.json`, `requests.csv`, `server_load.csv` (a run) or
`sweep.csv` (a sweep's parent folder), never from the driver's memory, so
`run.py report DIR` gives the same page for an old or interrupted run as the
run itself wrote at its end. A panel whose data is missing is left out, so a
partial folder still gets a page.

Time plots use each phase's own clock: `t_arrival_s` is seconds since the phase
began. Fault windows in summary.json (`faults: [{name, start_s, end_s}]`) are
read on that same axis.
"""

from __future__ import annotations

import html
import math
from collections import Counter
from pathlib import Path
from typing import Any

from testbed.report import console as report
from testbed.report import htmlkit, load_report, policy_plot, population_plot, sweep
from testbed.report.ladder import read_ladder, report_html
from testbed.report.numbers import fmt
from testbed.results.folder import read_rows, read_summary
from testbed.results.metrics import ENERGY_PARTS
from testbed.results.summary_view import SummaryView

REPORT_NAME = "report.html"
# metrics.BREAKDOWN_KEYS grouped for the stacked bars (head and encode share a bar); tests check it covers them all
STAGES = (("emu_wait", ("emu_wait_ms",)), ("head + encode", ("head_ms", "encode_ms")), ("uplink", ("uplink_ms",)),
          ("queue", ("queue_ms",)), ("cloud", ("cloud_ms",)), ("downlink", ("downlink_ms",)))
RADIO_PARTS = tuple(f"energy_{p}_mj" for p in ENERGY_PARTS[1:])  # finer radio energy, where recorded
MECHANISM_KEYS = ("backends", "fidelity", "faults", "fault_baseline", "fault_events", "fault_mechanism", "failover",
                  "cpu_caps", "calibration_host_ms", "link_check")
HOST_KEYS = ("host", "ray", "placement")


class ReportError(Exception):
    """The folder holds nothing a report can be built from."""


def write_report(folder: Path, sweep_key: str | None = None) -> Path:
    """Build folder/report.html from the files in folder; returns its path."""
    folder = Path(folder)

    if (ladder := read_ladder(folder)) is not None:  # an assumption ladder's folder
        path = folder / REPORT_NAME
        path.write_text(htmlkit.page(f"splitbed ladder: {ladder['topology']} ({ladder['status']})",
                                     report_html(ladder, folder)))
        return path
    summary = _read_summary(folder)
    sweep_rows = read_rows(folder / "sweep.csv")
    if summary is None and not sweep_rows:
        raise ReportError(f"{folder}: no summary.json or sweep.csv here (not a splitbed results folder)")
    parts: list[str] = []
    if summary is not None:
        parts += _run_sections(folder, summary)
    if sweep_rows:
        parts.append(_sweep_section(folder, sweep_rows, sweep_key or _sweep_key(folder)))
    view = SummaryView.of(summary) if summary else None
    title = f"splitbed: {view.name} ({view.status})" if view else f"splitbed sweep: {folder}"
    path = folder / REPORT_NAME
    path.write_text(htmlkit.page(title, "".join(parts)))
    return path


def _read_summary(folder: Path) -> dict[str, Any] | None:
    try:
        return read_summary(folder, "topology")
    except ValueError as e:
        raise ReportError(str(e)) from None


def _run_sections(folder: Path, summary: dict[str, Any]) -> list[str]:
    v = SummaryView.of(summary)
    topo = v.topology
    records = read_rows(folder / "requests.csv")
    load = read_rows(folder / "server_load.csv")
    facts = {"status": v.status, "error": v.error, "started_at": v.started_at,
             "wall_s": v.wall_s, "topology_file": v.topology_file,
             "description": topo.get("description"), "measured per strategy (s)": topo.get("duration_s"),
             "warm-up per strategy (s)": topo.get("warmup_s")}
    out = [htmlkit.kv_table({k: v for k, v in facts.items() if v not in (None, "")})]
    if v.strategies:
        out.append("<h2>Per strategy (measured requests)</h2>"
                   + htmlkit.table(list(report.SUMMARY_COLUMNS), report.strategy_rows(summary)))
        if v.comparison:
            out.append(htmlkit.table(["baseline/strategy (>1: strategy better)", "latency p50", "latency mean",
                                      "energy", "bytes up"],
                                     [[pair, *(fmt(r.get(k), 2) for k in ("latency_p50", "latency_mean",
                                                                                  "energy_mean", "bytes_up_mean"))]
                                      for pair, r in v.comparison.items()]))
    plots = [p for p in run_figures(summary, records) if p[2] is not None]
    out.append("<h2>Plots</h2>" + "".join(htmlkit.figure(htmlkit.png(fig), caption, name)
                                          for name, caption, fig in plots))
    if load:
        out.append("<h2>Server load</h2>" + load_report.replica_table(summary) + "".join(
            htmlkit.figure(htmlkit.png(load_report.phase_figure(records, load, s)), f"{s}: device latency and "
                           "server load per replica", f"server_load_{s}")
            for s in dict.fromkeys(r["strategy"] for r in load)))
    out.append("<h2>Mechanisms</h2>" + htmlkit.kv_table(v.present(MECHANISM_KEYS)))
    out.append("<h2>Host</h2>" + htmlkit.kv_table(v.present(HOST_KEYS)))
    return out


def run_figures(summary: dict[str, Any], records: list[dict[str, Any]]) -> list[tuple[str, str, Any]]:
    """The run's plots as (name, caption, matplotlib figure or None where its data is missing): report.html
    draws these, and testbed.api hands them to a notebook."""
    measured = [r for r in records if r.get("phase") == "measure"]
    v = SummaryView.of(summary)
    strategies = list(dict.fromkeys([*v.strategies, *(r["strategy"] for r in records)]))
    topo = v.topology
    return [
        ("latency_cdf", "End-to-end latency CDF (completed, measured requests)", _cdf_figure(measured, strategies)),
        ("breakdown", "Mean latency breakdown (completed, measured requests)", _breakdown_figure(measured, strategies)),
        ("over_time", "Throughput and latency over each phase" + (" (shaded: faults)" if v.faults else ""),
         _time_figure(records, strategies, topo.get("warmup_s") or 0, v.faults)),
        ("energy", "Mean device energy per request", _energy_figure(measured, strategies)),
        ("cuts", "Split policies: the cut each request used, and the devices' uplink estimate",
         policy_plot.cuts_figure(records, strategies, [r["cut"] for r in v.split_catalogue])),
        ("population", "Latency against each device's own compute time and uplink (device population)",
         population_plot.population_figure(summary, measured, strategies)),
    ]


def _completed(records: list[dict[str, Any]], strategy: str) -> list[dict[str, Any]]:
    return [r for r in records if r["strategy"] == strategy and r["status"] == "completed" and r["e2e_ms"] is not None]


def _mean(records: list[dict[str, Any]], column: str, empty: float = 0.0) -> float:
    """Mean over the rows that have the column; `empty` where none has it (0 for a stage a strategy skips,
    NaN for an energy part the model could not estimate, which is then left out of the bar, not drawn as 0)."""
    values = [float(r[column]) for r in records if r.get(column) is not None]
    return sum(values) / len(values) if values else empty


def _cdf_figure(measured: list[dict[str, Any]], strategies: list[str]) -> Any:
    series = {s: sorted(float(r["e2e_ms"]) for r in _completed(measured, s)) for s in strategies}
    if not any(series.values()):
        return None
    fig, ax = htmlkit.pyplot().subplots(figsize=(9, 4.5))
    for s, xs in series.items():
        if xs:
            ax.step(xs, [(i + 1) / len(xs) for i in range(len(xs))], where="post", label=f"{s} (n={len(xs)})")
    ax.set_xlabel("end-to-end latency (ms)")
    ax.set_ylabel("fraction of requests")
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def _stacked_bars(parts: dict[str, dict[str, float]], ylabel: str, title: str) -> Any:
    """parts: strategy -> {segment: mean}; one bar per strategy, segments stacked in order."""
    fig, ax = htmlkit.pyplot().subplots(figsize=(9, 4.5))
    names = list(parts)
    bottoms = [0.0] * len(names)
    for segment in dict.fromkeys(k for p in parts.values() for k in p):
        heights = [parts[n].get(segment, 0.0) for n in names]
        ax.bar(names, heights, bottom=bottoms, label=segment)  # a NaN height draws nothing
        bottoms = [b + (0.0 if math.isnan(h) else h) for b, h in zip(bottoms, heights, strict=True)]
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def _breakdown_figure(measured: list[dict[str, Any]], strategies: list[str]) -> Any:
    done = {s: rows for s in strategies if (rows := _completed(measured, s))}
    if not done:
        return None
    parts = {s: {label: sum(_mean(rows, c) for c in cols) for label, cols in STAGES} for s, rows in done.items()}
    if not any(p["emu_wait"] > 0 for p in parts.values()):
        for p in parts.values():
            del p["emu_wait"]
    return _stacked_bars(parts, "mean latency (ms)", "where the time goes")


def _energy_figure(measured: list[dict[str, Any]], strategies: list[str]) -> Any:
    done = {s: rows for s in strategies if (rows := _completed(measured, s))}
    if not done:
        return None
    recorded = {c for rows in done.values() for r in rows for c in RADIO_PARTS if r.get(c) is not None}
    radio = [c for c in RADIO_PARTS if c in recorded] or ["energy_radio_mj"]  # the finer parts sum to the radio
    parts = {s: {c.removeprefix("energy_").removesuffix("_mj"): _mean(rows, c, math.nan)
                 for c in ("energy_compute_mj", *radio)} for s, rows in done.items()}
    return _stacked_bars(parts, "mean energy per request (mJ)",
                         "device energy: compute vs radio (unknown parts left out)")


def _time_figure(records: list[dict[str, Any]], strategies: list[str], warmup_s: float,
                 faults: list[dict[str, Any]]) -> Any:
    done = {s: rows for s in strategies if (rows := _completed(records, s))}
    if not done:
        return None
    fig, (top, bottom) = htmlkit.pyplot().subplots(2, 1, figsize=(10, 6.5), sharex=True)
    for i, (s, rows) in enumerate(done.items()):
        colour = f"C{i % 10}"
        finished = Counter(math.floor(float(r["t_arrival_s"]) + float(r["e2e_ms"]) / 1000) for r in rows)
        seconds = range(max(finished) + 1)
        top.step(list(seconds), [finished.get(t, 0) for t in seconds], where="post", color=colour, label=s)
        lat = sorted((float(r["t_arrival_s"]), float(r["e2e_ms"])) for r in rows)
        bottom.scatter(*zip(*lat, strict=True), s=6, alpha=0.35, color=colour)
        bottom.plot(*zip(*load_report.rolling_median(lat), strict=True), color=colour, label=f"{s} rolling median")
    for ax in (top, bottom):
        if warmup_s:
            ax.axvline(warmup_s, color="grey", linestyle="--", linewidth=1)
        for f in faults:
            ax.axvspan(float(f["start_s"]), float(f["end_s"]), color="red", alpha=0.15)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    for f in faults:
        top.annotate(str(f.get("name", "fault")), (float(f["start_s"]), 1), xycoords=("data", "axes fraction"),
                     va="top", fontsize=8, color="darkred")
    top.set_ylabel("completed per second")
    bottom.set_ylabel("e2e latency (ms)")
    bottom.set_xlabel("seconds since the phase began (dashed: end of warm-up)")
    fig.tight_layout()
    return fig


def _sweep_key(folder: Path) -> str:
    """The swept key, from the point folders' names (`key=value`, made filename-safe by sweep.folder_name)."""
    keys = Counter(p.name.rpartition("=")[0] for p in folder.iterdir() if p.is_dir() and "=" in p.name)
    return keys.most_common(1)[0][0] if keys else "swept value"


def _sweep_section(folder: Path, rows: list[dict[str, Any]], key: str) -> str:
    points = [p for p in sorted(folder.iterdir()) if p.is_dir() and (p / "summary.json").exists()]
    links = "".join(f'<li><a href="{html.escape(p.name)}/{REPORT_NAME}">{html.escape(p.name)}</a></li>'
                    for p in points)
    table = htmlkit.table(["value", *sweep.SWEEP_COLUMNS[1:]],
                          [[r.get(c) for c in sweep.SWEEP_COLUMNS] for r in rows])
    return (f"<h2>Sweep over {html.escape(key)}</h2>"
            + htmlkit.figure(htmlkit.png(sweep.figure(rows, key), dpi=110),
                             f"sweep over {key} (dotted: first saturated value)", "sweep")
            + table + (f"<p>One run per point:</p><ul>{links}</ul>" if links else ""))
