"""The Python API: what `run.py` does, callable from a notebook or a script, with results as pandas.

    import testbed.api as sb
    topo = sb.load_topology("topologies/smoke.yaml", {"duration_s": 4, "strategies": ["butterfly", "cloud_only"]})
    res = sb.run(topo, out="results/smoke-nb")
    res.strategies[["p50_ms", "energy_mj"]]        # one row per strategy
    res.requests.groupby("strategy").e2e_ms.median()  # every request, as in requests.csv

It is the CLI's code path, not a second one: the same loader and overrides (testbed.config.schema), the same
`run_experiment` writing the same results folder, and the same readers the reports use. Errors are
the exceptions the CLI turns into exit status 2: ConfigError for a bad topology or override,
BackendUnavailable / CpuCapUnavailable for a throttling backend this host lacks, ClusterAuthError for a
cluster that refused this driver's Ray token, ReportError for a
folder that holds no results. A run's progress is printed through rich, which writes to a terminal
and to a Jupyter cell alike.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from rich.console import Console

from testbed.config.errors import ConfigError
from testbed.config.loading import load_topology as _load_file
from testbed.config.loading import topology_from_dict
from testbed.config.schema import RaySpec, Topology
from testbed.model.check import check_model
from testbed.report import compare as cmp
from testbed.report.html_report import (
    ReportError,
    run_figures,
)
from testbed.results.folder import OutputError, prepare_out, read_rows, read_summary
from testbed.results.summary_view import SummaryView
from testbed.run.experiment import run_experiment
from testbed.run.progress import Progress
from testbed.run.ray_runtime import ClusterAuthError

__all__ = ["ClusterAuthError", "ConfigError", "OutputError",
           "ReportError", "Results", "StrategySummary", "Summary", "compare",
           "load_topology", "open_results", "run"]

Overrides = Mapping[str, Any] | list[str] | tuple[str, ...]  # {key.path: value} or ["key.path=value", ...]


def load_topology(source: str | Path | Mapping[str, Any], overrides: Overrides = ()
                  ) -> Topology:
    """A validated topology from a YAML file or a dict, with overrides applied as `--set` applies them.

    `overrides` is a list of `key.path=value` strings or a mapping {key.path: value}; a value that is not
    a string is written as YAML for the loader, so `{"devices.count": 3}` is `--set devices.count=3`."""
    assignments = _assignments(overrides)
    if isinstance(source, Mapping):
        return topology_from_dict(dict(source), assignments)
    return _load_file(source, assignments)


def _assignments(overrides: Overrides) -> list[str]:
    if not isinstance(overrides, Mapping):
        return list(overrides)

    # JSON is YAML: lists, mappings, numbers, booleans and null read back as the value they were
    return [f"{key}={value if isinstance(value, str) else json.dumps(value)}" for key, value in overrides.items()]


def run(topology: Topology | str | Path | Mapping[str, Any], address: str | None = None,
        out: str | Path | None = None, overrides: Overrides = (), console: Any = None
        ) -> Results:
    """Run every strategy of the topology (embedded loopback-only Ray, or the cluster at `address`) and
    return its results. `out` defaults to results/<name>-<timestamp>/, as on the command line."""

    if isinstance(topology, Topology):
        topo, source = topology, "<api>"
        if overrides:
            topo = topology_from_dict(topology.model_dump(mode="json"), _assignments(overrides))
    else:
        topo, source = load_topology(topology, overrides), str(topology)
    if address is not None:
        topo = topo.model_copy(update={"ray": RaySpec(address=address)})
    check_model(topo, source)  # as run.py: the model builds and has every cut the topology names (ConfigError)
    folder = Path(out) if out is not None else Path("results") / f"{topo.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    folder = prepare_out(folder, pick_new=out is None)  # never over an earlier run's results (OutputError)
    console = console or Console()
    console.print(f"splitbed: {source} -> {folder}/")
    run_experiment(topo, source, folder, Progress(topo, console))
    return open_results(folder)


def open_results(folder: str | Path) -> Results:
    """A finished (or partial) run's results folder, read back; ReportError when it holds no summary.json."""
    folder = Path(folder)
    try:
        raw = read_summary(folder, "strategies")
    except ValueError as e:
        raise ReportError(str(e)) from None
    if raw is None:
        raise ReportError(f"{folder}: no summary.json (not a splitbed run's results folder)")
    return Results(folder, Summary.from_dict(raw))


