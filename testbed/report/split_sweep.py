"""The split-point sweep (Neurosurgeon-style): latency and energy of every cut, per network.

`run.py TOPOLOGY --sweep model.split=layer1,layer2,layer3,layer4` runs once per cut. With
the `split` strategy beside `butterfly`, each cut is measured with and without the butterfly
unit; cloud_only and device_only are the two ends. This module turns the points' summaries
into `splits.csv` (one row per cut, network and strategy) and `splits.png` (latency and
energy against the cut, one panel pair per network).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from testbed.report.numbers import fmt
from testbed.report.reproduction import paper_energy
from testbed.results.folder import CsvLog
from testbed.results.summary_view import SummaryView

SPLIT_COLUMNS = ("cut", "network", "strategy", "completed", "latency_mean_ms", "latency_p50_ms", "energy_mean_mj",
                 "energy_papers_model_mj", "bytes_up_mean")


def cut_rows(cut: str, summary: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for network, per in SummaryView.of(summary).groups.items():
        for strategy, st in per.items():
            rows.append({"cut": cut, "network": network, "strategy": strategy,
                         "completed": st["by_status"]["completed"], "latency_mean_ms": st["latency_ms"]["mean"],
                         "latency_p50_ms": st["latency_ms"]["p50"], "energy_mean_mj": st["energy_mj_mean"],
                         "energy_papers_model_mj": paper_energy(st), "bytes_up_mean": st["bytes_up_mean"]})
    return rows


def write(rows: list[dict[str, Any]], out: Path) -> tuple[Path, Path]:
    log = CsvLog(out / "splits.csv", SPLIT_COLUMNS)
    log.append(rows)
    log.close()
    return out / "splits.csv", plot(rows, out / "splits.png")


def plot(rows: list[dict[str, Any]], path: Path) -> Path:
    import matplotlib  # matplotlib: only when a figure is drawn

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # matplotlib: only when a figure is drawn

    cuts = list(dict.fromkeys(r["cut"] for r in rows))
    networks = list(dict.fromkeys(r["network"] for r in rows))
    fig, axes = plt.subplots(2, len(networks), figsize=(4.5 * len(networks), 7), squeeze=False)
    for col, network in enumerate(networks):
        for row, (key, label) in enumerate((("latency_mean_ms", "mean latency (ms)"),
                                            ("energy_mean_mj", "mean device energy (mJ)"))):
            ax = axes[row][col]
            for strategy in dict.fromkeys(r["strategy"] for r in rows):
                pts = [(cuts.index(r["cut"]), r[key]) for r in rows
                       if r["network"] == network and r["strategy"] == strategy and r[key] is not None]
                if not pts:
                    continue
                if strategy in ("cloud_only", "device_only"):  # the same at every cut: a reference line
                    mean = sum(v for _, v in pts) / len(pts)
                    ax.axhline(mean, linestyle="--", alpha=0.7, label=strategy,
                               color="grey" if strategy == "cloud_only" else "black")
                else:
                    ax.plot(*zip(*pts, strict=True), marker="o", label=strategy)
            ax.set_xticks(range(len(cuts)), cuts)
            ax.set_ylabel(label)
            ax.set_title(network if row == 0 else "")
            ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.suptitle("split-point sweep: each cut with (butterfly) and without (split) the butterfly unit")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def print_table(rows: list[dict[str, Any]]) -> None:
    print(f"{'cut':<8}{'network':<9}{'strategy':<13}{'done':>6}{'mean ms':>10}{'p50 ms':>9}{'energy mJ':>11}"
          f"{'papers mJ':>11}{'KB up':>8}")
    for r in sorted(rows, key=lambda r: (r["network"], r["strategy"], r["cut"])):
        print(f"{r['cut']:<8}{r['network']:<9}{r['strategy']:<13}{r['completed']:>6}{fmt(r['latency_mean_ms']):>10}"
              f"{fmt(r['latency_p50_ms']):>9}{fmt(r['energy_mean_mj']):>11}{fmt(r['energy_papers_model_mj']):>11}"
              f"{fmt((r['bytes_up_mean'] or 0) / 1000 if r['bytes_up_mean'] else None):>8}")
