"""Running an assumption ladder (testbed.report.ladder): each rung a complete run, then the table, plot and report."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.console import Console

from testbed.config.errors import ConfigError
from testbed.config.loading import load_topology
from testbed.config.variants import load_rungs
from testbed.report import htmlkit, ladder
from testbed.report.html_report import write_report
from testbed.results.folder import CsvLog


def run_ladder(topology_file: str, overrides: list[str], out: Path, err: Any, only: list[str] | None,
               run: Callable[..., int]) -> int:
    """`run(topo, file, folder, err, quiet=True)` per rung; 2 on a bad rung before anything runs."""
    try:
        rungs = load_rungs(topology_file, overrides, only)
    except ConfigError as e:
        print(f"invalid ladder:\n{e}", file=sys.stderr)
        return 2
    base = load_topology(topology_file, overrides)
    out.mkdir(parents=True, exist_ok=True)
    log = CsvLog(out / "ladder.csv", ladder.COLUMNS)
    table: list[dict[str, Any]] = []
    status = "complete"
    try:
        for name, topo in rungs:
            err.print(f"[bold]ladder rung {name}[/bold]: {_description(base, name)}")
            code = run(topo, topology_file, out / name, err, quiet=True)
            if code != 0:
                status = "failed" if code != 130 else "interrupted"
                return code
            rung_rows = ladder.rows(name, json.loads((out / name / "summary.json").read_text()))
            log.append(rung_rows)
            table += rung_rows
    finally:
        log.close()
        _write(out, base, table, status)
    _print(out, table, base)
    return 0


def _description(topo: Any, name: str) -> str:
    return next((r.description for r in topo.ladder if r.name == name), "")


def _write(out: Path, topo: Any, table: list[dict[str, Any]], status: str) -> None:
    (out / "summary.json").write_text(json.dumps(ladder.summary(topo, table, status), indent=2, default=str))
    if table:
        htmlkit.save(ladder.figure(table), out / "ladder.png", dpi=110)
    write_report(out)


def _print(out: Path, table: list[dict[str, Any]], topo: Any) -> None:
    console = Console()
    if not console.is_terminal:
        console = Console(width=160)
    ladder.print_table(table, console)
    for ref in topo.references:  # the published headlines, beside the rungs' means
        console.print(f"published: {ref.name}: latency x{ref.latency_x}, energy x{ref.energy_x} over cloud_only "
                      f"(average over networks) [{ref.source}]")
    console.print(f"ladder: {out}/ (ladder.csv, ladder.png, summary.json, report.html; one folder per rung)")
