"""Command line: `python run.py TOPOLOGY.yaml [--out DIR] [--set key.path=value ...]`,
plus subcommands that read finished results: `run.py report DIR`, `run.py compare DIR1 DIR2 ...`.

Subcommands come first and have their own options: `python run.py train TOPOLOGY.yaml` trains
butterfly units at the topology's cut (see testbed/train/tradeoff.py).

Exit status: 0 when the run completed, 2 for a topology that cannot run
(reported before Ray starts), 130 when interrupted (Ctrl-C or SIGTERM; the
output folder then holds a summary marked partial), 1 for any other failure.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from pathlib import Path

from rich.console import Console

from testbed.config.errors import ConfigError
from testbed.config.loading import load_topology
from testbed.config.schema import Topology
from testbed.config.variants import load_points, load_rungs, parse_sweep
from testbed.domain.live import since_command_start
from testbed.model.check import check_model, format_catalogue
from testbed.report import (
    split_sweep,
    sweep,
)
from testbed.report.compare import main as compare_main
from testbed.report.console import print_summary
from testbed.report.html_report import ReportError, write_report
from testbed.report.split_sweep import cut_rows
from testbed.report.sweep import saturation_points
from testbed.results.folder import OutputError, prepare_out
from testbed.run.experiment import run_experiment
from testbed.run.ladder_run import run_ladder
from testbed.run.linkcheck import available_backends, check_links, format_rows
from testbed.run.progress import Progress
from testbed.run.ray_runtime import ClusterAuthError
from throttling.cleanup import sweep_all
from throttling.cpu import CpuCapUnavailable
from throttling.links import BackendUnavailable


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="run.py", description="Run a splitbed experiment described by a topology YAML.",
                                epilog="results: run.py report DIR (rebuild report.html); "
                                       "run.py compare DIR1 DIR2 ... (runs side by side)")
    p.add_argument("topology", nargs="?", help="topology file, e.g. topologies/lte_100devices.yaml")
    p.add_argument("--out", type=Path, help="output folder (default: results/<topology>-<timestamp>/)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY.PATH=VALUE",
                   help="override a topology field, e.g. --set devices.count=10 (repeatable)")
    p.add_argument("--address", help="join an existing Ray cluster ('auto' or HOST:PORT) instead of "
                                     "starting an embedded one")
    p.add_argument("--rungs", metavar="NAME,NAME",
                   help="a topology with a ladder: run only these rungs (default: all)")
    p.add_argument("--sweep", metavar="KEY.PATH=V1,V2,...",
                   help="run once per value (e.g. devices.count=10,50,100) and write sweep.csv and sweep.png")
    p.add_argument("--validate", action="store_true", help="check the topology and exit")
    p.add_argument("--catalogue", action="store_true", help="print the model's split catalogue and exit")
    p.add_argument("--check-links", action="store_true",
                   help="send known payloads over each configured link, per available backend, and exit")
    p.add_argument("--cleanup", action="store_true",
                   help="remove network namespaces and cgroups left by a killed run, and exit")
    return p


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in SUBCOMMANDS:  # checked first, so `run.py TOPOLOGY.yaml [flags]` keeps working
        return SUBCOMMANDS[argv[0]](argv[1:])
    parser = _parser()
    args = parser.parse_args(argv)
    if args.cleanup:
        return _cleanup()
    if args.topology is None:
        parser.error("a topology file is required")
    err = Console(stderr=True)
    if not err.is_terminal:
        err = Console(stderr=True, width=140)
    overrides = list(args.overrides) + ([f"ray.address={args.address}"] if args.address else [])
    try:
        topo = load_topology(args.topology, overrides)
    except ConfigError as e:
        print(f"invalid topology:\n{e}", file=sys.stderr)  # plain: never wrapped or restyled
        return 2
    try:  # the model builds and has every cut the topology names: checked before anything starts

        catalogue = check_model(topo, args.topology)
    except ConfigError as e:
        print(f"invalid topology:\n{e}", file=sys.stderr)
        return 2
    if args.validate:
        if topo.ladder:  # every rung, as it would run

            try:
                load_rungs(args.topology, overrides)
            except ConfigError as e:
                print(f"invalid ladder:\n{e}", file=sys.stderr)
                return 2
            print(f"{args.topology}: ladder of {len(topo.ladder)} rungs, each valid")
        print(f"{args.topology}: valid ({topo.device_count} devices, strategies: {', '.join(topo.strategies)})")
        return 0
    if args.catalogue:
        print(format_catalogue(catalogue, topo.model.codec.dtype, topo.model.codec.zstd_level))
        return 0
    if args.check_links:
        print(format_rows(check_links(topo, available_backends())))
        return 0
    out = args.out or Path("results") / f"{topo.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    try:  # never over an earlier run's results; a folder that cannot be written is known before the run
        chosen = prepare_out(out, pick_new=args.out is None)
    except OutputError as e:
        print(f"--out: {e}", file=sys.stderr)
        return 2
    if chosen != out:
        err.print(f"{out}/ holds an earlier run's results: writing to {chosen}/ instead")
    out = chosen
    signal.signal(signal.SIGTERM, _raise_interrupt)
    if args.sweep:
        return _sweep(args.topology, overrides, args.sweep, out, err)
    if topo.ladder:
        rungs = [r.strip() for r in args.rungs.split(",") if r.strip()] if args.rungs else None
        return run_ladder(args.topology, overrides, out, err, rungs, _run)
    return _run(topo, args.topology, out, err)


def _train(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="run.py train", description="Train butterfly units at the topology's cut and "
                                "write accuracy against bytes per request (accuracy.csv, accuracy.png).")
    p.add_argument("topology", help="topology file with a train: section, e.g. topologies/train_digits.yaml")
    p.add_argument("--out", type=Path, help="output folder (default: results/train-<topology>-<timestamp>/)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY.PATH=VALUE",
                   help="override a topology field, e.g. --set train.epochs=2 (repeatable)")
    args = p.parse_args(argv)
    try:
        topo = load_topology(args.topology, args.overrides)
        check_model(topo, args.topology, training=True)
    except ConfigError as e:
        print(f"invalid topology:\n{e}", file=sys.stderr)
        return 2
    from testbed.train.tradeoff import format_table, run_training  # pulls in torch at import

    out = args.out or Path("results") / f"train-{topo.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    try:
        out = prepare_out(out, pick_new=args.out is None)
    except OutputError as e:
        print(f"--out: {e}", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, _raise_interrupt)
    print(f"splitbed train: {args.topology} -> {out}/", file=sys.stderr)
    try:
        rows = run_training(topo, out, log=lambda line: print(line, file=sys.stderr, flush=True))
    except KeyboardInterrupt:
        print(f"interrupted: what was finished is in {out}/", file=sys.stderr)
        return 130
    print(format_table(rows))
    print(f"results: {out}/ (accuracy.csv, accuracy.png, train_log.csv, checkpoints)")
    m, channels = topo.model, topo.train.channels
    c = m.butterfly_channels if m.butterfly_channels in channels else channels[0]
    print(f"run an experiment with one: python run.py {args.topology} "
          f"--set model.weights={out}/butterfly_{m.split}_c{c}.pt --set model.butterfly_channels={c}")
    return 0


def _run(topo: Topology, topology_file: str, out: Path, err: Console, quiet: bool = False) -> int:
    err.print(f"splitbed: {topology_file} -> {out}/")
    try:
        summary = run_experiment(topo, topology_file, out, Progress(topo, err))
    except KeyboardInterrupt:
        err.print(f"[yellow]interrupted[/yellow]: partial results kept in {out}/ (summary.json says partial)")
        return 130
    except ClusterAuthError as e:
        print(f"{topology_file}: ray.address: {e}", file=sys.stderr)
        return 2
    except (BackendUnavailable, CpuCapUnavailable) as e:
        key = "throttling.cpu" if isinstance(e, CpuCapUnavailable) else "throttling.backend"
        print(f"{topology_file}: {key}: {e}", file=sys.stderr)
        return 2
    except Exception as e:  # noqa: BLE001 - reported with the folder that holds what was measured
        err.print(f"[red]run failed[/red]: {type(e).__name__}: {e}\npartial results kept in {out}/")
        return 1
    if quiet:
        return 0
    console = Console()
    if not console.is_terminal:
        console = Console(width=140)  # files and CI logs: wide enough for the tables
    print_summary(summary, str(out), console)

    console.print(f"finished {since_command_start(time.time()):.1f} s after the command started")
    return 0


def _sweep(topology_file: str, overrides: list[str], spec: str, out: Path, err: Console) -> int:
    try:
        key, values = parse_sweep(spec)
        points = load_points(topology_file, overrides, key, values)
        if key.startswith("model."):  # each point's model and cuts, before the first point runs

            for point in points:
                check_model(point, topology_file)
    except (ValueError, ConfigError) as e:
        print(f"invalid sweep:\n{e}", file=sys.stderr)
        return 2
    out.mkdir(parents=True, exist_ok=True)
    table = sweep.SweepTable(out / "sweep.csv")
    cuts: list[dict[str, object]] = []  # model.split sweeps: per cut and network (split_sweep)
    status = 0
    try:
        for value, topo in zip(values, points, strict=True):
            err.print(f"[bold]sweep {key}={value}[/bold]")
            status = _run(topo, topology_file, out / sweep.folder_name(key, value), err, quiet=True)
            if status != 0:
                break
            summary = json.loads((out / sweep.folder_name(key, value) / "summary.json").read_text())
            table.append(sweep.point_rows(value, topo, summary))
            if key == "model.split":
                cuts += cut_rows(value, summary)
    finally:
        table.close()
        if table.rows:
            sweep.plot(table.rows, key, out / "sweep.png")
            _print_sweep(table.rows, key, out)
        if cuts:
            split_sweep.print_table(cuts)
            csv_path, png = split_sweep.write(cuts, out)
            print(f"split-point sweep: {csv_path}, {png}")
        if table.rows:
            _sweep_report(out, key)
    return status


def _sweep_report(out: Path, key: str) -> None:
    """report.html for the sweep folder; a failure is reported, never allowed to hide the sweep's status."""
    try:
        print(f"report: {write_report(out, sweep_key=key)}")
    except Exception as e:  # noqa: BLE001 - sweep.csv and sweep.png are already written
        print(f"sweep report.html not written: {type(e).__name__}: {e}", file=sys.stderr)


