"""Faults end to end on a local Ray: `run.py` with a replica killed, a link outage and a pool killed in one phase."""

from __future__ import annotations

import csv
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_end_to_end import KERNEL_OK, KERNEL_WHY

from testbed.config.loading import load_topology
from testbed.plan import faults

ROOT = Path(__file__).resolve().parent.parent
pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

TOPOLOGY = """
name: faults_e2e
duration_s: 8
warmup_s: 1
request_timeout_s: 3
strategies: [butterfly]
devices:
  - {name: lte, count: 3, device_class: phone, network: lte, arrival: {rate_hz: 2, seed: 1}}
  - {name: wifi, count: 3, device_class: phone, network: wifi, arrival: {rate_hz: 2, seed: 2}}
cloud: {replicas: 2, load_balancing: static, max_batch_size: 16, max_batch_wait_ms: 400}  # requests wait on replicas
pools: {devices_per_pool: 3, compute: replay}
faults:
  - {name: wifi down, kind: link_outage, group: wifi, at_s: 2, duration_s: 1.5}
  - {name: replica 1 dies, kind: replica_kill, replica: 1, at_s: 4}
  - {name: pool 1 dies, kind: pool_kill, pool: 1, at_s: 6.5}
  - {name: device 0 leaves, kind: device_leave, devices: [0], at_s: 5, duration_s: 1.5}
"""
OUTAGE = (2.0, 3.5)
REPLICA_KILL_S, POOL_KILL_S = 4.0, 6.5


@pytest.fixture(scope="module")
def faults_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("faults")
    topo_file = folder / "faults_e2e.yaml"
    topo_file.write_text(TOPOLOGY)
    proc = subprocess.run([sys.executable, str(ROOT / "run.py"), str(topo_file), "--out", str(folder / "run")],
                          capture_output=True, text=True, timeout=500, cwd=ROOT)
    rows = _rows(folder / "run" / "requests.csv")
    return proc, load_topology(topo_file), rows, json.loads((folder / "run" / "summary.json").read_text())


def test_the_run_completes_and_says_what_it_did(faults_run):
    proc, _, _, summary = faults_run
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert summary["status"] == "complete"
    events = [e["event"] for e in summary["fault_events"]]
    assert events == ["replica 1 killed", "device pool 1 killed (3 devices)"]
    assert "s: replica 1 killed" in proc.stderr
    kill = summary["fault_events"][0]["t_s"]
    assert REPLICA_KILL_S <= kill <= REPLICA_KILL_S + 0.5  # on time, within the driver's poll latency
    assert "faults (requests arriving in each window" in proc.stdout  # the console table


def test_every_planned_frame_has_exactly_one_record(faults_run):
    _, topo, rows, _ = faults_run
    planned = faults.planned_arrivals(topo, "butterfly", 0, range(topo.device_count))
    got = sorted((int(r["device_id"]), float(r["t_arrival_s"])) for r in rows)
    assert got == sorted((d, round(t, 4)) for d, t in planned)
    assert all(r["reason"] for r in rows if r["status"] != "completed")
    away = [r for r in rows if r["device_id"] == "0" and 5 <= float(r["t_arrival_s"]) < 6.5]
    assert away == [] and [r for r in rows if r["device_id"] == "0" and float(r["t_arrival_s"]) >= 6.5]


def test_a_killed_replica_hands_its_devices_to_the_other(faults_run):
    _, _, rows, summary = faults_run
    died = [r for r in rows if "replica 1 died" in r["reason"]]
    assert died and all(r["status"] == "failed" or r["reason"].startswith("retried after replica 1 died")
                        for r in died)  # in flight on it: retried on replica 0, or failed naming it
    retried = [r for r in died if "retried" in r["reason"] and int(r["device_id"]) < 3]
    assert len(retried) == summary["failover"]["butterfly"]["pool0"]["retries"]  # pool 1's count died with it
    assert summary["failover"]["butterfly"]["pool0"]["reconnects"] >= 1  # device 1's home was replica 1
    after = [r for r in rows if float(r["t_arrival_s"]) > REPLICA_KILL_S + 0.5 and int(r["device_id"]) < 3]
    assert after and all(r["status"] == "completed" and r["replica"] == "0" for r in after)
    assert {r["device_id"] for r in after} == {"0", "1", "2"}
    assert [rep["replica"] for rep in summary["replicas"]] == [0]  # the survivor's stats; 1 was not replaced


def test_a_link_outage_holds_every_request_of_the_group_until_it_ends(faults_run):
    _, _, rows, summary = faults_run
    hit = [r for r in rows if r["group"] == "wifi" and OUTAGE[0] <= float(r["t_arrival_s"]) < OUTAGE[1]]
    assert hit
    for r in hit:  # nothing crossed the link before the outage ended (tolerance: timer granularity)
        assert float(r["t_arrival_s"]) + float(r["e2e_ms"]) / 1000 >= OUTAGE[1] - 0.005, r
    window = next(w for w in summary["faults"] if w["name"] == "wifi down")
    assert (window["start_s"], window["end_s"], window["target"]) == (*OUTAGE, "group wifi")
    assert sum(window["counts"]["butterfly"].values()) == len(hit)
    assert window["counts"]["butterfly"] == {s: sum(r["status"] == s for r in hit)
                                             for s in ("completed", "failed", "timed_out")}
    lte = [r for r in rows if r["group"] == "lte" and OUTAGE[0] <= float(r["t_arrival_s"]) < OUTAGE[1]]
    assert lte and all(r["status"] == "completed" for r in lte)  # the other group's links are untouched


