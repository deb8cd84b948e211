"""Real CPU caps (cgroup CFS bandwidth) for the threads that run emulated device compute.

`throttling.cpu` only stretches time; this backend makes the kernel stop a
device's compute thread once it has used its share of each scheduling period.
A cap is not a speed, though: on this kind of host a 25% quota gave 26% CPU but
a ResNet head took 4.6-5x longer instead of 4x (caches, the period boundary,
other threads), so a cap is calibrated against the head time it should produce
(`calibrate`) instead of being set from the speed ratio.

Caps are per thread, not per process, so one process can host many devices:
cgroup v1 moves a thread with `tasks`; cgroup v2 needs threaded cgroups
(`cgroup.type` = threaded) and `cgroup.threads`, inside the process's own
cgroup, since a thread cannot leave its process's threaded domain. Threads a
capped thread starts inherit its group; a pool made before (OpenBLAS) does not.
OpenMP's thread count is per thread: a new thread's first torch op starts a
full OpenMP team inside the cap (even after `torch.set_num_threads(1)` in the
main thread), whose spinning workers eat the quota (a 100% cap then ran a
matmul 4x slower). Call `torch.set_num_threads(1)` in the compute thread itself.

As in Mininet, building the file writes is kept apart from doing them: the
builders return `[(path, value)]` and are unit-tested without root. `CpuCap`
owns the groups it makes (`<root>/splitbed-<run_id>/<name>`) and removes them on
close; `sweep` removes what a killed run left behind.
"""

from __future__ import annotations

import atexit
import errno
import math
import numbers
import os
import re
import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

PREFIX = "splitbed-"
MIN_QUOTA_US = 1_000  # kernel floor for cfs_quota_us / cpu.max
MIN_PERIOD_US = 1_000
MAX_PERIOD_US = 1_000_000
DEFAULT_PERIOD_US = 100_000  # the kernel's default period
# Unused quota does not carry over, so compute shorter than the period runs at
# full speed until the quota is gone and then stops for the rest of the period:
# its time depends on where in the period it starts (with 100 ms, a 15 ms matmul
# at 1/3 of a CPU had a median of 16 ms; with 10 ms or 5 ms, about 3x). A period
# well below the compute time makes the cap act like a slower CPU; 5 ms spread
# less than 10 ms and the time fell steadily with the fraction; 3 ms was erratic.
CAP_PERIOD_US = 5_000
RMDIR_WAIT_S = 1.0  # exiting threads can keep a group busy for a moment

MECHANISM_V1 = "cgroup v1 cpu.cfs_quota_us cap on the device compute threads (calibrated to the target head time)"
MECHANISM_V2 = ("cgroup v2 cpu.max cap on the device compute threads (threaded cgroups; calibrated"
                " to the target head time)")

Write = tuple[str, str]  # (file, value): one write(2) of value to file
_NAME = re.compile(r"[A-Za-z0-9_.-]+")
_THREADS_FILE = {1: "tasks", 2: "cgroup.threads"}


class CgroupUnavailable(RuntimeError):
    """No usable cgroup cpu controller here (the reason says why)."""


@dataclass(frozen=True)
class Mount:
    root: str  # the directory of the hierarchy that is mounted (mountinfo field 4)
    mount_point: str
    fstype: str
    options: tuple[str, ...]  # per-mount options (rw/ro, ...)
    super_options: tuple[str, ...]  # v1: the controllers bound to the hierarchy


@dataclass(frozen=True)
class CgroupSupport:
    version: Literal[1, 2] | None
    root: str | None  # where groups are made: the process's own group in the cpu hierarchy (the mount, at the top)
    writable: bool  # caps can be made under root
    reason: str = ""  # why not, when writable is False


