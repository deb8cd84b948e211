"""The paper-form comparison: per network, each strategy's latency and mobile energy against cloud_only.

The butterfly-unit paper (Eshratifar et al., ISQED 2019) and BottleNet (ISLPED 2019) report,
per network (3G, 4G, WiFi), end-to-end latency and mobile energy of a split DNN as improvement
factors over cloud-only inference. This module builds the same table from a run's summary
(one device group per network), prints it beside the published headlines the topology lists
under `references:`, and explains, from this run's own measurements, where and why the
figures differ. Energy is given twice: with this testbed's full model (promotion and tail
included) and with the papers' model (compute + transfer only).
"""

from __future__ import annotations

import math
from typing import Any

from rich.table import Table

from testbed.report.numbers import fmt
from testbed.results.metrics import ratio
from testbed.results.summary_view import SummaryView

BASELINE = "cloud_only"


def paper_energy(st: dict[str, Any]) -> float:
    """Energy under the papers' model: compute + transfer, no RRC promotion or tail."""
    b = st.get("energy_breakdown_mj_mean") or {}
    parts = [b.get("compute"), b.get("transfer")]
    known = [float(p) for p in parts if p is not None and not math.isnan(p)]
    return float(sum(known)) if len(known) == len(parts) else math.nan


def accuracy(st: dict[str, Any], by_cut: dict[str, float] | None) -> float:
    """Held-out top-1 of a strategy: its cuts' accuracies (from the trained checkpoint) weighted by how often
    it used each; NaN where a cut has no trained figure (random weights, or a cut training did not measure)."""
    cuts = st.get("cuts") or {}
    if not by_cut or not cuts or any(c not in by_cut for c in cuts):
        return math.nan
    return sum(by_cut[c] * n for c, n in cuts.items()) / sum(cuts.values())


def rows(summary: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per (network group, strategy): means and factors over cloud_only (>1: better than cloud_only)."""
    out = []
    v = SummaryView.of(summary)
    groups = v.groups
    for group in dict.fromkeys([*v.group_order(), *groups]):  # the topology's order, then any other
        per = groups[group]
        base = per.get(BASELINE)
        for strategy, st in per.items():
            if not st["by_status"]["completed"]:
                continue
            row = {"group": group, "strategy": strategy, "latency_ms": st["latency_ms"]["mean"],
                   "energy_mj": st["energy_mj_mean"], "energy_paper_mj": paper_energy(st),
                   "bytes_up": st["bytes_up_mean"], "accuracy": accuracy(st, v.accuracy_by_cut or None),
                   "latency_x": math.nan, "energy_x": math.nan,
                   "energy_paper_x": math.nan}
            if base is not None and base["by_status"]["completed"] and strategy != BASELINE:
                row["latency_x"] = ratio(base["latency_ms"]["mean"], row["latency_ms"])
                row["energy_x"] = ratio(base["energy_mj_mean"], row["energy_mj"])
                row["energy_paper_x"] = ratio(paper_energy(base), row["energy_paper_mj"])
            out.append(row)
    return out


def explanations(summary: dict[str, Any]) -> list[str]:
    """Why the measured factors differ from the papers', each reason with this run's numbers."""
    v = SummaryView.of(summary)
    per = v.strategies
    notes = []
    split = next((s for s in ("butterfly", "split") if s in per and per[s]["by_status"]["completed"]), None)
    if split:
        b = per[split]["breakdown_ms_mean"]
        notes.append(f"device compute: the {split} head took {b['head_ms']:.1f} ms (+{b['encode_ms']:.1f} ms "
                     f"encoding) per frame here ({v.cpu_text}); the papers' mobile platform "
                     "runs it on an embedded GPU; name it with device_classes.<class>.hardware (e.g. jetson_tx2) "
                     "to emulate it at its own speed, faster than this host (the ladder's rung a)")
    if BASELINE in per and per[BASELINE]["by_status"]["completed"]:
        b = per[BASELINE]["breakdown_ms_mean"]
        devices = ", ".join(v.cloud_devices) or "?"
        notes.append(f"cloud compute: the full network took {b['cloud_ms']:.1f} ms per batch on {devices}; "
                     "the papers' cloud is a server GPU")
        if split:
            up_b, up_s = per[BASELINE]["bytes_up_mean"], per[split]["bytes_up_mean"]
            notes.append(f"upload: cloud_only sends a {up_b / 1000:.1f} KB JPEG (quality "
                         f"{v.topology['model']['jpeg_quality']}), {split} {up_s / 1000:.1f} KB "
                         f"({ratio(up_b, up_s):.1f}x less); the bigger the cloud_only upload and the slower "
                         "the link, the larger the latency and energy factors")
        eb = per[BASELINE].get("energy_breakdown_mj_mean") or {}
        radio = sum(eb.get(k) or 0.0 for k in ("transfer", "promotion", "tail"))
        if radio > 0:
            share = ((eb.get("promotion") or 0.0) + (eb.get("tail") or 0.0)) / radio
            notes.append(f"radio tail: RRC promotion and tail are {share:.0%} of cloud_only's radio energy in "
                         "this run; both strategies pay them, which pulls the energy factor towards 1. The "
                         "papers count transfer energy only: see the 'energy x (papers' model)' column")
    return notes


def print_reproduction(summary: dict[str, Any], console: Any) -> None:
    table_rows = rows(summary)
    if not table_rows:
        return
    t = Table(title="per network: mean latency and mobile energy, improvement over cloud_only (>1: better)")
    for col in ("network", "strategy", "latency ms", "latency x", "energy mJ", "energy x",
                "energy mJ (papers' model)", "energy x (papers' model)", "KB up", "top-1"):
        t.add_column(col, justify="left" if col in ("network", "strategy") else "right")
    for r in table_rows:
        t.add_row(r["group"], r["strategy"], fmt(r["latency_ms"]), fmt(r["latency_x"], 2), fmt(r["energy_mj"]),
                  fmt(r["energy_x"], 2), fmt(r["energy_paper_mj"]), fmt(r["energy_paper_x"], 2),
                  fmt((r["bytes_up"] or 0) / 1000 if r["bytes_up"] else None), fmt(r["accuracy"], 3))
    console.print(t)
    v = SummaryView.of(summary)
    if not v.accuracy_by_cut:
        console.print("top-1: - (model.weights is not a checkpoint from `run.py train`, so no trained accuracy)")
    for ref in v.topology.get("references") or []:
        console.print(f"published: {ref['name']}: latency x{fmt(ref.get('latency_x'), 1)}, energy "
                      f"x{fmt(ref.get('energy_x'), 1)} over cloud_only (average over networks)"
                      + (f" [{ref['source']}]" if ref.get("source") else ""))
    for note in explanations(summary):
        console.print(f"why different: {note}")

