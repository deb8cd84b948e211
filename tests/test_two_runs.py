"""Two runs at once on one host: two tc runs on the same subnet, with a userspace run beside them.

Each tc run names its namespaces and cgroups with its driver's pid and sets every address inside its own
namespaces, so both use the default `throttling.subnet` at once; ports are ephemeral. A `--cleanup` while they
run keeps their namespaces. Afterwards nothing of theirs is left: no namespace, qdisc, cgroup or process.
Only what this test started is looked at or ended (by pid and start time); other owners' names are never swept.
"""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import pytest

ROOT = Path(__file__).resolve().parent.parent
SMOKE = ROOT / "topologies/smoke.yaml"
SUBNET = "10.77.0.0/16"  # the default: both tc runs use it
SMALL = ["--set", "duration_s=4", "--set", "warmup_s=0", "--set", "strategies=[butterfly]",
         "--set", "throttling.rrc=off"]
RUN_TIMEOUT_S = 150


@dataclass
class Run:
    name: str
    backend: str
    out: Path
    log: Path
    proc: subprocess.Popen[bytes]
    seen: dict[int, float] = field(default_factory=dict)  # descendant pid -> create time
    namespaces: set[str] = field(default_factory=set)  # every namespace seen under this run's pid
    cgroup_seen: bool = False

    @property
    def pid(self) -> int:
        return self.proc.pid

    def owns(self, name: str) -> bool:
        return re.match(rf"^splitbed-[a-z]*{self.pid}-", name) is not None

    def note_descendants(self) -> None:
        try:
            for p in psutil.Process(self.pid).children(recursive=True):
                self.seen.setdefault(p.pid, p.create_time())
        except psutil.Error:
            pass

    def ready(self) -> bool:
        """Past its network setup: the driver starts the actors only after its namespaces are made."""
        return "starting actors" in self.log.read_text(errors="replace")


def _start(tmp_path: Path, name: str, backend: str, extra: list[str]) -> Run:
    out, log = tmp_path / name, tmp_path / f"{name}.log"
    with log.open("wb") as f:  # a file, not a pipe: three runs' output cannot fill it and stall them
        proc = subprocess.Popen([sys.executable, str(ROOT / "run.py"), str(SMOKE), "--out", str(out), *SMALL,
                                 "--set", f"throttling.backend={backend}", *extra],
                                cwd=ROOT, stdout=f, stderr=subprocess.STDOUT, start_new_session=True)
    return Run(name, backend, out, log, proc)


def _run_cmd(argv: list[str]) -> str:
    return subprocess.run(argv, capture_output=True, text=True, timeout=30, check=True).stdout


def _root_links() -> set[str]:
    return {line.split(":")[1].strip().split("@")[0] for line in _run_cmd(["ip", "-o", "link", "show"]).splitlines()}


def _cgroup_root() -> str | None:
    from throttling.cgroup import detect

    support = detect()
    return support.root if support.writable else None


def _alive(pid: int, started: float) -> bool:
    try:
        p = psutil.Process(pid)
        return p.create_time() == started and p.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _in_group(pgid: int) -> dict[int, float]:
    """Processes still in a run's process group (the run was started as its own session)."""
    found = {}
    for p in psutil.process_iter(["pid", "create_time"]):
        try:
            if os.getpgid(p.info["pid"]) == pgid and p.status() != psutil.STATUS_ZOMBIE:
                found[p.info["pid"]] = p.info["create_time"]
        except (OSError, psutil.Error):
            pass
    return found


def _survivors(runs: list[Run], timeout_s: float = 20.0) -> dict[int, float]:
    deadline = time.monotonic() + timeout_s
    while True:
        left = {pid: t for r in runs for pid, t in (r.seen | _in_group(r.pid)).items() if _alive(pid, t)}
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.5)