def _unescape(field: str) -> str:
    """mountinfo escapes space, tab, newline and backslash as octal (\\040)."""
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def parse_mountinfo(text: str) -> list[Mount]:
    """The cgroup and cgroup2 mounts listed in /proc/<pid>/mountinfo text."""
    mounts = []
    for line in text.splitlines():
        head, sep, tail = line.partition(" - ")
        if not sep:
            continue
        fields, rest = head.split(), tail.split()
        if len(fields) < 6 or len(rest) < 3 or rest[0] not in ("cgroup", "cgroup2"):
            continue
        mounts.append(Mount(root=_unescape(fields[3]), mount_point=_unescape(fields[4]), fstype=rest[0],
                            options=tuple(fields[5].split(",")), super_options=tuple(rest[2].split(","))))
    return mounts


def find_cpu_mount(mounts: list[Mount]) -> tuple[Literal[1, 2] | None, Mount | None]:
    """The v1 hierarchy with the cpu controller, else the v2 hierarchy, else (None, None)."""
    for m in mounts:
        if m.fstype == "cgroup" and "cpu" in m.super_options:
            return 1, m
    for m in mounts:
        if m.fstype == "cgroup2":
            return 2, m
    return None, None


def own_group(proc_cgroup: str, version: int) -> str | None:
    """A task's group path in the cpu hierarchy, from /proc/<pid>/cgroup text."""
    for line in proc_cgroup.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        hierarchy_id, controllers, path = parts
        if version == 1 and "cpu" in controllers.split(","):
            return path
        if version == 2 and hierarchy_id == "0" and controllers == "":
            return path
    return None


def _group_dir(mount: Mount, path: str | None) -> str:
    rel = os.path.relpath(path or "/", mount.root)
    if rel == "." or rel.startswith(".."):  # outside what is mounted (another cgroup namespace)
        return mount.mount_point
    return os.path.join(mount.mount_point, rel)


def _read(path: str) -> str:
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return ""


def detect(mountinfo: str | None = None, proc_cgroup: str | None = None) -> CgroupSupport:
    """Whether CPU caps can be made here, and where; the texts default to this process's /proc files."""
    if mountinfo is None:
        mountinfo = _read("/proc/self/mountinfo")
    version, mount = find_cpu_mount(parse_mountinfo(mountinfo))
    if version is None or mount is None:
        return CgroupSupport(None, None, False, "no cgroup hierarchy with the cpu controller is mounted")
    if proc_cgroup is None:
        proc_cgroup = _read("/proc/self/cgroup")
    root = _group_dir(mount, own_group(proc_cgroup, version))

    def unusable(reason: str) -> CgroupSupport:
        return CgroupSupport(version, root, False, reason)

    if version == 1 and not os.path.exists(os.path.join(root, "cpu.cfs_quota_us")):
        return unusable(f"cgroup v1 cpu controller without CFS bandwidth control (no {root}/cpu.cfs_quota_us)")
    if version == 2:
        if "cpu" not in _read(os.path.join(mount.mount_point, "cgroup.controllers")).split():
            return unusable("cgroup v2 without the cpu controller (not in cgroup.controllers; bound to v1?)")
        if "cpu" not in _read(os.path.join(root, "cgroup.subtree_control")).split():
            return unusable(f"cgroup v2: the cpu controller is not enabled in {root}/cgroup.subtree_control")
    if "ro" in mount.options or "ro" in mount.super_options:
        return unusable(f"{mount.mount_point} is mounted read-only")
    if not os.access(root, os.W_OK):
        if os.geteuid() != 0:
            return unusable(f"not root, and {root} is not delegated to this user")
        return unusable(f"no write access to {root}")
    return CgroupSupport(version, root, True)


def describe(support: CgroupSupport) -> str:
    """The CPU mechanism line for a run's output."""
    if not support.writable:
        return f"no cgroup CPU cap ({support.reason})"
    return MECHANISM_V1 if support.version == 1 else MECHANISM_V2


def _version(support: CgroupSupport) -> Literal[1, 2]:
    if support.version not in (1, 2):
        raise ValueError(f"no cgroup cpu controller: {support.reason or 'unknown'}")
    return support.version


