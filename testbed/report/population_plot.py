"""report.html's population panel: each completed request's latency against its device's own compute
time and uplink rate (the values a population drew, recorded in every request row)."""

from __future__ import annotations

from typing import Any

from testbed.report import htmlkit
from testbed.results.summary_view import SummaryView

AXES = (("device_full_model_ms", "device compute (ms per full-model inference)"),
        ("device_uplink_kbps", "device uplink (kbit/s)"))


def population_figure(summary: dict[str, Any], measured: list[dict[str, Any]], strategies: list[str]) -> Any:
    """None for a run without a population (every device of a group alike: nothing to plot against)."""
    if not SummaryView.of(summary).device_population:
        return None
    done = [r for r in measured if r["status"] == "completed" and r.get("e2e_ms") is not None]
    if not done:
        return None
    fig, axes = htmlkit.pyplot().subplots(1, 2, figsize=(11, 4.5), sharey=True)
    for ax, (column, label) in zip(axes, AXES, strict=True):
        for i, s in enumerate(strategies):
            pts = [(float(r[column]), float(r["e2e_ms"])) for r in done if r["strategy"] == s and r.get(column)]
            if pts:
                ax.scatter(*zip(*pts, strict=True), s=8, alpha=0.5, color=f"C{i % 10}", label=s)
        ax.set_xlabel(label)
        ax.set_xscale("log")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("e2e latency (ms)")
    for ax in axes:  # the first panel with points (a population may draw only rates or only availability)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
            break
    fig.tight_layout()
    return fig
