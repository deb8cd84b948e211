"""The plot of split policies over time: which cut each request used, and what the device believed.

One panel per policy that used more than one cut (best_static, dynamic), on each phase's
own clock: every request is a dot at its arrival time on its cut's row, and the devices'
uplink estimate at decision time is drawn over it, so a switch of cut can be read against
the bandwidth that caused it.
"""

from __future__ import annotations

from typing import Any

from testbed.domain.split_policy import CUT_ORDER
from testbed.report import htmlkit


def _rank(cut: str, order: tuple[str, ...] = CUT_ORDER) -> tuple[int, str]:
    """Device-side depth: cloud_only at the bottom, device_only at the top, the cuts in catalogue order."""
    base = cut.split("+")[0]
    return (order.index(base) if base in order else len(order), cut)


def cuts_figure(records: list[dict[str, Any]], strategies: list[str], catalogue: list[str] | None = None) -> Any:
    """None when no policy used more than one cut. `catalogue`: the model's cut names in graph order."""
    order = ("cloud_only", *[c for c in catalogue if c != "input"], "device_only") if catalogue else CUT_ORDER
    used = {s: [r for r in records if r["strategy"] == s and r.get("cut")] for s in strategies}
    adaptive = {s: rows for s, rows in used.items() if len({r["cut"] for r in rows}) > 1}
    if not adaptive:
        return None
    fig, axes = htmlkit.pyplot().subplots(len(adaptive), 1, figsize=(10, 2.8 * len(adaptive) + 0.6),
                                          sharex=True, squeeze=False)
    for ax, (name, rows) in zip(axes[:, 0], adaptive.items(), strict=True):
        cuts = sorted({r["cut"] for r in rows}, key=lambda c: _rank(c, order))
        for i, cut in enumerate(cuts):
            pts = [(float(r["t_arrival_s"]), i) for r in rows if r["cut"] == cut]
            ax.scatter(*zip(*pts, strict=True), s=10, color=f"C{i}", label=f"{cut} ({len(pts)})")
        ax.set_yticks(range(len(cuts)), cuts)
        ax.set_ylim(-0.5, len(cuts) - 0.5)
        ax.set_title(f"{name}: cut per request", fontsize=10)
        ax.grid(alpha=0.3)
        est = sorted((float(r["t_arrival_s"]), float(r["est_uplink_mbps"])) for r in rows
                     if r.get("est_uplink_mbps") not in (None, ""))
        if est:
            twin = ax.twinx()
            twin.plot(*zip(*est, strict=True), color="black", linewidth=0.8, alpha=0.6, label="uplink estimate")
            twin.set_yscale("log")
            twin.set_ylabel("estimated uplink (Mbit/s)", fontsize=8)
            twin.legend(fontsize=7, loc="upper right")
        ax.legend(fontsize=7, loc="upper left")
    axes[-1, 0].set_xlabel("seconds since the phase began")
    fig.tight_layout()
    return fig