def quota_us(cpu_fraction: float, period_us: int = DEFAULT_PERIOD_US) -> int:
    """CPU time per period for a share of one CPU (> 1.0 spans several CPUs), floored at the kernel's 1 ms."""
    if isinstance(cpu_fraction, bool) or not isinstance(cpu_fraction, numbers.Real) \
            or not math.isfinite(cpu_fraction) or cpu_fraction <= 0:
        raise ValueError(f"cpu_fraction must be a finite number > 0, got {cpu_fraction!r}")
    if not MIN_PERIOD_US <= period_us <= MAX_PERIOD_US:
        raise ValueError(f"period_us must be in [{MIN_PERIOD_US}, {MAX_PERIOD_US}], got {period_us}")
    return max(MIN_QUOTA_US, round(cpu_fraction * period_us))


def quota_writes(support: CgroupSupport, group_path: str, cpu_fraction: float,
                 period_us: int = DEFAULT_PERIOD_US) -> list[Write]:
    """Cap `group_path` at `cpu_fraction` of one CPU."""
    version, quota = _version(support), quota_us(cpu_fraction, period_us)
    if version == 1:
        return [(os.path.join(group_path, "cpu.cfs_period_us"), str(period_us)),
                (os.path.join(group_path, "cpu.cfs_quota_us"), str(quota))]
    return [(os.path.join(group_path, "cpu.max"), f"{quota} {period_us}")]


def run_group_writes(support: CgroupSupport, run_path: str) -> list[Write]:
    """Set up a run's parent group after mkdir (v2: threaded, with cpu handed down to its children)."""
    if _version(support) == 1:
        return []
    return [(os.path.join(run_path, "cgroup.type"), "threaded"),
            (os.path.join(run_path, "cgroup.subtree_control"), "+cpu")]


def attach_thread_writes(support: CgroupSupport, group_path: str, tid: int) -> list[Write]:
    """Move one thread (native id) into `group_path` (v2: the group is made threaded first; a no-op if it is)."""
    if _version(support) == 1:
        return [(os.path.join(group_path, "tasks"), str(tid))]
    return [(os.path.join(group_path, "cgroup.type"), "threaded"),
            (os.path.join(group_path, "cgroup.threads"), str(tid))]


def detach_thread_writes(support: CgroupSupport, home_path: str, tid: int) -> list[Write]:
    """Move one thread back to `home_path` (the root: the process's own group, the v2 threaded domain)."""
    return [(os.path.join(home_path, _THREADS_FILE[_version(support)]), str(tid))]


def apply(writes: list[Write]) -> None:
    """Do the writes in order, one write(2) each; errors name the file and the value."""
    for path, value in writes:
        try:
            fd = os.open(path, os.O_WRONLY)
            try:
                os.write(fd, value.encode())
            finally:
                os.close(fd)
        except OSError as e:
            raise OSError(e.errno, f"{e.strerror} (writing {value!r})", path) from None


def _thread_ids(support: CgroupSupport, group_path: str) -> list[int]:
    return [int(x) for x in _read(os.path.join(group_path, _THREADS_FILE[_version(support)])).split()]


def _evacuate(support: CgroupSupport, group_path: str, home_path: str) -> None:
    """Move every thread in `group_path` to `home_path`; threads that exit meanwhile are skipped."""
    for tid in _thread_ids(support, group_path):
        try:
            apply(detach_thread_writes(support, home_path, tid))
        except ProcessLookupError:
            pass
        except OSError:
            if support.version != 2:
                raise
            # v2: a whole process in a domain group cannot move by thread; move the process.
            try:
                apply([(os.path.join(home_path, "cgroup.procs"), str(tid))])
            except ProcessLookupError:
                pass


def _drain_and_rmdir(support: CgroupSupport, group_path: str, home_path: str) -> bool:
    """Empty and remove one group (no children); False if it was already gone."""
    deadline = time.monotonic() + RMDIR_WAIT_S
    while True:
        if not os.path.isdir(group_path):
            return False
        _evacuate(support, group_path, home_path)
        try:
            os.rmdir(group_path)
            return True
        except FileNotFoundError:
            return False
        except OSError as e:
            if e.errno != errno.EBUSY or time.monotonic() > deadline:
                raise
        time.sleep(0.01)


