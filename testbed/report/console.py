"""The console summary printed when a run ends, from the same summary.json data."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

from testbed.report.numbers import fmt
from testbed.report.reproduction import print_reproduction
from testbed.results.metrics import BREAKDOWN_KEYS, ENERGY_PARTS, STATUSES
from testbed.results.summary_view import SummaryView

SUMMARY_COLUMNS = ("strategy", "done", "failed", "timed out", "p50 ms", "p95 ms", "p99 ms", "mean ms", "req/s",
                   "energy mJ", "KB up")


def print_summary(summary: dict[str, Any], out_dir: str, console: Console | None = None) -> None:
    console = console or Console()
    v = SummaryView.of(summary)
    topo = v.topology
    t = Table(title=f"{v.name}: {sum(g['count'] for g in topo['devices'])} devices, "
                    f"{topo['duration_s']:g} s measured per strategy ({v.status})")
    for col in SUMMARY_COLUMNS:
        t.add_column(col, justify="right" if col != "strategy" else "left")
    for row in strategy_rows(summary):
        t.add_row(*row)
    console.print(t)
    _print_breakdown(summary, console)
    _print_energy(summary, console)
    if v.faults:
        _print_faults(v, console)
    if topo.get("references") or len(v.groups) > 1:

        print_reproduction(summary, console)
    for pair, r in v.comparison.items():
        console.print(f"{pair}: latency p50 x{fmt(r['latency_p50'], 2)}, mean x{fmt(r['latency_mean'], 2)}; "
                      f"energy x{fmt(r['energy_mean'], 2)}; bytes up x{fmt(r['bytes_up_mean'], 1)}  "
                      "(>1: the second strategy is better)")
    for line in cut_lines(summary):
        console.print(line)
    for rep in v.replicas:
        console.print(f"replica {rep['replica']} ({rep['device']}): {rep['completed']} requests, mean batch "
                      f"{rep['mean_batch_size']:.2f}, busy {rep['busy_fraction_of_run']:.0%} of the run, "
                      f"max queue {rep['max_queue_depth']}, rejected {rep['rejected']}"
                      + (f", refused frames {rep['refused']}" if rep.get("refused") else ""))
    _print_mechanisms(v, console)
    if tl := v.timeline_s:
        names = {"ray_ready_s": "Ray ready", "actors_ready_s": "actors ready", "first_answer_s": "first answer"}
        console.print("start-up (s after the command started): "
                      + ", ".join(f"{label} {tl[k]:.1f}" for k, label in names.items() if k in tl))
    console.print(f"results: {out_dir}/ (report.html, summary.json, requests.csv, server_load.csv, "
                  "server_load.html)")


def _print_mechanisms(v: SummaryView, console: Console) -> None:
    """How links, compute and hardware were emulated, and how well the emulation kept its promises."""
    fid = v.fidelity
    console.print(f"link: {v.link_text}")
    console.print(f"cpu: {v.cpu_text}")
    if v.event_loops:
        console.print(f"event loop: {', '.join(v.event_loops)} (RAY_USE_UVLOOP=0 for asyncio)")
    hw = v.hardware
    for name, m in {**hw.get("device_classes", {}), **hw.get("replicas", {})}.items():
        if m.get("profile"):
            console.print(f"hardware: {name}: {m['why']}")
    for w in hw.get("warnings", []):
        console.print(f"[bold yellow]warning:[/bold yellow] {w}")
    vs = fid["uplink_vs_configured_pct"]
    console.print(f"fidelity: uplink vs configured link {fmt(vs['p50'], 2)}% (p50), {fmt(vs['p95'], 2)}% (p95); "
                  f"shaper write error p95 {fmt(fid['uplink_error_ms_p95'], 2)} ms; "
                  f"pool executor wait p95 {fmt(fid['emu_wait_ms_p95'], 2)} ms")


def strategy_rows(summary: dict[str, Any]) -> list[list[str]]:
    """One formatted row per strategy, in SUMMARY_COLUMNS order (the console table and report.html)."""
    rows = []
    for name, st in SummaryView.of(summary).strategies.items():
        lat, by = st["latency_ms"], st["by_status"]
        rows.append([name, str(by["completed"]), str(by["failed"]), str(by["timed_out"]), fmt(lat["p50"]),
                     fmt(lat["p95"]), fmt(lat["p99"]), fmt(lat["mean"]), fmt(st["throughput_rps"], 2),
                     fmt(st["energy_mj_mean"]),
                     fmt((st["bytes_up_mean"] or 0) / 1000 if st["bytes_up_mean"] else None)])
    return rows


def cut_lines(summary: dict[str, Any]) -> list[str]:
    """Which cuts each split policy used, and how well the adaptive ones predicted their latency."""
    lines = []
    for name, st in SummaryView.of(summary).strategies.items():
        cuts = st.get("cuts") or {}
        pred = st.get("prediction_error_pct") or {}
        if len(cuts) < 2 and not pred.get("n"):
            continue
        total = sum(cuts.values())
        shares = ", ".join(f"{c} {n / total:.0%}" for c, n in sorted(cuts.items(), key=lambda kv: -kv[1]))
        line = f"{name}: cuts {shares}"
        if pred.get("n"):
            line += (f"; measured vs predicted latency {fmt(pred['p50'], 1)}% (p50), "
                     f"|error| p95 {fmt(pred['p95_abs'], 1)}%")
        lines.append(line)
    return lines


def breakdown_rows(summary: dict[str, Any]) -> list[list[str]]:
    """Mean breakdown per strategy, in BREAKDOWN_KEYS order."""
    return [[name, *(fmt(st["breakdown_ms_mean"][k]) for k in BREAKDOWN_KEYS)]
            for name, st in SummaryView.of(summary).strategies.items()]


def _print_energy(summary: dict[str, Any], console: Console) -> None:
    keys = ENERGY_PARTS
    t = Table(title="mean device energy breakdown (mJ, completed requests; tail shared between close requests)")
    t.add_column("strategy")
    for k in (*keys, "total"):
        t.add_column(k, justify="right")
    for name, st in SummaryView.of(summary).strategies.items():
        b = st.get("energy_breakdown_mj_mean") or {}
        t.add_row(name, *(fmt(b.get(k)) for k in keys), fmt(st["energy_mj_mean"]))
    console.print(t)


def _print_breakdown(summary: dict[str, Any], console: Console) -> None:
    t = Table(title="mean latency breakdown (ms, completed requests)")
    t.add_column("strategy")
    for k in BREAKDOWN_KEYS:
        t.add_column(k.removesuffix("_ms"), justify="right")
    for row in breakdown_rows(summary):
        t.add_row(*row)
    console.print(t)


def _print_faults(v: SummaryView, console: Console) -> None:
    """Per fault window and strategy: completed / failed / timed out; the last row is the no-fault baseline."""
    strategies = v.strategy_names
    t = Table(title="faults (requests arriving in each window, warm-up included: completed / failed / timed out)")
    for col in ("fault", "kind", "target", "window s", *strategies):
        t.add_column(col, justify="left" if col in ("fault", "kind", "target") else "right")

    def cell(counts: dict[str, int] | None) -> str:
        return "-" if counts is None else " / ".join(str(counts.get(k, 0)) for k in STATUSES)

    for w in v.faults:
        t.add_row(w["name"], w["kind"], w["target"], f"{w['start_s']:g}-{w['end_s']:g}",
                  *(cell(w["counts"].get(s)) for s in strategies))
    t.add_row("no fault", "", "", "rest", *(cell(v.fault_baseline.get(s)) for s in strategies))
    console.print(t)
    for strategy, pools in v.failover.items():
        moves = ", ".join(f"{p}: {v['reconnects']} reconnects, {v['retries']} retries" for p, v in pools.items())
        console.print(f"fail-over after {strategy} (per pool, cumulative): {moves}")