def test_a_killed_pool_has_failed_records_and_the_other_pool_goes_on(faults_run):
    _, _, rows, summary = faults_run
    killed_at = summary["fault_events"][1]["t_s"]
    assert POOL_KILL_S <= killed_at <= POOL_KILL_S + 0.5
    late = [r for r in rows if float(r["t_arrival_s"]) >= killed_at]
    mine = [r for r in late if int(r["device_id"]) >= 3]
    assert mine and all(r["status"] == "failed" and r["reason"] == f"device pool 1 killed at {killed_at:.3f} s "
                        "(arrived after it)" for r in mine)
    others = [r for r in late if int(r["device_id"]) < 3]
    assert others and all(r["status"] == "completed" for r in others)
    window = next(w for w in summary["faults"] if w["name"] == "pool 1 dies")
    assert window["counts"]["butterfly"]["failed"] >= len(mine)
    base = summary["fault_baseline"]["butterfly"]
    assert sum(base.values()) + sum(1 for r in rows if any(
        w["start_s"] <= float(r["t_arrival_s"]) < w["end_s"] and (w["kind"] == "replica_kill" or (
            int(r["device_id"]) >= 3)) for w in summary["faults"])) == len(rows)


def test_a_killed_driver_leaves_readable_partial_results_and_no_processes(tmp_path):
    """SIGKILL: no `finally` runs in the driver. requests.csv was flushed as it went, summary.json was last
    replaced whole (status running, partial), and the Ray guard ends what Ray left running."""
    import psutil

    from testbed.results.metrics import REQUEST_COLUMNS

    out = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, str(ROOT / "run.py"), str(ROOT / "topologies/smoke.yaml"), "--out",
                             str(out), "--set", "duration_s=60"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            cwd=ROOT)
    ours: list[psutil.Process] = []
    try:
        deadline = time.monotonic() + 240
        while not ((out / "requests.csv").exists() and len(_rows(out / "requests.csv")) >= 3):
            assert time.monotonic() < deadline, "no request finished in time"
            time.sleep(0.5)
        ours = psutil.Process(proc.pid).children(recursive=True)
        assert any("ray_guard.py" in " ".join(p.cmdline()) for p in ours)
        proc.kill()
        proc.wait(timeout=30)
        deadline = time.monotonic() + 30
        while (left := [p for p in ours if _running(p)]) and time.monotonic() < deadline:
            time.sleep(0.5)
    finally:
        if proc.poll() is None:
            proc.kill()
        for p in ours:  # only what this run started, by PID
            if _running(p):
                p.kill()
    assert not left, [(p.pid, p.name()) for p in left]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["partial"] is True and summary["status"] == "running"
    rows = _rows(out / "requests.csv")
    assert len(rows) >= 3 and all(list(r) == list(REQUEST_COLUMNS) and r["status"] for r in rows)


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open() as f:
        return list(csv.DictReader(f))


def _running(p) -> bool:
    import psutil

    try:
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@pytest.mark.skipif(not KERNEL_OK, reason=f"kernel shaping unavailable: {KERNEL_WHY}")
def test_a_degradation_under_tc_sets_the_kernel_rate_for_its_window(tmp_path):
    from throttling.netns import delete_namespaces, list_namespaces

    proc = subprocess.Popen([sys.executable, str(ROOT / "run.py"), str(ROOT / "topologies/smoke.yaml"), "--out",
                             str(tmp_path / "run"), "--set", "throttling.backend=tc", "--set", "duration_s=7",
                             "--set", "warmup_s=0", "--set", "strategies=[cloud_only]", "--set",
                             "devices[0].link.jitter_ms=0", "--set", "devices[0].arrival.rate_hz=2", "--set",
                             "faults=[{kind: link_degrade, group: lte, at_s: 2, duration_s: 4, rate_factor: 0.25, "
                             "direction: uplink}]"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=ROOT)
    mine = f"splitbed-{proc.pid}-"  # the run's namespaces are named after the driver's pid
    try:
        _, stderr = proc.communicate(timeout=500)
        left = [n for n in list_namespaces() if n.startswith(mine)]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        delete_namespaces([n for n in list_namespaces() if n.startswith(mine)])
    assert not left  # the run removed its own
    assert proc.returncode == 0, stderr[-3000:]
    assert "a degradation sets the tbf rate" in stderr
    rows = [r for r in _rows(tmp_path / "run" / "requests.csv") if r["group"] == "lte"]
    assert all(r["status"] == "completed" for r in rows)

    def ratio(r: dict[str, str]) -> float:  # measured uplink against bytes at the configured 5.85 Mbit/s + 35 ms
        return float(r["uplink_ms"]) / (35 + int(r["bytes_up"]) * 8 / 5850)

    inside = [ratio(r) for r in rows if 2.5 <= float(r["t_arrival_s"]) < 5.5]
    outside = [ratio(r) for r in rows if float(r["t_arrival_s"]) < 1.5 or float(r["t_arrival_s"]) >= 6.5]
    # a quarter of the rate: the JPEG's serialization takes 4x as long (35 ms of delay stays)
    assert inside and min(inside) > 1.6, inside
    assert outside and statistics.median(outside) < 1.2, outside