def _rmdir_if_empty(path: str) -> bool:
    try:
        os.rmdir(path)
        return True
    except OSError as e:
        if e.errno in (errno.ENOENT, errno.ENOTEMPTY, errno.EBUSY, errno.EEXIST):
            return False
        raise


def sweep(prefix: str = PREFIX, support: CgroupSupport | None = None,
          keep: Callable[[str], bool] | None = None) -> list[str]:
    """Remove `<root>/<prefix>*` groups left by a killed run (their threads go to the root first, deepest first);
    a top-level group for which `keep(name)` is true is left alone (a live run's, throttling.cleanup)."""
    support = support if support is not None else detect()
    if not support.writable or support.root is None:
        return []
    root, removed = support.root, []
    for entry in sorted(os.listdir(root)):
        top = os.path.join(root, entry)
        if not entry.startswith(prefix) or not os.path.isdir(top) or (keep is not None and keep(entry)):
            continue
        for dirpath, _, _ in os.walk(top, topdown=False):
            if _drain_and_rmdir(support, dirpath, root):
                removed.append(dirpath)
    return removed


def sweep_run(run_id: str, support: CgroupSupport | None = None) -> list[str]:
    """Remove one run's `<root>/splitbed-<run_id>` tree (what its killed pools left), and only it: a prefix
    sweep by run 1234 would also empty live run 12345's `splitbed-12345`."""
    name = PREFIX + run_id
    return sweep(name, support, keep=lambda entry: entry != name)

def _check_name(what: str, name: str) -> None:
    if not _NAME.fullmatch(name) or name in (".", ".."):
        raise ValueError(f"{what} must be letters, digits, '_', '-' or '.', got {name!r}")


class CpuCap:
    """A capped cgroup `<root>/splitbed-<run_id>/<name>` for some threads; removed on close (also at exit)."""

    def __init__(self, name: str, cpu_fraction: float, run_id: str, support: CgroupSupport | None = None,
                 period_us: int = CAP_PERIOD_US):
        _check_name("name", name)
        _check_name("run_id", run_id)
        quota_us(cpu_fraction, period_us)  # validate before making anything
        self.support = support if support is not None else detect()
        if not self.support.writable or self.support.root is None:
            raise CgroupUnavailable(self.support.reason or "cgroup cpu controller not usable")
        self.root = self.support.root
        self.run_path = os.path.join(self.root, PREFIX + run_id)
        self.path = os.path.join(self.run_path, name)
        self.base_period_us = period_us
        self.fraction = cpu_fraction
        self.period_us = period_us
        self._lock = threading.Lock()
        self._made = False
        self._closed = False
        try:
            self._make()
            self.set_fraction(cpu_fraction)
        except BaseException:
            self._remove()
            raise
        atexit.register(self.close)

    def _make(self) -> None:
        try:
            os.mkdir(self.run_path)
        except FileExistsError:
            pass
        apply(run_group_writes(self.support, self.run_path))
        try:
            os.mkdir(self.path)
        except FileExistsError:
            raise FileExistsError(errno.EEXIST, "cgroup already exists (left by a killed run? see sweep())",
                                  self.path) from None
        self._made = True

    def _period_for(self, cpu_fraction: float) -> int:
        """The cap's period, lengthened where the 1 ms quota floor would raise a small fraction."""
        return min(MAX_PERIOD_US, max(self.base_period_us, math.ceil(MIN_QUOTA_US / cpu_fraction)))

    def set_fraction(self, cpu_fraction: float) -> None:
        """Cap the group at `cpu_fraction` of one CPU (> 1.0: several CPUs)."""
        quota_us(cpu_fraction, self.base_period_us)  # validates
        period_us = self._period_for(cpu_fraction)
        with self._lock:
            if self._closed:
                raise RuntimeError(f"CpuCap {self.path} is closed")
            apply(quota_writes(self.support, self.path, cpu_fraction, period_us))
            self.fraction, self.period_us = cpu_fraction, period_us

    def attach_thread(self, tid: int | None = None) -> int:
        """Move a thread (native id; default: the calling thread) into the group; returns the id."""
        tid = threading.get_native_id() if tid is None else tid
        with self._lock:
            if self._closed:
                raise RuntimeError(f"CpuCap {self.path} is closed")
            apply(attach_thread_writes(self.support, self.path, tid))
        return tid

    def detach_thread(self, tid: int | None = None) -> None:
        """Move a thread back to the root group."""
        tid = threading.get_native_id() if tid is None else tid
        apply(detach_thread_writes(self.support, self.root, tid))

    def thread_ids(self) -> list[int]:
        """Native ids of the threads now in the group (including threads they started)."""
        return _thread_ids(self.support, self.path) if self._made else []

    def _remove(self) -> None:
        if self._made:
            _drain_and_rmdir(self.support, self.path, self.root)
            self._made = False
        _rmdir_if_empty(self.run_path)  # the last cap of the run removes the parent

    def close(self) -> None:
        """Move the group's threads back to the root and remove the group (and the run's parent when empty)."""
        with self._lock:
            if self._closed:
                return
            self._remove()
            self._closed = True
        atexit.unregister(self.close)

    def __enter__(self) -> CpuCap:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"CpuCap({self.path!r}, fraction={self.fraction:.3f}, period_us={self.period_us})"


