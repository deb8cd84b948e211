#!/usr/bin/env python3
"""Emulation density: devices against link-time error, pool memory and CPU, one real run per device count.

    python benchmarks/density.py [--devices 100,1000,2500,5000] [--duration 20] [--warmup 5]
                                 [--plot docs/img/density.png]

Each point is a complete `run.py` of `topologies/density_1000.yaml` (LTE phones
at 1 request/s each, device head replayed from calibrated timings, cloud tail
replayed at `cloud.replay_speed` times this host's calibrated time, jitter off)
with `devices.count` set, in its own process and its own embedded Ray. While it
runs, the device pools' processes (found by name under the run's process tree)
are sampled once a second for resident memory and CPU.

Printed per point: offered and achieved request rate, timeouts and failures,
the uplink time against the configured link (bytes/rate + delay) at p95, the
shaper's own write lateness p95, end-to-end p50/p95, the pools' peak resident
memory, memory per device beyond the pools' fixed cost (the smallest point's
RSS per pool, which holds the model copy, frames and libraries), and the CPU
used by the pools, the cloud and the driver. The first point that misses a
target (issue 16: uplink error p95 <= 5%, at least 99% of requests completed,
no time-outs, a pool at most 250 MB beyond its devices and 0.05 MB per device)
is named as the break point; the CPU per request, all processes, is printed
against its 0.15 ms target beside it. The host's load average is printed with every
point: on a shared host the figures move with what else runs.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parent.parent
TOPOLOGY = ROOT / "topologies/density_1000.yaml"
ERROR_P95_PCT, COMPLETED_FRACTION, POOL_MB, MB_PER_DEVICE, CPU_MS = 5.0, 0.99, 250.0, 0.05, 0.15
ROLES = ("DevicePool", "CloudServer", "driver", "raylet", "gcs", "ray_other")


def _role(p: psutil.Process, driver_pid: int) -> str | None:
    """The kind of one process of the run's tree: a pool, a replica, the driver, Ray's GCS, raylet, or Ray's other
    helpers (dashboard, log monitor, idle workers), all found under the driver's own process tree."""
    if p.pid == driver_pid:
        return "driver"
    try:
        name = " ".join(p.cmdline()[:2]) or p.name()
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None
    if "DevicePool" in name:
        return "DevicePool"
    if "CloudServer" in name:  # ReplayCloudServer too
        return "CloudServer"
    if "gcs_server" in name:
        return "gcs"
    if "raylet" in name:
        return "raylet"
    return "ray_other"


def _sample(driver: psutil.Process) -> dict[int, tuple[str, float, float, float]]:
    """pid -> (kind, RSS MB, USS MB, CPU seconds so far) for every process of the run (USS for pools only: it
    walks the process's page maps)."""
    out = {}
    try:
        procs = [driver, *driver.children(recursive=True)]
    except psutil.NoSuchProcess:
        return out
    for p in procs:
        role = _role(p, driver.pid)
        if role is None:
            continue
        try:
            with p.oneshot():
                t = p.cpu_times()
                uss = p.memory_full_info().uss / 2**20 if role == "DevicePool" else 0.0
                out[p.pid] = (role, p.memory_info().rss / 2**20, uss, t.user + t.system)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    return out


