"""cgroup CPU caps: mountinfo parsing and write builders (no root), then real caps (root, a usable cpu controller)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator

import pytest

from throttling import cgroup
from throttling.cgroup import CgroupSupport, CpuCap

V1 = CgroupSupport(1, "/sys/fs/cgroup/cpu", True)
V2 = CgroupSupport(2, "/sys/fs/cgroup", True)

MOUNTINFO_V1 = """\
22 1 0:21 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
31 22 0:28 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:9 - tmpfs tmpfs ro,mode=755
32 31 0:29 / /sys/fs/cgroup/unified rw,nosuid,nodev,noexec,relatime shared:10 - cgroup2 cgroup2 rw,nsdelegate
35 31 0:32 / /sys/fs/cgroup/cpuset rw,nosuid,nodev,noexec,relatime shared:15 - cgroup cgroup rw,cpuset
36 31 0:33 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid,nodev,noexec,relatime shared:16 - cgroup cgroup rw,cpu,cpuacct
37 31 0:34 / /sys/fs/cgroup/memory rw,nosuid,nodev,noexec,relatime shared:17 - cgroup cgroup rw,memory
"""
MOUNTINFO_V2 = """\
25 30 0:23 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
35 25 0:30 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:9 - cgroup2 cgroup2 rw,nsdelegate
"""
MOUNTINFO_NONE = """\
25 30 0:23 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
26 30 0:5 / /proc rw,nosuid,nodev,noexec,relatime shared:12 - proc proc rw
"""
PROC_CGROUP_V1 = "12:cpuset:/\n4:cpu,cpuacct:/user.slice\n1:name=systemd:/user.slice/session-1.scope\n0::/user.slice\n"
PROC_CGROUP_V2 = "0::/user.slice/user-1000.slice/session-2.scope\n"


# ---- parsing and detection (no root) ----


def test_parse_mountinfo_v1_finds_the_cpu_hierarchy_not_cpuset_or_unified():
    mounts = cgroup.parse_mountinfo(MOUNTINFO_V1)
    assert [m.mount_point for m in mounts] == ["/sys/fs/cgroup/unified", "/sys/fs/cgroup/cpuset",
                                               "/sys/fs/cgroup/cpu,cpuacct", "/sys/fs/cgroup/memory"]
    version, mount = cgroup.find_cpu_mount(mounts)
    assert version == 1
    assert mount.mount_point == "/sys/fs/cgroup/cpu,cpuacct"
    assert mount.super_options == ("rw", "cpu", "cpuacct")
    assert cgroup.own_group(PROC_CGROUP_V1, 1) == "/user.slice"


def test_parse_mountinfo_v2_and_escaped_paths():
    version, mount = cgroup.find_cpu_mount(cgroup.parse_mountinfo(MOUNTINFO_V2))
    assert (version, mount.mount_point, mount.root, mount.fstype) == (2, "/sys/fs/cgroup", "/", "cgroup2")
    assert cgroup.own_group(PROC_CGROUP_V2, 2) == "/user.slice/user-1000.slice/session-2.scope"
    escaped = "40 31 0:38 /a\\040b /mnt/my\\040cg rw - cgroup2 cgroup2 rw\n"
    assert cgroup.parse_mountinfo(escaped)[0].mount_point == "/mnt/my cg"
    assert cgroup.parse_mountinfo(escaped)[0].root == "/a b"


def test_parse_mountinfo_none():
    assert cgroup.parse_mountinfo(MOUNTINFO_NONE) == []
    assert cgroup.find_cpu_mount([]) == (None, None)
    support = cgroup.detect(MOUNTINFO_NONE, "")
    assert (support.version, support.root, support.writable) == (None, None, False)
    assert "no cgroup" in support.reason
    assert cgroup.describe(support).startswith("no cgroup CPU cap (")


def _fake_mount(path: str, fstype: str, opts: str = "rw", super_opts: str = "rw") -> str:
    return f"40 31 0:38 / {path} {opts},relatime - {fstype} {fstype} {super_opts}\n"


def test_detect_v1_uses_the_process_group_under_the_mount(tmp_path):
    group = tmp_path / "user.slice"
    group.mkdir()
    (group / "cpu.cfs_quota_us").write_text("-1\n")
    support = cgroup.detect(_fake_mount(str(tmp_path), "cgroup", super_opts="rw,cpu,cpuacct"), PROC_CGROUP_V1)
    assert support == CgroupSupport(1, str(group), os.access(group, os.W_OK), support.reason)
    assert support.writable or "not root" in support.reason


def test_detect_read_only_and_missing_bandwidth_control(tmp_path):
    mountinfo = _fake_mount(str(tmp_path), "cgroup", super_opts="rw,cpu")
    assert "CFS bandwidth" in cgroup.detect(mountinfo, "1:cpu:/\n").reason
    (tmp_path / "cpu.cfs_quota_us").write_text("-1\n")
    support = cgroup.detect(_fake_mount(str(tmp_path), "cgroup", opts="ro", super_opts="rw,cpu"), "1:cpu:/\n")
    assert not support.writable and "read-only" in support.reason


def test_detect_v2_needs_cpu_in_controllers_and_subtree_control(tmp_path):
    mountinfo = _fake_mount(str(tmp_path), "cgroup2")
    assert "cgroup.controllers" in cgroup.detect(mountinfo, "0::/\n").reason
    (tmp_path / "cgroup.controllers").write_text("cpuset cpu io memory pids\n")
    (tmp_path / "cgroup.subtree_control").write_text("memory pids\n")
    support = cgroup.detect(mountinfo, "0::/\n")
    assert support.version == 2 and not support.writable
    assert "subtree_control" in support.reason
    (tmp_path / "cgroup.subtree_control").write_text("cpu memory pids\n")
    support = cgroup.detect(mountinfo, "0::/\n")
    assert support.root == str(tmp_path)
    assert support.writable == os.access(tmp_path, os.W_OK)


# ---- builders (no root) ----


def test_quota_writes_v1_and_v2():
    g1 = "/sys/fs/cgroup/cpu/splitbed-r1/dev0"
    assert cgroup.quota_writes(V1, g1, 0.25) == [(f"{g1}/cpu.cfs_period_us", "100000"),
                                                 (f"{g1}/cpu.cfs_quota_us", "25000")]
    g2 = "/sys/fs/cgroup/splitbed-r1/dev0"
    assert cgroup.quota_writes(V2, g2, 0.25) == [(f"{g2}/cpu.max", "25000 100000")]
    assert cgroup.quota_writes(V2, g2, 2.5, period_us=10_000) == [(f"{g2}/cpu.max", "25000 10000")]


def test_quota_floor_is_1000_us():
    assert cgroup.quota_us(0.001) == 1000
    assert cgroup.quota_us(0.05, period_us=10_000) == 1000
    assert cgroup.quota_writes(V1, "/g", 0.0001)[1] == ("/g/cpu.cfs_quota_us", "1000")


@pytest.mark.parametrize("fraction", [0, -0.5, float("nan"), float("inf"), True, "0.5"])
def test_bad_fractions_raise(fraction):
    with pytest.raises(ValueError):
        cgroup.quota_writes(V1, "/g", fraction)


@pytest.mark.parametrize("period_us", [999, 1_000_001])
def test_bad_periods_raise(period_us):
    with pytest.raises(ValueError):
        cgroup.quota_writes(V2, "/g", 0.5, period_us=period_us)


def test_thread_writes_v1_and_v2():
    assert cgroup.attach_thread_writes(V1, "/c/splitbed-r/d", 4242) == [("/c/splitbed-r/d/tasks", "4242")]
    assert cgroup.attach_thread_writes(V2, "/c/splitbed-r/d", 4242) == [("/c/splitbed-r/d/cgroup.type", "threaded"),
                                                                        ("/c/splitbed-r/d/cgroup.threads", "4242")]
    assert cgroup.detach_thread_writes(V1, "/c", 7) == [("/c/tasks", "7")]
    assert cgroup.detach_thread_writes(V2, "/c", 7) == [("/c/cgroup.threads", "7")]
    assert cgroup.run_group_writes(V1, "/c/splitbed-r") == []
    assert cgroup.run_group_writes(V2, "/c/splitbed-r") == [("/c/splitbed-r/cgroup.type", "threaded"),
                                                           ("/c/splitbed-r/cgroup.subtree_control", "+cpu")]


def test_builders_and_cap_refuse_an_unusable_host():
    none = CgroupSupport(None, None, False, "no cgroup hierarchy with the cpu controller is mounted")
    with pytest.raises(ValueError, match="no cgroup"):
        cgroup.quota_writes(none, "/g", 0.5)
    with pytest.raises(cgroup.CgroupUnavailable, match="no cgroup"):
        CpuCap("d0", 0.5, "r", support=none)
    assert cgroup.sweep(support=none) == []
    with pytest.raises(ValueError):
        CpuCap("../x", 0.5, "r", support=V1)


def test_describe():
    assert cgroup.describe(V1) == cgroup.MECHANISM_V1
    assert "cpu.cfs_quota_us" in cgroup.MECHANISM_V1
    assert cgroup.describe(V2) == cgroup.MECHANISM_V2


# ---- real caps (root and a usable cpu controller) ----

HOST = cgroup.detect()
privileged = pytest.mark.skipif(os.geteuid() != 0 or not HOST.writable,
                                reason=f"needs root and a usable cgroup cpu controller: "
                                       f"{'not root' if os.geteuid() != 0 else HOST.reason}")


def _group_of(tid: int) -> str | None:
    with open(f"/proc/self/task/{tid}/cgroup") as f:
        return cgroup.own_group(f.read(), HOST.version)


def _leftovers(run_id: str) -> list[str]:
    return [e for e in os.listdir(HOST.root) if e.startswith(cgroup.PREFIX + run_id)]


@pytest.fixture
def run_id() -> Iterator[str]:
    """A unique run id; whatever it left in the hierarchy is swept, also when the test fails."""
    rid = f"test-{uuid.uuid4().hex[:8]}"
    try:
        yield rid
    finally:
        cgroup.sweep(prefix=cgroup.PREFIX + rid, support=HOST)
        assert not _leftovers(rid)


def _in_thread(fn: Callable[[], object]) -> object:
    """Run fn in a fresh thread (so a cap never holds the test runner's thread); re-raise its error."""
    out: dict[str, object] = {}

    def body() -> None:
        try:
            out["value"] = fn()
        except BaseException as e:  # handed back to the test
            out["error"] = e

    t = threading.Thread(target=body)
    t.start()
    t.join()
    if "error" in out:
        raise out["error"]  # type: ignore[misc]
    return out.get("value")


@pytest.mark.slow  # over 1.5 s here: out of the fast tier
@privileged
def test_quarter_cap_gives_a_quarter_of_a_cpu(run_id):
    with CpuCap("busy", 0.25, run_id, support=HOST) as cap:
        def spin() -> float:
            cap.attach_thread()
            t0, c0 = time.perf_counter(), time.thread_time()
            while time.perf_counter() - t0 < 1.5:
                pass
            return (time.thread_time() - c0) / (time.perf_counter() - t0)

        share = _in_thread(spin)
    print(f"25% cap: busy thread used {share:.3f} of a CPU")
    assert share == pytest.approx(0.25, abs=0.05)


def _timed_ms(work: Callable[[], None]) -> float:
    t0 = time.perf_counter()
    work()
    return (time.perf_counter() - t0) * 1000


@pytest.mark.slow  # over 1.5 s here: out of the fast tier
@privileged
def test_calibrate_reaches_three_times_slower(run_id):
    torch = pytest.importorskip("torch")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    a, b = torch.randn(256, 256), torch.randn(256, 256)
    for _ in range(5):
        a @ b  # warm-up
    op_ms = min(_timed_ms(lambda: a @ b) for _ in range(20))
    reps = max(1, round(15.0 / op_ms))  # about 15 ms of work uncapped

    def work() -> None:
        for _ in range(reps):
            a @ b

    try:
        work()
        uncapped_ms = min(_timed_ms(work) for _ in range(5))
        with CpuCap("calib", 1.0, run_id, support=HOST) as cap:
            def run() -> cgroup.Calibration:
                cap.attach_thread()
                torch.set_num_threads(1)  # per thread: else this thread's first op starts an OpenMP team in the cap
                return cgroup.calibrate(work, target_ms=3 * uncapped_ms, cap=cap)

            result = _in_thread(run)
    finally:
        torch.set_num_threads(threads)
    print(f"calibration: {result}")
    assert result.achieved_ms == pytest.approx(result.target_ms, rel=0.10)
    assert 0.1 < result.fraction < 1.0
    assert 1 <= result.iterations <= 6
    assert result.threads == 1


@privileged
def test_calibrate_refuses_an_unattached_thread(run_id):
    with CpuCap("calib", 1.0, run_id, support=HOST) as cap, pytest.raises(RuntimeError, match="attached"):
        cgroup.calibrate(lambda: None, 10.0, cap)


@privileged
def test_close_removes_the_group_and_returns_the_thread(run_id):
    home = _group_of(threading.get_native_id())
    cap = CpuCap("dev0", 0.5, run_id, support=HOST)
    assert os.path.isdir(cap.path) and cap.path == os.path.join(HOST.root, f"splitbed-{run_id}", "dev0")
    seen: dict[str, object] = {}

    def body() -> None:
        tid = cap.attach_thread()
        seen["tid"], seen["in_cap"], seen["listed"] = tid, _group_of(tid), tid in cap.thread_ids()
        cap.close()
        cap.close()  # idempotent
        seen["after"] = _group_of(tid)

    _in_thread(body)
    assert seen["in_cap"].endswith(f"/splitbed-{run_id}/dev0") and seen["listed"]
    assert seen["after"] == home
    assert not os.path.exists(cap.path) and not os.path.exists(cap.run_path)
    with pytest.raises(RuntimeError, match="closed"):
        cap.set_fraction(0.5)


@privileged
def test_run_parent_is_removed_by_the_last_cap(run_id):
    with CpuCap("a", 0.5, run_id, support=HOST) as a:
        with CpuCap("b", 0.3, run_id, support=HOST) as b:
            assert a.run_path == b.run_path
            with pytest.raises(FileExistsError):
                CpuCap("b", 0.3, run_id, support=HOST)
        assert not os.path.exists(b.path) and os.path.isdir(a.run_path)
    assert not _leftovers(run_id)


@privileged
def test_failing_body_still_removes_the_group(run_id):
    paths: list[str] = []

    def body() -> None:
        with CpuCap("boom", 0.2, run_id, support=HOST) as cap:
            cap.attach_thread()
            paths.append(cap.path)
            raise KeyError("boom")

    with pytest.raises(KeyError):
        _in_thread(body)
    assert paths and not os.path.exists(paths[0])
    assert not _leftovers(run_id)


@privileged
def test_sweep_removes_a_leftover_group_with_a_task_inside(run_id):
    top = os.path.join(HOST.root, f"splitbed-{run_id}")
    child = os.path.join(top, "dev7")
    stop = threading.Event()
    sleeper = threading.Thread(target=stop.wait)
    sleeper.start()
    try:
        home = _group_of(sleeper.native_id)
        os.mkdir(top)
        os.mkdir(child)
        cgroup.apply(cgroup.attach_thread_writes(HOST, child, sleeper.native_id))
        assert _group_of(sleeper.native_id).endswith(f"/splitbed-{run_id}/dev7")
        removed = cgroup.sweep(prefix=f"splitbed-{run_id}", support=HOST)
        assert removed == [child, top]  # deepest first
        assert _group_of(sleeper.native_id) == home
        assert cgroup.sweep(prefix=f"splitbed-{run_id}", support=HOST) == []
    finally:
        stop.set()
        sleeper.join()


_CHILD = """
import os, signal, sys
sys.path.insert(0, {root!r})
from throttling.cgroup import CpuCap
cap = CpuCap("dev0", 0.5, {run_id!r})
cap.attach_thread()
print(cap.path, flush=True)
if {kill}:
    os.kill(os.getpid(), signal.SIGKILL)
"""


@privileged
@pytest.mark.parametrize("kill", [False, True], ids=["normal-exit", "killed"])
def test_exit_without_close(run_id, kill):
    """A normal exit removes the group (atexit); a killed run leaves it, and sweep removes it."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(cgroup.__file__)))
    proc = subprocess.run([sys.executable, "-c", _CHILD.format(root=root, run_id=run_id, kill=kill)],
                          capture_output=True, text=True, timeout=30)
    path = proc.stdout.strip()
    assert path.endswith(f"splitbed-{run_id}/dev0"), proc.stderr
    if not kill:
        assert proc.returncode == 0 and not _leftovers(run_id)
        return
    assert proc.returncode == -signal.SIGKILL and os.path.isdir(path)
    assert cgroup.sweep(prefix=f"splitbed-{run_id}", support=HOST) == [path, os.path.dirname(path)]
    assert not _leftovers(run_id)
