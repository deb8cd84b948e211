"""`run.py compare DIR1 DIR2 ...`: several finished runs side by side, from their summary.json files.

Per run and strategy: completed requests, p50/p95/p99 end-to-end latency,
mean device energy, throughput and bytes up. It prints the table and writes
`compare.png` and a self-contained `compare.html` into `--out`, by default the
first DIR's parent folder (where runs usually sit side by side, e.g.
`results/`). Each run is labelled by its folder name. A DIR that is not a run's
results folder stops it with exit status 2 before anything is written.
"""

from __future__ import annotations

import argparse
import html
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from testbed.report import htmlkit
from testbed.report.numbers import fmt
from testbed.results.folder import read_summary
from testbed.results.summary_view import SummaryView

# (row key, column title, digits, panel title); the table and the plot show the same figures
METRICS = (
    ("completed", "done", 0, "completed requests"),
    ("p50_ms", "p50 ms", 1, "p50 latency (ms)"),
    ("p95_ms", "p95 ms", 1, "p95 latency (ms)"),
    ("p99_ms", "p99 ms", 1, "p99 latency (ms)"),
    ("energy_mj", "energy mJ", 1, "mean device energy (mJ)"),
    ("throughput_rps", "req/s", 2, "throughput (req/s)"),
    ("kb_up", "KB up", 1, "mean bytes up (KB)"),
)


class CompareError(Exception):
    """A DIR that cannot be compared; the message names it."""


@dataclass(frozen=True)
class Run:
    label: str
    path: Path
    summary: dict[str, Any]


def load_runs(dirs: list[Path]) -> list[Run]:
    summaries = [(d, _summary(d)) for d in dirs]
    names = [d.resolve().name for d in dirs]
    return [Run(name if names.count(name) == 1 else str(d), d, s)
            for name, (d, s) in zip(names, summaries, strict=True)]


def _summary(folder: Path) -> dict[str, Any]:
    try:
        summary = read_summary(folder, "strategies")
    except ValueError as e:
        raise CompareError(str(e)) from None
    if summary is None:
        raise CompareError(f"{folder}: no summary.json (not a splitbed run's results folder)")
    return summary


def rows(runs: list[Run]) -> list[dict[str, Any]]:
    """One row per run and strategy, in METRICS' keys (None where the run has no figure)."""
    out = []
    for run in runs:
        view = SummaryView.of(run.summary)
        for strategy, st in view.strategies.items():
            lat = st.get("latency_ms", {})
            up = st.get("bytes_up_mean")
            out.append({"run": run.label, "strategy": strategy, "status": view.status,
                        "completed": st.get("by_status", {}).get("completed"), "p50_ms": lat.get("p50"),
                        "p95_ms": lat.get("p95"), "p99_ms": lat.get("p99"), "energy_mj": st.get("energy_mj_mean"),
                        "throughput_rps": st.get("throughput_rps"), "kb_up": up / 1000 if up is not None else None})
    return out


def _cells(row: dict[str, Any]) -> list[str]:
    return [row["run"], row["strategy"], *(fmt(row[k], digits) if digits else fmt(row[k])
                                           for k, _, digits, _ in METRICS)]


def print_table(table_rows: list[dict[str, Any]], console: Console) -> None:
    t = Table(title="runs side by side (measured requests)")
    t.add_column("run")
    t.add_column("strategy")
    for _, title, _, _ in METRICS:
        t.add_column(title, justify="right")
    for r in table_rows:
        t.add_row(*_cells(r))
    console.print(t)


def figure(table_rows: list[dict[str, Any]]) -> Any:
    """One panel per metric: strategies on x, one bar per run."""
    plt = htmlkit.pyplot()
    runs = list(dict.fromkeys(r["run"] for r in table_rows))
    strategies = list(dict.fromkeys(r["strategy"] for r in table_rows))
    by = {(r["run"], r["strategy"]): r for r in table_rows}
    fig, axes = plt.subplots(2, 4, figsize=(15, 7))
    width = 0.8 / max(1, len(runs))
    for ax, (key, _, _, title) in zip(axes.flat, METRICS, strict=False):
        for i, run in enumerate(runs):
            xs = [j + (i - (len(runs) - 1) / 2) * width for j in range(len(strategies))]
            ys = [(by.get((run, s)) or {}).get(key) for s in strategies]
            ax.bar([x for x, y in zip(xs, ys, strict=True) if y is not None], [y for y in ys if y is not None],
                   width=width, label=run, color=f"C{i % 10}")
        ax.set_xticks(range(len(strategies)), strategies, fontsize=8)
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3, axis="y")
    legend = axes.flat[-1]
    legend.axis("off")
    legend.legend(*axes.flat[0].get_legend_handles_labels(), loc="center", fontsize=9, title="run")
    fig.tight_layout()
    return fig


def write(runs: list[Run], table_rows: list[dict[str, Any]], out: Path) -> tuple[Path, Path]:
    """compare.png and compare.html (the PNG embedded, the table, links to each run's report)."""
    out.mkdir(parents=True, exist_ok=True)
    png = htmlkit.save(figure(table_rows), out / "compare.png")
    header = ["run", "strategy", *(title for _, title, _, _ in METRICS)]
    links = "".join(f'<li>{html.escape(r.label)} ({html.escape(str(SummaryView.of(r.summary).status))}): '
                    f'<a href="{html.escape(_rel(r.path / "report.html", out))}">{html.escape(str(r.path))}</a></li>'
                    for r in runs)
    body = (htmlkit.figure(png.read_bytes(), "per strategy, one bar per run", "compare")
            + htmlkit.table(header, [_cells(r) for r in table_rows]) + f"<ul>{links}</ul>")
    page = out / "compare.html"
    page.write_text(htmlkit.page(f"splitbed: {len(runs)} runs compared", body))
    return png, page


def _rel(target: Path, start: Path) -> str:
    try:
        return os.path.relpath(target.resolve(), start.resolve())
    except ValueError:  # another drive (Windows)
        return str(target.resolve())


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="run.py compare", description="Compare finished runs side by side.")
    p.add_argument("dirs", nargs="+", type=Path, metavar="DIR", help="a run's results folder (holds summary.json)")
    p.add_argument("--out", type=Path, help="where compare.png and compare.html go (default: the first DIR's parent)")
    args = p.parse_args(argv)
    try:
        runs = load_runs(args.dirs)
    except CompareError as e:
        print(f"run.py compare: {e}", file=sys.stderr)
        return 2
    table_rows = rows(runs)
    console = Console()
    if not console.is_terminal:
        console = Console(width=140)
    print_table(table_rows, console)
    png, page = write(runs, table_rows, args.out or args.dirs[0].resolve().parent)
    print(f"compare: {png}, {page}")
    return 0