def run_point(devices: int, args: argparse.Namespace, out_root: Path) -> dict[str, Any]:
    out = out_root / f"n{devices}"
    cmd = [sys.executable, str(ROOT / "run.py"), str(args.topology), "--out", str(out),
           "--set", f"devices.count={devices}", "--set", f"duration_s={args.duration:g}",
           "--set", f"warmup_s={args.warmup:g}", "--set", f"pools.devices_per_pool={args.per_pool}",
           *[a for s in args.set for a in ("--set", s)]]
    load_before = os.getloadavg()[0]
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    driver = psutil.Process(proc.pid)
    lines: list[str] = []
    phase = threading.Event()  # the measured strategy phase has begun: CPU is counted from here

    def read() -> None:
        for line in proc.stdout or ():
            lines.append(line)
            if line.startswith("phase "):
                phase.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    peak_pool_rss: dict[int, float] = {}
    peak_pool_uss: dict[int, float] = {}
    at_phase: dict[int, float] = {}
    last: dict[int, tuple[str, float, float, float]] = {}
    t_phase = None
    window_start: dict[int, float] = {}
    window_end: dict[int, float] = {}
    while proc.poll() is None:
        for pid, (role, rss, uss, cpu) in _sample(driver).items():
            last[pid] = (role, rss, uss, cpu)
            if role == "DevicePool":
                peak_pool_rss[pid] = max(peak_pool_rss.get(pid, 0.0), rss)
                peak_pool_uss[pid] = max(peak_pool_uss.get(pid, 0.0), uss)
        if phase.is_set() and t_phase is None:
            t_phase, at_phase = time.monotonic(), {pid: v[3] for pid, v in last.items()}
            if args.py_spy:  # once, at the phase's start
                for kind in ("DevicePool", "CloudServer"):
                    _profile(next((p for p, v in last.items() if v[0] == kind), None), kind, args, out_root, devices)
        if t_phase is not None:  # CPU over the measured seconds only (after warm-up, before the results are written)
            t_in = time.monotonic() - t_phase
            if t_in >= args.warmup and not window_start:
                window_start = {pid: v[3] for pid, v in last.items()}
            if t_in <= args.warmup + args.duration:
                window_end = {pid: v[3] for pid, v in last.items()}
        time.sleep(1.0)
    wall = time.monotonic() - t0
    reader.join(5)
    log = "".join(lines)
    if proc.returncode != 0:
        raise RuntimeError(f"run with {devices} devices exited {proc.returncode}:\n{log[-3000:]}")
    summary = json.loads((out / "summary.json").read_text())
    st = next(iter(summary["strategies"].values()))
    fid = summary["fidelity"]
    cpu = {r: sum(v[3] - at_phase.get(pid, 0.0) for pid, v in last.items() if v[0] == r) for r in ROLES}
    window_s = args.duration
    cpu_window = {r: sum(window_end.get(pid, 0.0) - window_start.get(pid, window_end.get(pid, 0.0))
                         for pid, v in last.items() if v[0] == r) for r in ROLES}
    done = st["by_status"].get("completed", 0)
    rate = summary["topology"]["devices"][0]["arrival"]["rate_hz"]
    return {
        "devices": devices, "pools": len(peak_pool_rss), "load1": load_before, "wall_s": wall,
        "phase_to_exit_s": time.monotonic() - (t_phase or t0),
        "offered_rps": devices * rate, "achieved_rps": st["throughput_rps"],
        "timed_out": st["by_status"]["timed_out"], "failed": st["by_status"]["failed"],
        "up_err_p95_pct": fid["uplink_vs_configured_pct"]["p95"], "write_err_p95_ms": fid["uplink_error_ms_p95"],
        "e2e_p50_ms": st["latency_ms"]["p50"], "e2e_p95_ms": st["latency_ms"]["p95"],
        "emu_wait_p95_ms": fid["emu_wait_ms_p95"],
        "pool_rss_mb": sum(peak_pool_rss.values()), "pool_uss_mb": sum(peak_pool_uss.values()),
        "completed": done, "cpu_window_s": cpu_window, "window_done": st["throughput_rps"] * window_s,
        "completion": done / max(1, st.get("requests", 0) or sum(st["by_status"].values())),
        "loop": _loop_line(log),
        "cpu_s": cpu, "timeline_s": summary.get("timeline_s", {}),
    }


def _loop_line(log: str) -> str:
    """Which event loop the run's actors said they ran (`event loop: uvloop`), or "not reported"."""
    found = sorted({line.split("event loop:", 1)[1].split()[0] for line in log.splitlines() if "event loop:" in line})
    return ",".join(found) or "not reported"


def _profile(pid: int | None, kind: str, args: argparse.Namespace, out_root: Path, devices: int) -> None:
    """py-spy one process for --py-spy seconds (in the background) and print its hottest frames when done."""
    if pid is None:
        return
    raw = out_root / f"{kind}-n{devices}.pyspy.txt"
    exe = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    cmd = [exe, "record", "-p", str(pid), "-d", f"{args.py_spy:g}", "-r", "100", "-f", "raw", "-o", str(raw),
           "--nonblocking"]

    def run() -> None:
        subprocess.run(cmd, capture_output=True, timeout=args.py_spy + 30, check=False)
        print(hot_frames(raw, kind, devices), flush=True)

    threading.Thread(target=run, daemon=True).start()


