"""Run one topology on Ray: build the actors, run each strategy in turn, collect as it goes.

The driver owns the output folder. About once a second it drains finished
request records from the device pools and load samples from the cloud
replicas, appends them to the CSV files and refreshes the progress display.
Strategies run one after another over the same devices, each with its own
warm-up, so every strategy is measured under the same offered load.

Everything it starts is stopped in `finally`: actors are killed and an
embedded Ray is shut down on success, error, Ctrl-C and SIGTERM, and the last
summary written says whether the run was complete.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import time
from pathlib import Path
from typing import Any

from testbed.base.clock import BOOT_ID
from testbed.config.schema import Topology
from testbed.domain.host import host_facts
from testbed.domain.live import since_command_start
from testbed.plan.devices import device_table, device_values, replay_line, rrc_line
from testbed.plan.faults import mechanism as faults_mechanism
from testbed.report import html_report, load_report
from testbed.results.folder import RunFolder
from testbed.run.actor_set import Actors
from testbed.run.fault_driver import ActorDeath, FaultDriver, FaultEvent
from testbed.run.linkcheck import check_links, format_rows
from testbed.run.progress import Progress
from testbed.run.ray_runtime import ray_session
from testbed.run.summary import RunFacts, build_summary
from throttling.cgroup import sweep_run
from throttling.cpu import choose_cpu
from throttling.links import LinkBackend, choose_backend
from throttling.netns import NetnsLayout, NetnsTopology, TraceRates

POLL_S = 1.0


class Run:
    """One run: owns its results folder, the progress display, the records, the load rows and the actors.

    Its methods work on its own state; what the fault driver did comes back as events that the run records.
    """

    def __init__(self, topo: Topology, topology_file: str, out_dir: Path, progress: Progress | None = None):
        self.topo = topo
        self.facts = RunFacts(topo, topology_file)
        self.folder = RunFolder(out_dir)
        self.progress = progress or Progress(topo)
        self.records: list[dict[str, Any]] = []
        self.load_rows: list[dict[str, Any]] = []
        self.actors: Actors | None = None
        self.kernel: Any = None  # tc backend: the run's NetnsTopology (link degradations set its rates)
        self.trace_rates: Any = None  # tc backend with traces: restarted for each strategy, like the shapers
        self._net: dict[str, Any] | None = None  # tc backend: namespaces and addresses the actors need
        self._device_values = {s.device_id: device_values(s) for s in device_table(topo)}

    def summary(self) -> dict[str, Any]:
        """summary.json as of now (testbed.run.summary.build_summary)."""
        return build_summary(self.facts, self.records, self.load_rows, time.monotonic() - self.facts.t0,
                             host_facts())

    def execute(self) -> dict[str, Any]:
        """Run every strategy; returns the summary (also in summary.json), written however the run ends."""
        facts = self.facts
        self.folder.write_summary(self.summary())
        try:
            with contextlib.ExitStack() as stack:
                self._set_up(stack)
                self._run_on_ray()
            facts.status = "complete"
        except KeyboardInterrupt:
            facts.status, facts.error = "interrupted", "interrupted (Ctrl-C or SIGTERM)"
            raise
        except BaseException as e:
            facts.status, facts.error = "failed", f"{type(e).__name__}: {e}"
            raise
        finally:
            self.progress.stop()
            summary = self.summary()
            self.folder.write_summary(summary)
            self.folder.close()
            _write_load_report(self.folder.dir, summary, self.records, self.load_rows, self.progress)
            _write_html_report(self.folder.dir, self.progress)
        return summary

    def _set_up(self, stack: contextlib.ExitStack) -> None:
        """Links, CPU mechanism and Ray, each announced; whatever they create is undone when `stack` closes."""

        topo, facts, progress = self.topo, self.facts, self.progress
        facts.backend = choose_backend(topo.throttling.backend, topo.throttling.subnet, topo.throttling.delivery)
        progress.note(f"links: {facts.backend.describe()}")
        progress.note(rrc_line(topo))
        if line := replay_line(topo):
            progress.note(line)
        if topo.faults:
            progress.note(f"faults: {faults_mechanism(topo, facts.backend.name)}")
        if topo.throttling.check_links:
            facts.link_check = _check_links(topo, facts.backend, progress)
        self._net = self._kernel_links(stack) if facts.backend.name == "tc" else None
        facts.cpu = choose_cpu(topo.throttling.cpu, f"{os.getpid()}", topo.pools.compute == "replay")
        progress.note(f"cpu: {facts.cpu.description}")
        if facts.cpu.name == "cgroup":
            stack.callback(_sweep_cgroups, facts.cpu.run_id)  # whatever a killed pool left
        facts.ray_info = stack.enter_context(ray_session(topo.ray.address, _cpus_needed(topo),
                                                         _gpus_needed(topo), _resources_needed(topo)))
        facts.timeline["ray_ready_s"] = _since_start()

    def _kernel_links(self, stack: contextlib.ExitStack) -> dict[str, Any]:
        """Create the run's namespaces and qdiscs (removed when `stack` closes); returns what actors need."""

        specs = device_table(self.topo)
        backend = self.facts.backend
        layout = NetnsLayout(f"{os.getpid()}", self.topo.throttling.subnet, len(specs))
        self.kernel = stack.enter_context(NetnsTopology(layout, [s.kernel_link() for s in specs],
                                                        netem=backend.netem))
        ups = {s.device_id: (d.trace_path, d.trace_offset_ms) for s in specs if (d := s.uplink()).trace_path}
        downs = {s.device_id: (d.trace_path, d.trace_offset_ms) for s in specs if (d := s.downlink()).trace_path}
        if ups or downs:
            self.trace_rates = stack.enter_context(TraceRates(self.kernel, ups, downs,
                                                              self.topo.throttling.trace_update_ms / 1000))
        return {"backend": backend.to_dict(), "cloud_ns": layout.cloud_ns, "cloud_ip": layout.cloud_ip,
                "device_ns": [layout.device_ns(i) for i in range(len(specs))]}

    def _run_on_ray(self) -> None:
        facts = self.facts
        self.actors = actors = Actors(self.topo, self._net, facts.cpu.to_dict())
        try:
            self.progress.note("starting actors: model load and calibration")
            facts.replicas, facts.pools = actors.start()
            facts.timeline["actors_ready_s"] = _since_start()
            self.progress.started(facts.replicas, facts.pools)
            self.folder.write_summary(self.summary())
            for i, strategy in enumerate(self.topo.strategies):
                self._run_strategy(strategy, i)
            facts.replica_stats = actors.stats()
        finally:
            try:  # keep what the actors still hold, whatever happened
                facts.replica_stats = facts.replica_stats or actors.stats()
                self._collect(final=True)
            except BaseException:  # noqa: BLE001 - best effort on the way out
                pass
            actors.close()

    def _run_strategy(self, strategy: str, index: int) -> None:
        """One strategy over all devices (warm-up, then measure), collecting as it goes; repaired at its end."""
        actors = self.actors
        assert actors is not None
        self.facts.current_strategy = strategy
        self.progress.strategy_started(strategy, index)
        if self.trace_rates is not None:
            self.trace_rates.restart()
        faults = FaultDriver(self.topo, actors, self.kernel, strategy, index)
        if faults.windows:
            self.progress.set_faults(faults.active_devices, faults.active_names)
        pending = [p.run_phase.remote(strategy, index, faults.t0, BOOT_ID) for p in actors.pools]
        while pending:
            _, pending = actors.ray.wait(pending, num_returns=len(pending), timeout=faults.wait_s(POLL_S))
            self._record_events(faults.fire_due())
            self._collect()
            self._record_events(faults.note_deaths())
            if self.trace_rates is not None:
                self.trace_rates.check()  # a failed rate thread fails the run, with its reason
        end = faults.end_strategy(self.records)
        self._record_events(end.events)
        if end.failover is not None:
            self.facts.failover[strategy] = end.failover
        self._add_records(end.lost)
        self.facts.strategies_done.append(strategy)
        self.folder.write_summary(self.summary())

    def _record_events(self, events: list[FaultEvent]) -> None:
        """What the fault driver did: into the facts (and deaths), and a line on the console."""
        for ev in events:
            if isinstance(ev, ActorDeath):
                self.facts.deaths.append(ev.death_dict())
            self.facts.fault_events.append(ev.to_dict())
            self.progress.note(f"fault at {ev.t_s:.1f} s: {ev.event}")

    def _collect(self, final: bool = False) -> None:
        assert self.actors is not None
        records, load = self.actors.drain(self.facts.current_strategy or "", final)
        self.load_rows.extend(load)
        self.folder.server_load.append(load)
        self._add_records(records, self.actors.live_counts())
        if self.progress.first_answer_s is not None:
            self.facts.timeline.setdefault("first_answer_s", self.progress.first_answer_s)

    def _add_records(self, records: list[dict[str, Any]], live: list[dict[str, Any]] | None = None) -> None:
        for r in records:
            r.update(self._device_values.get(r["device_id"], {}))
        self.records.extend(records)
        self.folder.requests.append(records)
        self.progress.update(records, live)