def compare(*runs: Results | str | Path) -> pd.DataFrame:
    """Runs side by side, the table of `run.py compare`: one row per run and strategy."""

    folders = [r.folder if isinstance(r, Results) else Path(r) for r in runs]
    try:
        loaded = cmp.load_runs(folders)
    except cmp.CompareError as e:
        raise ReportError(str(e)) from None
    return pd.DataFrame(cmp.rows(loaded))


@dataclass(frozen=True)
class StrategySummary:
    """One strategy's measured requests, as summary.json holds them (ms, req/s, mJ, bytes)."""

    requests: int
    completed: int
    failed: int
    timed_out: int
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None
    mean_ms: float | None
    throughput_rps: float | None
    energy_mj: float | None
    bytes_up_mean: float | None
    breakdown_ms: dict[str, float | None]
    cuts: dict[str, int]

    @classmethod
    def from_dict(cls, st: Mapping[str, Any]) -> StrategySummary:
        lat, by = st.get("latency_ms", {}), st.get("by_status", {})
        return cls(requests=int(st.get("requests", 0)), completed=int(by.get("completed", 0)),
                   failed=int(by.get("failed", 0)), timed_out=int(by.get("timed_out", 0)),
                   p50_ms=lat.get("p50"), p95_ms=lat.get("p95"), p99_ms=lat.get("p99"), mean_ms=lat.get("mean"),
                   throughput_rps=st.get("throughput_rps"), energy_mj=st.get("energy_mj_mean"),
                   bytes_up_mean=st.get("bytes_up_mean"), breakdown_ms=dict(st.get("breakdown_ms_mean", {})),
                   cuts=dict(st.get("cuts", {})))


@dataclass(frozen=True)
class Summary:
    """summary.json as typed data; `raw` keeps every key (placement, fidelity, faults, ...)."""

    name: str
    status: str
    partial: bool
    error: str | None
    wall_s: float | None
    strategies: dict[str, StrategySummary]
    ray_mode: str | None
    auth_mode: str | None  # the cluster's Ray authentication ("token" or "disabled"); None before it was recorded
    raw: dict[str, Any]

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Summary:
        ray = raw.get("ray") or {}
        v = SummaryView.of(raw)
        return cls(name=str(v.topology.get("name", "")), status=str(v.status),
                   partial=bool(raw.get("partial")), error=v.error, wall_s=v.wall_s,
                   strategies={k: StrategySummary.from_dict(st) for k, st in v.strategies.items()},
                   ray_mode=ray.get("mode"), auth_mode=ray.get("auth_mode"), raw=raw)


class Results:
    """A results folder: `requests` and `server_load` (the CSVs, row for row), `strategies` (one row per
    strategy), `summary` (typed), and `figures()` (report.html's plots as matplotlib figures)."""

    def __init__(self, folder: Path, summary: Summary):
        self.folder = folder
        self.summary = summary
        self._requests: pd.DataFrame | None = None
        self._server_load: pd.DataFrame | None = None

    def __repr__(self) -> str:
        return f"Results({str(self.folder)!r}, {self.summary.name}, {self.summary.status})"

    @property
    def requests(self) -> pd.DataFrame:
        if self._requests is None:
            self._requests = _read_csv(self.folder / "requests.csv")
        return self._requests

    @property
    def server_load(self) -> pd.DataFrame:
        if self._server_load is None:
            self._server_load = _read_csv(self.folder / "server_load.csv")
        return self._server_load

    @property
    def strategies(self) -> pd.DataFrame:
        rows = [{"strategy": name, **{k: v for k, v in vars(st).items() if k not in ("breakdown_ms", "cuts")}}
                for name, st in self.summary.strategies.items()]
        return pd.DataFrame(rows).set_index("strategy") if rows else pd.DataFrame()

    @property
    def breakdown(self) -> pd.DataFrame:
        """Mean latency per stage (ms, completed measured requests): strategies x stages."""
        return pd.DataFrame({s: st.breakdown_ms for s, st in self.summary.strategies.items()}).T

    def figures(self) -> dict[str, Any]:
        """report.html's plots, by name (latency_cdf, breakdown, over_time, energy, cuts, ...), as
        matplotlib figures; a plot whose data is missing is left out, as in the report."""

        records = read_rows(self.folder / "requests.csv")
        return {name: fig for name, _, fig in run_figures(self.summary.raw, records) if fig is not None}


def _read_csv(path: Path) -> pd.DataFrame:
    """The CSV as written; empty cells are NaN/None, as pandas reads them. A run stopped before the file
    existed reads as no rows."""
    if not path.exists():
        return pd.DataFrame()
    return pd.read_csv(path)