def hot_frames(raw: Path, kind: str, devices: int, top: int = 12) -> str:
    """Own-time (leaf) and inclusive (anywhere on the stack) share per frame from py-spy's raw output; idle
    waits in epoll are kept and named. Inclusive shares overlap (a frame's callers include it)."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    try:
        text = raw.read_text()
    except OSError as e:
        return f"py-spy: no profile ({e}); is it installed (pip install -e '.[profile]')?"
    for line in text.splitlines():
        stack, _, n = line.rpartition(" ")
        if stack and n.isdigit():
            frames = stack.split(";")
            own[frames[-1]] += int(n)
            for frame in set(frames):
                inclusive[frame] += int(n)
    total = sum(own.values()) or 1

    def rows(counts: Counter[str]) -> str:
        return "\n".join(f"  {100 * n / total:5.1f}%  {frame[:110]}" for frame, n in counts.most_common(top))

    below_half = Counter({f: n for f, n in inclusive.items() if n < total / 2})
    return (f"py-spy, one {kind} at {devices} devices ({total} samples), own time per frame:\n{rows(own)}\n"
            f"inclusive (the frame anywhere on the stack; the roots on half the stacks or more left out):\n"
            f"{rows(below_half)}")


def _breaks(row: dict[str, Any]) -> list[str]:
    why = []
    if not _num(row["up_err_p95_pct"]) <= ERROR_P95_PCT:
        why.append(f"uplink error p95 {_num(row['up_err_p95_pct']):.1f}% > {ERROR_P95_PCT:g}%")
    if not row["completion"] >= COMPLETED_FRACTION:
        why.append(f"{100 * row['completion']:.1f}% completed < {COMPLETED_FRACTION:.0%}")
    if row["timed_out"]:
        why.append(f"{row['timed_out']} timed out")
    if row["pool_rss_mb"] / max(1, row["pools"]) > POOL_MB + MB_PER_DEVICE * row["devices"] / max(1, row["pools"]):
        why.append(f"{row['pool_rss_mb'] / max(1, row['pools']):.0f} MB per pool > {POOL_MB:g} MB + its devices")
    if row.get("mb_per_device", 0.0) > MB_PER_DEVICE:
        why.append(f"{row['mb_per_device']:.2f} MB/device > {MB_PER_DEVICE:g}")
    return why


def _num(x: Any) -> float:
    """A figure for the table: a run that completed nothing has no latency or error percentiles (None)."""
    return float("nan") if x is None else float(x)


def print_table(rows: list[dict[str, Any]]) -> None:
    head = (f"{'devices':>7} {'pools':>5} {'load1':>5} {'offer/s':>7} {'done/s':>7} {'t/o':>5} {'fail':>5} "
            f"{'up err p95 %':>12} {'write p95 ms':>12} {'e2e p50':>8} {'e2e p95':>8} {'pool RSS MB':>11} "
            f"{'MB/dev':>6} {'pools cpu%':>10} {'cloud cpu%':>10} {'driver cpu%':>11} {'first ans s':>11}")
    print(head)
    for r in rows:
        pct = {k: 100 * v / r["phase_to_exit_s"] for k, v in r["cpu_s"].items()}
        first = r["timeline_s"].get("first_answer_s")
        print(f"{r['devices']:>7} {r['pools']:>5} {r['load1']:>5.2f} {r['offered_rps']:>7.0f} "
              f"{_num(r['achieved_rps']):>7.1f} {r['timed_out']:>5} {r['failed']:>5} "
              f"{_num(r['up_err_p95_pct']):>12.2f} "
              f"{_num(r['write_err_p95_ms']):>12.2f} {_num(r['e2e_p50_ms']):>8.1f} {_num(r['e2e_p95_ms']):>8.1f} "
              f"{r['pool_rss_mb']:>11.0f} {r.get('mb_per_device', float('nan')):>6.2f} "
              f"{pct['DevicePool']:>10.0f} {pct['CloudServer']:>10.0f} {pct['driver']:>11.0f} "
              f"{first if first is not None else float('nan'):>11.1f}")


def print_cost_table(rows: list[dict[str, Any]]) -> None:
    """CPU milliseconds per completed request per process kind and in total, memory per pool and per device."""
    kinds = ("DevicePool", "CloudServer", "driver", "raylet", "gcs", "ray_other")
    print("CPU ms per completed request over the measured seconds (after warm-up; sampled once a second), "
          "memory, completion:")
    print(f"{'devices':>7} {'load1':>5} {'loop':>8} " + " ".join(f"{k:>11}" for k in kinds)
          + f" {'total':>7} {'RSS/pool':>8} {'USS/pool':>8} {'MB/dev':>6} {'done %':>6} {'up err p95':>10}")
    for r in rows:
        n = r["window_done"] if r["window_done"] >= 1 else float("nan")
        ms = {k: 1000 * r["cpu_window_s"].get(k, 0.0) / n for k in kinds}
        pools = max(1, r["pools"])
        print(f"{r['devices']:>7} {r['load1']:>5.2f} {r['loop']:>8} " + " ".join(f"{ms[k]:>11.3f}" for k in kinds)
              + f" {cpu_ms_total(r):>7.3f} {r['pool_rss_mb'] / pools:>8.0f} {r['pool_uss_mb'] / pools:>8.0f} "
              f"{r.get('mb_per_device', float('nan')):>6.2f} {100 * r['completion']:>6.1f} "
              f"{_num(r['up_err_p95_pct']):>10.2f}")


def cpu_ms_total(row: dict[str, Any]) -> float:
    """CPU milliseconds per completed request over the measured window, all process kinds together."""
    done = row["window_done"]  # none completed: no per-request figure (not CPU seconds per one request)
    return 1000 * sum(row["cpu_window_s"].values()) / done if done >= 1 else float("nan")


def add_memory_per_device(rows: list[dict[str, Any]]) -> float:
    """Fixed cost per pool = the smallest run's RSS per pool; MB/device = what the rest adds, per device."""
    base = min(rows, key=lambda r: r["devices"])
    fixed = base["pool_rss_mb"] / max(1, base["pools"])
    for r in rows:
        if r is not base and r["devices"] > base["devices"]:
            extra_devices = r["devices"] - base["devices"] * r["pools"]  # beyond what each pool's fixed cost holds
            r["mb_per_device"] = ((r["pool_rss_mb"] - r["pools"] * fixed) / extra_devices if extra_devices > 0
                                  else float("nan"))  # no figure: the smallest point must be smaller than a pool
    return fixed


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = [r["devices"] for r in rows]
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.6))
    a.plot(n, [r["up_err_p95_pct"] for r in rows], "o-", label="uplink vs configured, p95")
    a.axhline(ERROR_P95_PCT, color="red", ls="--", lw=1, label=f"target {ERROR_P95_PCT:g}%")
    a.set_xlabel("devices (1 request/s each)")
    a.set_ylabel("link-time error %")
    a.legend()
    b.plot(n, [r["pool_rss_mb"] for r in rows], "o-", label="pools' RSS, MB")
    b.set_xlabel("devices (1 request/s each)")
    b.set_ylabel("MB")
    b2 = b.twinx()
    b2.plot(n, [r.get("mb_per_device", float("nan")) for r in rows], "s--", color="tab:orange",
            label="MB/device beyond fixed")
    b2.set_ylabel("MB per device")
    b.legend(loc="upper left")
    b2.legend(loc="lower right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--devices", default="100,1000,2500,5000",
                    help="comma-separated device counts (the smallest, below a pool's size, gives the fixed cost)")
    ap.add_argument("--duration", type=float, default=20.0, help="measured seconds per run")
    ap.add_argument("--warmup", type=float, default=5.0)
    ap.add_argument("--per-pool", type=int, default=1000, help="pools.devices_per_pool (one pool per 1,000 devices)")
    ap.add_argument("--topology", type=Path, default=TOPOLOGY)
    ap.add_argument("--set", action="append", default=[], help="extra --set for every run")
    ap.add_argument("--plot", type=Path, help="save the two curves as a PNG")
    ap.add_argument("--py-spy", type=float, default=0.0, metavar="SECONDS",
                    help="profile one pool with py-spy for this long at the start of each measured phase")
    ap.add_argument("--keep", type=Path, help="keep each run's results folder here (default: removed)")
    args = ap.parse_args(argv)
    counts = sorted({int(x) for x in args.devices.split(",")})
    cpu = psutil.cpu_count() or 0
    print(f"== density: {args.topology.name}, {args.duration:g} s measured + {args.warmup:g} s warm-up per point, "
          f"{args.per_pool} devices per pool; host {cpu} cores, "
          f"{psutil.virtual_memory().total / 2**30:.0f} GiB, load {os.getloadavg()[0]:.2f} at start", flush=True)
    rows = []
    with tempfile.TemporaryDirectory(prefix="splitbed-density-") as tmp:
        out_root = args.keep or Path(tmp)
        for n in counts:
            rows.append(run_point(n, args, out_root))
            print(f"  {n} devices: done ({rows[-1]['wall_s']:.0f} s)", flush=True)
    fixed = add_memory_per_device(rows)
    print(f"pool fixed cost (RSS per pool at {rows[0]['devices']} devices): {fixed:.0f} MB")
    print_table(rows)
    print_cost_table(rows)
    broken = [(r["devices"], why) for r in rows if (why := _breaks(r))]
    ok = [r["devices"] for r in rows if not _breaks(r)]
    print(f"targets: uplink error p95 <= {ERROR_P95_PCT:g}%, >= {COMPLETED_FRACTION:.0%} completed, no time-outs, "
          f"<= {POOL_MB:g} MB per pool beyond {MB_PER_DEVICE:g} MB/device; CPU <= {CPU_MS:g} ms per request, all "
          f"processes: " + ", ".join(f"{r['devices']}: {cpu_ms_total(r):.3f} ms" for r in rows))
    print(f"largest count meeting every target: {max(ok) if ok else 'none'}")
    if broken:
        print(f"breaks at {broken[0][0]} devices: {'; '.join(broken[0][1])}")
    if args.plot:
        plot(rows, args.plot)
        print(f"plot: {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