def _report(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="run.py report", description="(Re)build report.html for a results folder "
                                "(a run's, or a sweep's parent folder).")
    p.add_argument("dir", type=Path, help="results folder holding summary.json (a run) or sweep.csv (a sweep)")
    args = p.parse_args(argv)
    try:
        print(write_report(args.dir))
    except ReportError as e:
        print(f"run.py report: {e}", file=sys.stderr)
        return 2
    return 0


def _compare(argv: list[str]) -> int:
    return compare_main(argv)


SUBCOMMANDS = {"report": _report, "compare": _compare, "train": _train}  # argv[0] -> handler(argv[1:]) -> status


def _print_sweep(rows: list[dict[str, object]], key: str, out: Path) -> None:
    print(f"{key:>16} {'strategy':<12}{'offered/s':>10}{'done/s':>8}{'p50 ms':>9}{'p99 ms':>9}{'rejected':>9}"
          f"{'busy':>7}")
    for r in rows:
        busy = r["server_busy_fraction"]
        print(f"{r['value']!s:>16} {r['strategy']!s:<12}{r['offered_rps']:>10.2f}{r['throughput_rps']:>8.2f}"
              f"{r['p50_ms']:>9.1f}{r['p99_ms']:>9.1f}{r['rejected']:>9}{busy if busy is None else f'{busy:.0%}':>7}")
    for strategy, value in saturation_points(rows).items():
        print(f"{strategy}: " + (f"saturated from {key}={value}" if value else "kept up at every point"))
    print(f"sweep: {out}/sweep.csv, {out}/sweep.png, one folder per point")


def _cleanup() -> int:
    removed = sweep_all()
    for kind, names in removed.items():
        verb = "" if kind.startswith("kept") else "removed "
        print(f"{kind}: {verb}{len(names)}" + (f" ({', '.join(names)})" if names else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
