"""Run one topology on Ray: build the actors, run one phase per strategy, collect as it goes.

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
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from actors.cloud_profile import ProfileCloudServer
from actors.cloud_replay import ReplayCloudServer
from actors.cloud_server import CloudServer
from actors.device_pool import DevicePool
from testbed import __version__
from testbed.base.clock import BOOT_ID
from testbed.config.schema import Topology
from testbed.domain.host import host_facts
from testbed.domain.live import since_command_start
from testbed.plan.devices import device_table, device_values, replay_line, replay_summary, rrc_line, rrc_summary
from testbed.plan.faults import fault_summary
from testbed.plan.faults import mechanism as faults_mechanism
from testbed.report import html_report, load_report
from testbed.report.hardware_report import hardware_summary
from testbed.results.folder import RunFolder
from testbed.results.metrics import percentile, ratios, summarize_groups, summarize_strategies
from testbed.run.fault_driver import FaultDriver
from testbed.run.linkcheck import check_links, format_rows
from testbed.run.progress import Progress
from testbed.run.ray_runtime import ray_session
from throttling.cgroup import sweep_run
from throttling.cpu import CpuMechanism, choose_cpu
from throttling.links import LinkBackend, choose_backend
from throttling.netns import NetnsLayout, NetnsTopology, TraceRates

POLL_S = 1.0


@dataclass
class RunState:
    topo: Topology
    topology_file: str
    started_at: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))
    t0: float = field(default_factory=time.monotonic)
    records: list[dict[str, Any]] = field(default_factory=list)
    busy_by_strategy: dict[str, list[float]] = field(default_factory=dict)
    load_rows: list[dict[str, Any]] = field(default_factory=list)
    phase: str = "starting"
    phases_done: list[str] = field(default_factory=list)
    ray_info: dict[str, Any] = field(default_factory=dict)
    replicas: list[dict[str, Any]] = field(default_factory=list)
    pools: list[dict[str, Any]] = field(default_factory=list)
    replica_stats: list[dict[str, Any]] = field(default_factory=list)
    status: str = "running"
    error: str | None = None
    backend: LinkBackend = field(default_factory=lambda: LinkBackend("userspace"))
    link_check: list[dict[str, Any]] = field(default_factory=list)
    cpu: CpuMechanism = field(default_factory=lambda: choose_cpu("timescale", ""))
    fault_events: list[dict[str, Any]] = field(default_factory=list)  # what the fault driver did, and when
    failover: dict[str, Any] = field(default_factory=dict)  # per pool: reconnects and retries (last phase's count)
    kernel: Any = None  # tc backend: the run's NetnsTopology (link degradations set its rates)
    trace_rates: Any = None  # tc backend with traces: restarted at each phase, like the userspace shapers
    timeline: dict[str, float] = field(default_factory=dict)  # s since the command started (testbed.domain.live)
    deaths: list[dict[str, Any]] = field(default_factory=list)  # actors found dead, not killed by a fault
    device_values: dict[int, dict[str, Any]] = field(default_factory=dict)  # per device id, into each request row


class Actors:
    """The run's Ray actors; `close()` drains what they hold and kills them."""

    def __init__(self, topo: Topology, net: dict[str, Any] | None, cpu: dict[str, str]):
        import ray  # ray: only the driver and the actors start it


        self.ray = ray
        self._args = (topo.model_dump_json(), net, cpu)

        cloud_cls = ReplayCloudServer if topo.cloud.compute == "replay" else CloudServer
        self._cloud_cls: Any = ray.remote(ProfileCloudServer if topo.cloud.hardware else cloud_cls)
        self._pool_cls: Any = ray.remote(DevicePool)
        self.topo = topo
        self.slices = topo.pool_slices()
        self.clouds: list[Any] = [self.new_cloud(i) for i in range(topo.cloud.replicas)]
        self.pools: list[Any] = [self.new_pool(i) for i in range(len(self.slices))]
        self.down_clouds: set[int] = set()  # killed by a fault (testbed.run.fault_driver), not yet replaced
        self.down_pools: set[int] = set()
        self.deaths: list[tuple[str, int]] = []  # (kind, index) found dead by a call, not yet reported

    def gather(self, kind: str, call: Any) -> list[Any]:
        """`call(actor)` on every live actor of `kind`, and each result; an actor that died (killed by PID, its
        process lost) is marked down and reported in `deaths`, and the others' results are kept."""
        actors, down = (self.pools, self.down_pools) if kind == "pools" else (self.clouds, self.down_clouds)
        refs = [(i, call(a)) for i, a in enumerate(actors) if i not in down]
        out = []
        for i, ref in refs:
            try:
                out.append(self.ray.get(ref))
            except self.ray.exceptions.RayActorError:
                down.add(i)
                self.deaths.append((kind, i))
        return out

    def new_cloud(self, i: int) -> Any:
        c = self.topo.cloud
        return self._cloud_cls.options(num_cpus=c.num_cpus, num_gpus=c.num_gpus, resources=dict(c.resources),
                                       max_concurrency=10_000).remote(i, self._args[0], self._args[1])

    def new_pool(self, i: int) -> Any:
        p = self.topo.pools
        return self._pool_cls.options(num_cpus=p.num_cpus, resources=dict(p.resources), scheduling_strategy="SPREAD",
                                      max_concurrency=10_000).remote(i, self._args[0], list(self.slices[i]),
                                                                     *self._args[1:])

    def live(self, kind: str) -> list[Any]:
        actors, down = (self.pools, self.down_pools) if kind == "pools" else (self.clouds, self.down_clouds)
        return [a for i, a in enumerate(actors) if i not in down]

    def start(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """Cloud model load and pool model load + calibration overlap; then devices connect."""
        cloud_refs = [c.start.remote() for c in self.clouds]
        prep_refs = [p.prepare.remote() for p in self.pools]
        replicas = self.ray.get(cloud_refs)
        self.ray.get(prep_refs)
        pools = self.ray.get([p.connect.remote(replicas) for p in self.pools])
        return replicas, pools

    def drain(self, strategy: str, final: bool = False) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        records = [r for batch in self.gather("pools", lambda p: p.drain.remote(final)) for r in batch]
        load = [dict(row, strategy=strategy)
                for batch in self.gather("clouds", lambda c: c.drain_load.remote()) for row in batch]
        return records, load

    def stats(self) -> list[dict[str, Any]]:
        return self.gather("clouds", lambda c: c.stats.remote())

    def live_counts(self) -> list[dict[str, Any]]:
        """Requests ended since the last call in each live pool (testbed.domain.live), for the progress line."""
        return self.gather("pools", lambda p: p.live_counts.remote())

    def close(self) -> None:
        for actor in self.pools + self.clouds:
            try:
                self.ray.kill(actor, no_restart=True)
            except Exception:  # noqa: BLE001 - already gone
                pass


def run_experiment(topo: Topology, topology_file: str, out_dir: Path,
                   progress: Progress | None = None) -> dict[str, Any]:
    """Run every strategy of the topology; returns the summary (also in out_dir/summary.json)."""

    folder = RunFolder(out_dir)
    state = RunState(topo, topology_file)
    state.device_values = {s.device_id: device_values(s) for s in device_table(topo)}
    progress = progress or Progress(topo)
    folder.write_summary(build_summary(state))
    try:
        with contextlib.ExitStack() as stack:
            state.backend = choose_backend(topo.throttling.backend, topo.throttling.subnet)
            progress.note(f"links: {state.backend.describe()}")
            progress.note(rrc_line(topo))
            if line := replay_line(topo):
                progress.note(line)
            if topo.faults:
                progress.note(f"faults: {faults_mechanism(topo, state.backend.name)}")
            if topo.throttling.check_links:
                state.link_check = _check_links(state, progress)
            net = _kernel_links(state, stack) if state.backend.name == "tc" else None
            state.cpu = choose_cpu(topo.throttling.cpu, f"{os.getpid()}", topo.pools.compute == "replay")
            progress.note(f"cpu: {state.cpu.description}")
            if state.cpu.name == "cgroup":
                stack.callback(_sweep_cgroups, state.cpu.run_id)  # whatever a killed pool left
            state.ray_info = stack.enter_context(ray_session(topo.ray.address, _cpus_needed(topo),
                                                             _gpus_needed(topo), _resources_needed(topo)))
            state.timeline["ray_ready_s"] = _since_start()
            _run_on_ray(state, folder, progress, net)
        state.status = "complete"
    except KeyboardInterrupt:
        state.status, state.error = "interrupted", "interrupted (Ctrl-C or SIGTERM)"
        raise
    except BaseException as e:
        state.status, state.error = "failed", f"{type(e).__name__}: {e}"
        raise
    finally:
        progress.stop()
        summary = build_summary(state)
        folder.write_summary(summary)
        folder.close()
        _write_load_report(folder.dir, summary, state, progress)
        _write_html_report(folder.dir, progress)
    return summary


def _write_load_report(out_dir: Path, summary: dict[str, Any], state: RunState, progress: Progress) -> None:
    """server_load.html and its PNGs; a plotting failure is reported, never allowed to lose the run."""
    if not state.load_rows:
        return

    try:
        load_report.write_report(out_dir, summary, state.records, state.load_rows)
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


def _check_links(state: RunState, progress: Progress) -> list[dict[str, Any]]:
    rows = check_links(state.topo, [state.backend])
    progress.note("link check (before the run):\n" + format_rows(rows))
    return [dict(dataclasses.asdict(r), error_pct=r.error_pct) for r in rows]


def _kernel_links(state: RunState, stack: contextlib.ExitStack) -> dict[str, Any]:
    """Create the run's namespaces and qdiscs (removed when `stack` closes); returns what actors need."""

    specs = device_table(state.topo)
    layout = NetnsLayout(f"{os.getpid()}", state.topo.throttling.subnet, len(specs))
    topo = stack.enter_context(NetnsTopology(layout, [s.kernel_link() for s in specs], netem=state.backend.netem))
    state.kernel = topo
    ups = {s.device_id: (d.trace_path, d.trace_offset_ms) for s in specs if (d := s.uplink()).trace_path}
    downs = {s.device_id: (d.trace_path, d.trace_offset_ms) for s in specs if (d := s.downlink()).trace_path}
    if ups or downs:
        state.trace_rates = stack.enter_context(TraceRates(topo, ups, downs,
                                                           state.topo.throttling.trace_update_ms / 1000))
    return {"backend": state.backend.to_dict(), "cloud_ns": layout.cloud_ns, "cloud_ip": layout.cloud_ip,
            "device_ns": [layout.device_ns(i) for i in range(len(specs))]}


def _run_on_ray(state: RunState, folder: RunFolder, progress: Progress, net: dict[str, Any] | None) -> None:
    actors = Actors(state.topo, net, state.cpu.to_dict())
    try:
        progress.note("starting actors: model load and calibration")
        state.replicas, state.pools = actors.start()
        state.timeline["actors_ready_s"] = _since_start()
        progress.started(state.replicas, state.pools)
        folder.write_summary(build_summary(state))
        for i, strategy in enumerate(state.topo.strategies):
            _run_phase(state, folder, progress, actors, strategy, i)
        state.replica_stats = actors.stats()
    finally:
        try:  # keep what the actors still hold, whatever happened
            state.replica_stats = state.replica_stats or actors.stats()
            _collect(state, folder, progress, actors, final=True)
        except BaseException:  # noqa: BLE001 - best effort on the way out
            pass
        actors.close()


def _run_phase(state: RunState, folder: RunFolder, progress: Progress, actors: Actors,
               strategy: str, index: int) -> None:
    ray = actors.ray
    state.phase = strategy
    progress.phase(strategy, index)
    if state.trace_rates is not None:
        state.trace_rates.restart()
    faults = FaultDriver(state, actors, progress, strategy, index)
    pending = [p.run_phase.remote(strategy, index, faults.t0, BOOT_ID) for p in actors.pools]
    while pending:
        _, pending = ray.wait(pending, num_returns=len(pending), timeout=faults.wait_s(POLL_S))
        faults.fire_due()
        _collect(state, folder, progress, actors)
        faults.note_deaths()
        if state.trace_rates is not None:
            state.trace_rates.check()  # a failed rate thread fails the run, with its reason
    _add_records(state, folder, progress, faults.end_phase())
    state.phases_done.append(strategy)
    folder.write_summary(build_summary(state))


def _collect(state: RunState, folder: RunFolder, progress: Progress, actors: Actors, final: bool = False) -> None:
    records, load = actors.drain(state.phase, final)
    state.load_rows.extend(load)
    for row in load:
        state.busy_by_strategy.setdefault(row["strategy"], []).append(row["busy_fraction"])
    folder.server_load.append(load)
    _add_records(state, folder, progress, records, actors.live_counts())
    if progress.first_answer_s is not None:
        state.timeline.setdefault("first_answer_s", progress.first_answer_s)


def _add_records(state: RunState, folder: RunFolder, progress: Progress, records: list[dict[str, Any]],
                 live: list[dict[str, Any]] | None = None) -> None:
    for r in records:
        r.update(state.device_values.get(r["device_id"], {}))
    state.records.extend(records)
    folder.requests.append(records)
    progress.update(records, live)


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


def build_summary(state: RunState) -> dict[str, Any]:
    topo = state.topo
    windows: dict[str, float] = {s: topo.duration_s for s in topo.strategies if s in state.phases_done}
    if state.phase in topo.strategies and state.phase not in windows:
        windows[state.phase] = topo.duration_s  # the phase under way (partial)
    per_strategy = summarize_strategies(state.records, windows)
    return {
        "splitbed_version": __version__,
        "status": state.status,
        "partial": state.status != "complete",
        "error": state.error,
        "started_at": state.started_at,
        "wall_s": round(time.monotonic() - state.t0, 2),
        "timeline_s": state.timeline,
        "topology_file": state.topology_file,
        "topology": topo.model_dump(mode="json"),
        "host": host_facts(),
        "ray": state.ray_info,
        "backends": {"link": state.backend.describe(), "link_backend": state.backend.to_dict(),
                     "cpu": state.cpu.description, "cpu_mechanism": state.cpu.name,
                     "cloud_device": sorted({r.get("device_name", "?") + f" ({r.get('device')})"
                                             for r in state.replicas})},
        "placement": {"pools": {f"pool{p['pool']}": p.get("node_id") for p in state.pools},
                      "replicas": {f"replica{r['replica']}": r.get("node_id") for r in state.replicas}},
        "calibration_host_ms": {f"pool{p['pool']}": p["calibration_host_ms"] for p in state.pools},
        "calibration_cloud_ms": {f"replica{r['replica']}": r["cut_cloud_ms"] for r in state.replicas
                                 if r.get("cut_cloud_ms")},
        "cpu_caps": {f"pool{p['pool']}": p["cpu_caps"] for p in state.pools if p.get("cpu_caps")},
        "device_speeds": {f"pool{p['pool']}": p.get("device_speeds") for p in state.pools},
        "device_population": _population_summary(state),
        "hardware": hardware_summary(topo, state.pools, state.replicas, state.replica_stats, state.records),
        "split_catalogue": state.replicas[0]["split_catalogue"] if state.replicas else None,
        "accuracy_by_cut": state.replicas[0].get("accuracy_by_cut") if state.replicas else None,
        "phases_done": state.phases_done,
        "processes": {"pools": {f"pool{p['pool']}": p.get("pid") for p in state.pools},
                      "replicas": {f"replica{r['replica']}": r.get("pid") for r in state.replicas}},
        "deaths": state.deaths,
        "strategies": per_strategy,
        "comparison": ratios(per_strategy),
        "groups": summarize_groups(state.records, windows),
        "replicas": [_replica_summary(s, state) for s in state.replica_stats],
        "server_busy_by_strategy": {s: sum(v) / len(v) for s, v in state.busy_by_strategy.items() if v},
        "fidelity": _fidelity(state.records),
        "link_check": state.link_check,
        "rrc": rrc_summary(topo),
        "trace_replay": replay_summary(topo),
        **fault_summary(topo, state.records, state.fault_events, state.failover, state.backend.name),
    }


def _population_summary(state: RunState) -> dict[str, Any]:
    """Per group with a population: each device's own compute time and rates (empty without one)."""
    groups = {g.name or f"group{i}": g.population for i, g in enumerate(state.topo.devices)}
    out: dict[str, Any] = {}
    for spec in device_table(state.topo) if any(groups.values()) else []:
        if groups.get(spec.group) is not None:
            out.setdefault(spec.group, []).append({"device_id": spec.device_id, **state.device_values[spec.device_id],
                                                   "offline_s": [list(iv) for iv in spec.offline_s]})
    return out


def _replica_summary(stats: dict[str, Any], state: RunState) -> dict[str, Any]:
    wall = max(1e-9, time.monotonic() - state.t0)
    return {**stats, "busy_fraction_of_run": stats["busy_s"] / wall}


def _fidelity(records: list[dict[str, Any]]) -> dict[str, Any]:
    """How well the emulation kept its promises in this run."""
    def p95(key: str) -> float:
        return percentile([float(r[key]) for r in records if r[key] is not None], 95)

    rel = [100 * (float(r["uplink_ms"]) - float(r["uplink_ideal_ms"])) / float(r["uplink_ideal_ms"])
           for r in records if r["status"] == "completed" and r["uplink_ideal_ms"]]
    return {
        "uplink_vs_configured_pct": {"p50": percentile(rel, 50), "p95": percentile(rel, 95), "n": len(rel)},
        "uplink_error_ms_p95": p95("uplink_error_ms"),
        "emu_wait_ms_p95": p95("emu_wait_ms"),
        "note": ("uplink_vs_configured_pct: measured uplink time against bytes/rate + one-way delay of the "
                 "configured link (fixed-rate links; jitter and queueing behind a device's own earlier "
                 "frames widen it); uplink_error_ms: real write of the last byte minus its planned time; "
                 "emu_wait_ms: time a device waited for its pool's shared executor (an emulation "
                 "artefact kept out of device compute time; large values mean the host is overloaded)"),
    }