def _cleanup_argv(runs: list[Run]) -> tuple[list[str], bool]:
    """`run.py --cleanup`, unless it would remove a dead owner's leftovers that are not this test's (the host is
    shared): then the same sweep, limited to these runs' names. Returns the argv and whether it is the real one."""
    from throttling.cleanup import kept
    from throttling.netns import list_namespaces

    root = _cgroup_root()
    names = [n for n in list_namespaces() if n.startswith("splitbed-")]
    names += [g for g in os.listdir(root) if g.startswith("splitbed-")] if root else []
    if all(kept(n) or any(r.owns(n + "-") for r in runs) for n in names):
        return [sys.executable, str(ROOT / "run.py"), "--cleanup"], True
    prefixes = [f"splitbed-{r.pid}-" for r in runs]
    code = ("import sys; from throttling.cleanup import sweep_all\n"
            "for p in sys.argv[1:]: print(sweep_all(prefix=p))")
    return [sys.executable, "-c", code, *prefixes], False


def _cleanup_while_live(runs: list[Run]) -> str:
    argv, real = _cleanup_argv(runs)
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60, cwd=ROOT,
                          env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert done.returncode == 0, done.stderr[-2000:]
    if real:
        assert "network namespaces: removed 0" in done.stdout, done.stdout
    return done.stdout


def _check_live(tc_runs: list[Run], devices: int) -> None:
    """Both tc runs hold their full layout at once, the same service address in each cloud namespace, a tbf
    on each device; nothing was added to the root namespace."""
    from throttling.netns import NetnsLayout, list_namespaces

    present = set(list_namespaces())
    for r in tc_runs:
        lay = NetnsLayout(str(r.pid), SUBNET, devices)
        assert set(lay.namespaces()) <= present, (r.name, sorted(present))
        assert f"inet {lay.cloud_ip}/32" in _run_cmd(["ip", "-n", lay.cloud_ns, "addr", "show", "dev", "lo"])
        assert "qdisc tbf" in _run_cmd(["tc", "-n", lay.device_ns(0), "qdisc", "show", "dev", "eth0"])


def _watch(runs: list[Run], devices: int, cgroup_root: str | None) -> dict[str, object]:
    """Poll until every run has ended: note descendants, namespaces and cgroups; once both tc runs are live at
    once, check them and run a cleanup beside them."""
    from throttling.netns import list_namespaces

    tc_runs = [r for r in runs if r.backend == "tc"]
    facts: dict[str, object] = {"overlap": False, "root_links": set()}
    deadline = time.monotonic() + RUN_TIMEOUT_S
    while any(r.proc.poll() is None for r in runs):
        assert time.monotonic() < deadline, "the runs did not end in time"
        names = list_namespaces()
        for r in runs:
            r.note_descendants()
            r.namespaces |= {n for n in names if r.owns(n)}
            r.cgroup_seen |= bool(cgroup_root) and os.path.isdir(os.path.join(cgroup_root, f"splitbed-{r.pid}"))
        if not facts["overlap"] and all(r.proc.poll() is None and r.ready() for r in tc_runs):
            facts["root_links"] = _root_links()
            _check_live(tc_runs, devices)
            facts["cleanup"] = _cleanup_while_live(runs)
            _check_live(tc_runs, devices)  # the sweep kept both live runs' namespaces
            facts["overlap"] = True
        time.sleep(0.2)
    return facts


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open() as f:
        return list(csv.DictReader(f))


def _assert_complete(r: Run) -> None:
    assert r.proc.returncode == 0, (r.name, r.log.read_text(errors="replace")[-3000:])
    s = json.loads((r.out / "summary.json").read_text())
    assert s["status"] == "complete" and s["backends"]["link_backend"]["name"] == r.backend, r.name
    st = s["strategies"]["butterfly"]
    assert st["by_status"]["completed"] == st["requests"] > 0, (r.name, st["by_status"])
    rows = _rows(r.out / "requests.csv")
    assert rows and all(row["status"] == "completed" for row in rows), (r.name, [row["reason"] for row in rows])


