"""The assumption ladder: one run per rung, one assumption changed per rung, from the papers' setting to this one.

A topology's `ladder:` lists rungs; each rung adds `set:` overrides to the rungs before it (a later value of a
key replaces an earlier one) and `unset:` drops an earlier rung's override of a key, so the topology's own value
comes back. Every rung is validated before the first runs and is a complete run in its own folder. Per rung
and network the table gives cloud_only's and butterfly's latency and energy, their factors, and the measured
parts that explain a step (bytes up, uplink time, device compute, cloud time): `ladder.csv`, `ladder.png`,
`summary.json` (kind: ladder) and `report.html` in the ladder's folder.
"""

from __future__ import annotations

import html
import json
import math
from pathlib import Path
from typing import Any

from rich.table import Table

from testbed.config.schema import Topology
from testbed.report import htmlkit
from testbed.report.numbers import fmt
from testbed.results.metrics import ratio
from testbed.results.summary_view import SummaryView

BASE, SPLIT = "cloud_only", "butterfly"
COLUMNS = ("rung", "network", "latency_cloud_only_ms", "latency_butterfly_ms", "latency_x", "energy_cloud_only_mj",
           "energy_butterfly_mj", "energy_x", "kb_up_cloud_only", "kb_up_butterfly", "uplink_cloud_only_ms",
           "uplink_butterfly_ms", "head_butterfly_ms", "cloud_cloud_only_ms", "cloud_butterfly_ms")


def rows(rung: str, summary: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per network (device group) of one rung's summary."""
    out = []
    for group, per in SummaryView.of(summary).groups.items():
        base, split = per.get(BASE), per.get(SPLIT)
        if not (base and split and base["by_status"]["completed"] and split["by_status"]["completed"]):
            continue
        bb, sb = base["breakdown_ms_mean"], split["breakdown_ms_mean"]
        out.append({
            "rung": rung, "network": group,
            "latency_cloud_only_ms": base["latency_ms"]["mean"], "latency_butterfly_ms": split["latency_ms"]["mean"],
            "latency_x": ratio(base["latency_ms"]["mean"], split["latency_ms"]["mean"]),
            "energy_cloud_only_mj": base["energy_mj_mean"], "energy_butterfly_mj": split["energy_mj_mean"],
            "energy_x": ratio(base["energy_mj_mean"], split["energy_mj_mean"]),
            "kb_up_cloud_only": base["bytes_up_mean"] / 1000, "kb_up_butterfly": split["bytes_up_mean"] / 1000,
            "uplink_cloud_only_ms": bb["uplink_ms"], "uplink_butterfly_ms": sb["uplink_ms"],
            "head_butterfly_ms": sb["head_ms"], "cloud_cloud_only_ms": bb["cloud_ms"],
            "cloud_butterfly_ms": sb["cloud_ms"],
        })
    return out


def averages(table: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Per rung, the mean latency and energy factors over its networks (the papers average over networks)."""
    out: dict[str, dict[str, float]] = {}
    for rung in dict.fromkeys(r["rung"] for r in table):
        mine = [r for r in table if r["rung"] == rung]
        out[rung] = {k: _mean([r[k] for r in mine]) for k in ("latency_x", "energy_x")}
    return out


def _mean(values: list[Any]) -> float:
    known = [float(v) for v in values if v is not None and not math.isnan(float(v))]
    return sum(known) / len(known) if known else math.nan


def summary(topo: Topology, table: list[dict[str, Any]], status: str) -> dict[str, Any]:
    rungs = [{"name": r.name, "description": r.description, "set": r.set, "unset": r.unset} for r in topo.ladder]
    return {"kind": "ladder", "status": status, "topology": topo.name, "rungs": rungs, "rows": table,
            "averages": averages(table),
            "references": [ref.model_dump() for ref in topo.references]}


def figure(table: list[dict[str, Any]]) -> Any:
    """Latency and energy factors (cloud_only / butterfly) per rung, one line per network, log scale."""
    plt = htmlkit.pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharex=True)
    rungs = list(dict.fromkeys(r["rung"] for r in table))
    for ax, key, label in zip(axes, ("latency_x", "energy_x"), ("latency factor", "energy factor"), strict=True):
        for net in dict.fromkeys(r["network"] for r in table):
            pts = [(rungs.index(r["rung"]), r[key]) for r in table if r["network"] == net and r[key] and r[key] > 0]
            if pts:
                ax.plot(*zip(*pts, strict=True), marker="o", label=net)
        ax.axhline(1.0, color="grey", linestyle="--", linewidth=1)
        ax.set_yscale("log")
        ax.set_xticks(range(len(rungs)), rungs, rotation=20, fontsize=8)
        ax.set_ylabel(f"{label}, cloud_only / butterfly (>1: butterfly better)")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle("assumption ladder: one assumption changed per rung")
    fig.tight_layout()
    return fig


def print_table(table: list[dict[str, Any]], console: Any) -> None:
    t = Table(title="assumption ladder: butterfly against cloud_only per rung and network (x: >1 butterfly better)")
    heads = ("rung", "network", "lat ms co/bf", "lat x", "energy mJ co/bf", "energy x", "KB up co/bf",
             "uplink ms co/bf", "head ms bf", "cloud ms co/bf")
    for h in heads:
        t.add_column(h, justify="left" if h in ("rung", "network") else "right")
    for r in table:
        t.add_row(r["rung"], r["network"], _pair(r, "latency", "ms"), fmt(r["latency_x"], 2), _pair(r, "energy", "mj"),
                  fmt(r["energy_x"], 2), f"{fmt(r['kb_up_cloud_only'])}/{fmt(r['kb_up_butterfly'])}",
                  _pair(r, "uplink", "ms"), fmt(r["head_butterfly_ms"]), _pair(r, "cloud", "ms"))
    console.print(t)
    for rung, avg in averages(table).items():
        console.print(f"ladder {rung}: mean over networks: latency x{fmt(avg['latency_x'], 2)}, "
                      f"energy x{fmt(avg['energy_x'], 2)}")


def _pair(r: dict[str, Any], what: str, unit: str) -> str:
    return f"{fmt(r[f'{what}_cloud_only_{unit}'])}/{fmt(r[f'{what}_butterfly_{unit}'])}"


def read_ladder(folder: Path) -> dict[str, Any] | None:
    """The ladder summary in `folder`, or None where its summary.json is a run's (or absent or unreadable)."""
    try:
        data = json.loads((Path(folder) / "summary.json").read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and data.get("kind") == "ladder" else None


def report_html(data: dict[str, Any], folder: Path) -> str:
    """The ladder's report.html body: its rungs, the table, the plot, a link to each rung's own report."""
    table = data["rows"]
    rungs = "".join(f"<li><a href=\"{html.escape(r['name'])}/report.html\">{html.escape(r['name'])}</a>: "
                    f"{html.escape(r['description'])} <code>{html.escape(' '.join(r['set']))}</code></li>"
                    for r in data["rungs"])
    body = [f"<h2>rungs</h2><ol>{rungs}</ol>"]
    if table:
        body.append(htmlkit.figure(htmlkit.png(figure(table), 110), "latency and energy factors per rung", "ladder"))
        body.append(htmlkit.table(list(COLUMNS), [[_cell(r[c]) for c in COLUMNS] for r in table]))
    return "".join(body)


def _cell(v: Any) -> Any:
    return round(v, 2) if isinstance(v, float) else v
