"""Processes killed by PID (SIGKILL, not through the fault injector) in the middle of a phase lose nothing:
every planned request still ends as exactly one record, summary.json says what died and when, and none of
the run's processes is left afterwards."""

from __future__ import annotations

import contextlib
import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from testbed.config.loading import load_topology
from testbed.plan import faults

ROOT = Path(__file__).resolve().parent.parent
pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]
TOPOLOGY = """
name: kill_e2e
duration_s: 10
warmup_s: 0
request_timeout_s: 3
strategies: [butterfly]
devices:
  - {name: a, count: 3, device_class: phone, network: lte, arrival: {rate_hz: 2, seed: 1}}
  - {name: b, count: 3, device_class: phone, network: wifi, arrival: {rate_hz: 2, seed: 2}}
cloud: {replicas: 2, load_balancing: static}
pools: {devices_per_pool: 3, compute: replay}
"""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as f:  # a zombie is gone but not yet reaped by its parent
        return f.read().split(")")[-1].split()[0] != "Z"


@pytest.fixture(scope="module")
def killed_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("kill")
    (folder / "kill.yaml").write_text(TOPOLOGY)
    out = folder / "run"
    proc = subprocess.Popen([sys.executable, str(ROOT / "run.py"), str(folder / "kill.yaml"), "--out", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    deadline = time.monotonic() + 300
    pids: dict = {}
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            pids = json.loads((out / "summary.json").read_text())["processes"]
        except (OSError, ValueError, KeyError):
            pids = {}
        if pids.get("pools") and pids.get("replicas"):
            break
        time.sleep(0.2)
    if not pids.get("pools"):  # end the run this test started (by its PID) before failing, and say why
        proc.send_signal(signal.SIGINT)  # run.py's own clean-up ends its Ray processes too
        try:
            _, stderr = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, stderr = proc.communicate()
        pytest.fail(f"the run never started its actors; its stderr ends:\n{stderr[-3000:]}")
    time.sleep(3)  # into the phase
    os.kill(pids["replicas"]["replica1"], signal.SIGKILL)
    t_replica = time.monotonic()
    time.sleep(2)
    os.kill(pids["pools"]["pool1"], signal.SIGKILL)
    stdout, stderr = proc.communicate(timeout=300)
    with (out / "requests.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    summary = json.loads((out / "summary.json").read_text())
    return proc.returncode, stderr, rows, summary, pids, load_topology(folder / "kill.yaml"), t_replica


def test_the_run_completes_and_says_what_died(killed_run):
    rc, stderr, _, summary, pids, _, _ = killed_run
    assert rc == 0, stderr[-3000:]
    assert summary["status"] == "complete"
    died = {(d["kind"], d["index"]): d for d in summary["deaths"]}
    assert set(died) == {("replica", 1), ("pool", 1)}, summary["deaths"]
    assert died[("pool", 1)]["pid"] == pids["pools"]["pool1"]
    assert died[("replica", 1)]["t_s"] < died[("pool", 1)]["t_s"] <= 10 + 3  # within the phase


def test_every_planned_request_ends_as_exactly_one_record(killed_run):
    _, _, rows, _, _, topo, _ = killed_run
    planned = sorted((d, round(t, 4)) for d, t in faults.planned_arrivals(topo, "butterfly", 0, range(6)))
    got = sorted((int(r["device_id"]), float(r["t_arrival_s"])) for r in rows)
    assert got == planned
    lost = [r for r in rows if int(r["device_id"]) >= 3 and r["status"] == "failed"]
    assert lost and all("device pool 1 killed" in r["reason"] for r in lost)
    assert [r for r in rows if int(r["device_id"]) < 3 and r["status"] == "completed"]  # pool 0 carried on
    assert all(r["reason"] for r in rows if r["status"] != "completed")


def test_no_process_of_the_run_is_left(killed_run):
    _, _, _, _, pids, _, _ = killed_run
    every = [*pids["pools"].values(), *pids["replicas"].values()]
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and any(_alive(p) for p in every):
        time.sleep(0.5)
    assert not [p for p in every if _alive(p)]


def test_a_killed_driver_leaves_readable_results_and_no_process(tmp_path):
    """SIGKILL of the driver: no finally runs there. What it flushed stays readable (summary.json partial,
    whole CSV rows), and the guard ends the embedded Ray's processes, the pools and replicas included."""
    (tmp_path / "kill.yaml").write_text(TOPOLOGY.replace("duration_s: 10", "duration_s: 60"))
    out = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, str(ROOT / "run.py"), str(tmp_path / "kill.yaml"), "--out", str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT)
    deadline = time.monotonic() + 300
    rows: list = []
    while time.monotonic() < deadline and proc.poll() is None and len(rows) < 5:
        time.sleep(0.5)
        with contextlib.suppress(OSError):
            with (out / "requests.csv").open(newline="") as f:
                rows = list(csv.DictReader(f))
    assert len(rows) >= 5, "no requests were recorded in time"
    pids = json.loads((out / "summary.json").read_text())["processes"]
    proc.kill()
    proc.wait(30)
    every = [*pids["pools"].values(), *pids["replicas"].values()]
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and any(_alive(p) for p in every):
        time.sleep(0.5)
    assert not [p for p in every if _alive(p)]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["partial"] is True and summary["status"] == "running"  # the last one it wrote
    with (out / "requests.csv").open(newline="") as f:
        assert all(None not in r.values() for r in csv.DictReader(f))  # every row whole