@dataclass(frozen=True)
class Calibration:
    fraction: float  # the cap left set on the group
    achieved_ms: float  # median time of work() under it
    target_ms: float
    uncapped_ms: float
    iterations: int  # capped rounds measured
    within_tolerance: bool
    history: tuple[tuple[float, float], ...] = ()  # (fraction, median ms) of each round
    threads: int = 1  # threads in the group at the end; > 1: work() started threads that share the quota


def _median_ms(work: Callable[[], None], runs: int) -> float:
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        work()
        times.append((time.perf_counter() - t0) * 1000.0)
    return statistics.median(times)


def calibrate(work: Callable[[], None], target_ms: float, cap: CpuCap, runs: int = 5, max_iters: int = 6,
              tol: float = 0.05) -> Calibration:
    """Find the cap under which `work()` takes `target_ms` (median of `runs`), from the calling thread.

    The caller's thread must already be attached to `cap` (and, for torch, have called
    `torch.set_num_threads(1)` itself: see the module docstring). Starts at uncapped/target and corrects
    multiplicatively (`fraction *= measured / target`) until within `tol` or `max_iters` rounds; the
    closest round's fraction is left set on `cap`.
    """
    if not target_ms > 0 or runs < 1 or max_iters < 1 or tol < 0:
        raise ValueError("need target_ms > 0, runs >= 1, max_iters >= 1, tol >= 0")
    if threading.get_native_id() not in cap.thread_ids():
        raise RuntimeError("calibrate must run in a thread attached to the cap (cap.attach_thread())")
    lo, hi = MIN_QUOTA_US / MAX_PERIOD_US, float(os.cpu_count() or 1)
    cap.set_fraction(hi)  # effectively uncapped
    work()  # warm-up: first-call allocations, caches
    uncapped_ms = _median_ms(work, runs)
    fraction = min(hi, max(lo, uncapped_ms / target_ms))
    history: list[tuple[float, float]] = []
    for _ in range(max_iters):
        cap.set_fraction(fraction)
        measured = _median_ms(work, runs)
        history.append((fraction, measured))
        if abs(measured - target_ms) <= tol * target_ms:
            break
        fraction = min(hi, max(lo, fraction * measured / target_ms))
    best_fraction, best_ms = min(history, key=lambda h: abs(h[1] - target_ms))
    if best_fraction != cap.fraction:
        cap.set_fraction(best_fraction)
    return Calibration(fraction=best_fraction, achieved_ms=best_ms, target_ms=target_ms, uncapped_ms=uncapped_ms,
                       iterations=len(history), within_tolerance=abs(best_ms - target_ms) <= tol * target_ms,
                       history=tuple(history), threads=len(cap.thread_ids()))