def _remove_leftovers(runs: list[Run]) -> None:
    """After a failure: end and remove only what these runs left (by their pids)."""
    from throttling.cgroup import sweep_run
    from throttling.netns import delete_namespaces, list_namespaces

    for r in runs:
        if r.proc.poll() is None:
            os.killpg(r.pid, signal.SIGKILL)
            r.proc.wait(timeout=30)
    for pid, started in _survivors(runs, timeout_s=0).items():
        if _alive(pid, started):
            psutil.Process(pid).kill()
    delete_namespaces([n for n in list_namespaces() if any(r.owns(n) for r in runs)])
    if _cgroup_root():
        for r in runs:
            sweep_run(str(r.pid))


def _tc_usable() -> tuple[bool, str]:
    if os.geteuid() != 0 or shutil.which("ip") is None:
        return False, "needs root and iproute2"
    from throttling.netns import probe

    support = probe("tr")
    return support.usable, support.reason


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_two_tc_runs_and_a_userspace_run_at_once_share_nothing_and_leave_nothing(tmp_path):
    from testbed.config.loading import load_topology
    from throttling.netns import NetnsLayout, list_namespaces

    usable, why = _tc_usable()
    if not usable:
        pytest.skip(f"kernel shaping unavailable: {why}")
    cgroup_root = _cgroup_root()
    cpu = ["--set", "throttling.cpu=cgroup"] if cgroup_root else []  # cgroup names are shared ground too
    devices = load_topology(SMOKE).device_count
    links_before = _root_links()
    t0 = time.monotonic()
    runs = [_start(tmp_path, "tc_a", "tc", cpu), _start(tmp_path, "tc_b", "tc", cpu),
            _start(tmp_path, "user", "userspace", [])]
    try:
        facts = _watch(runs, devices, cgroup_root)
        wall_s = time.monotonic() - t0
        for r in runs:
            _assert_complete(r)
        assert facts["overlap"], "the two tc runs were never live at the same time"
        assert not {n for n in facts["root_links"] - links_before if re.fullmatch(r"d\d+|eth0", n)}
        for r in runs:
            layout = set(NetnsLayout(str(r.pid), SUBNET, devices).namespaces()) if r.backend == "tc" else set()
            probe = set(NetnsLayout(f"probe{r.pid}", "10.255.255.0/29", 1).namespaces())  # choose_backend's
            assert layout <= r.namespaces <= layout | probe, (r.name, sorted(r.namespaces))  # its own pid only
            assert r.cgroup_seen == (r.backend == "tc" and cgroup_root is not None), r.name
        left = [n for n in list_namespaces() if any(r.owns(n) for r in runs)]
        assert left == [], left  # their qdiscs and veths went with them
        if cgroup_root:
            assert not [g for g in os.listdir(cgroup_root) if any(g == f"splitbed-{r.pid}" for r in runs)]
        assert _survivors(runs) == {}
        print(f"three runs at once: {wall_s:.1f} s")
    finally:
        _remove_leftovers(runs)


def test_a_runs_cgroup_sweep_spares_a_run_whose_pid_starts_with_its_own(tmp_path):
    """Run 1234 ending sweeps `splitbed-1234`, never live run 12345's `splitbed-12345` (a prefix once did)."""
    from throttling.cgroup import CgroupSupport, sweep_run

    for group in ("splitbed-1234/pool0-phone", "splitbed-12345/pool0-phone"):
        (tmp_path / group).mkdir(parents=True)
    removed = sweep_run("1234", CgroupSupport(1, str(tmp_path), True))
    assert removed == [str(tmp_path / "splitbed-1234/pool0-phone"), str(tmp_path / "splitbed-1234")]
    assert (tmp_path / "splitbed-12345/pool0-phone").is_dir()


def test_link_check_namespaces_carry_the_drivers_pid():
    """Two runs checking links at once get their own namespaces, and a cleanup keeps a live run's."""
    from testbed.run.linkcheck import check_layout
    from throttling.cleanup import kept, owner_pid

    a, b = check_layout(0), check_layout(1)
    assert not set(a.namespaces()) & set(b.namespaces())
    for name in a.namespaces():
        assert owner_pid(name) == os.getpid() and kept(name), name