def run_experiment(topo: Topology, topology_file: str, out_dir: Path,
                   progress: Progress | None = None) -> dict[str, Any]:
    """Run every strategy of the topology; returns the summary (also in out_dir/summary.json)."""
    return Run(topo, topology_file, out_dir, progress).execute()


def _write_load_report(out_dir: Path, summary: dict[str, Any], records: list[dict[str, Any]],
                       load_rows: list[dict[str, Any]], progress: Progress) -> None:
    """server_load.html and its PNGs; a plotting failure is reported, never allowed to lose the run."""
    if not load_rows:
        return

    try:
        load_report.write_report(out_dir, summary, records, load_rows)
    except Exception as e:  # noqa: BLE001 - the CSVs and summary.json are already written
        progress.note(f"server-load report not written: {type(e).__name__}: {e}")


def _write_html_report(out_dir: Path, progress: Progress) -> None:
    """report.html, also for a partial run; like the load report, a failure never loses the run."""
    try:
        html_report.write_report(out_dir)
    except Exception as e:  # noqa: BLE001 - the CSVs and summary.json are already written
        progress.note(f"report.html not written: {type(e).__name__}: {e}")


def _sweep_cgroups(run_id: str) -> None:
    sweep_run(run_id)


def _check_links(topo: Topology, backend: LinkBackend, progress: Progress) -> list[dict[str, Any]]:

    rows = check_links(topo, [backend])
    progress.note("link check (before the run):\n" + format_rows(rows))
    return [dict(dataclasses.asdict(r), error_pct=r.error_pct) for r in rows]


def _since_start() -> float:
    return round(since_command_start(time.time()), 2)


def _cpus_needed(topo: Topology) -> float:
    pools = len(topo.pool_slices())
    return pools * topo.pools.num_cpus + topo.cloud.replicas * topo.cloud.num_cpus


def _gpus_needed(topo: Topology) -> float:
    return topo.cloud.replicas * topo.cloud.num_gpus


def _resources_needed(topo: Topology) -> dict[str, float]:
    pools = len(topo.pool_slices())
    out: dict[str, float] = {}
    for n, wanted in ((pools, topo.pools.resources), (topo.cloud.replicas, topo.cloud.resources)):
        for name, amount in wanted.items():
            out[name] = out.get(name, 0.0) + n * amount
    return out
