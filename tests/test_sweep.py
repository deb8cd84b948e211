"""Sweeps: parsing, validation of every point up front, saturation marking, and a real two-point run."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import pytest

from testbed.config.errors import ConfigError
from testbed.config.variants import load_points, parse_sweep
from testbed.report.sweep import saturation_points

ROOT = Path(__file__).resolve().parent.parent


def test_parse_sweep():
    assert parse_sweep("devices.count=10, 50,100") == ("devices.count", ["10", "50", "100"])
    for bad in ("devices.count", "=1,2", "devices.count="):
        with pytest.raises(ValueError, match="expected key.path=v1,v2"):
            parse_sweep(bad)


def test_every_point_is_validated_before_anything_runs(write_topology, minimal_yaml):
    path = write_topology(minimal_yaml)
    assert [t.device_count for t in load_points(str(path), [], "devices.count", ["1", "4"])] == [1, 4]
    with pytest.raises(ConfigError) as e:
        load_points(str(path), [], "devices.count", ["2", "-1", "x"])
    msg = str(e.value)
    assert "devices[0].count: Input should be greater than or equal to 1 [--sweep devices.count=-1] (got -1)" in msg
    assert "[--sweep devices.count=x]" in msg


def test_saturation_is_the_first_value_that_does_not_keep_up():
    rows = [{"strategy": "a", "value": v, "saturated": s, "p50_ms": 100.0}
            for v, s in (("10", False), ("50", True), ("100", True))]
    rows.append({"strategy": "b", "value": "10", "saturated": False, "p50_ms": 100.0})
    rows += [{"strategy": "c", "value": v, "saturated": False, "p50_ms": p} for v, p in (("10", 100.0), ("50", 150.0),
                                                                                           ("100", 201.0))]
    assert saturation_points(rows) == {"a": "50", "b": None, "c": "100"}  # c: the median latency doubled


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_two_point_sweep_writes_table_plot_and_folders(tmp_path):
    out = tmp_path / "sweep"
    proc = subprocess.run([sys.executable, str(ROOT / "run.py"), str(ROOT / "topologies/smoke.yaml"), "--out", str(out),
                           "--sweep", "devices[0].count=1,4", "--set", "duration_s=3", "--set", "warmup_s=0",
                           "--set", "strategies=[butterfly]"], capture_output=True, text=True, timeout=500, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    with (out / "sweep.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [(r["value"], r["strategy"]) for r in rows] == [("1", "butterfly"), ("4", "butterfly")]
    assert float(rows[1]["offered_rps"]) == pytest.approx(4 * 0.5 + 2 * 0.5)  # group 0 at 0.5 Hz, group 1 too
    assert float(rows[1]["offered_rps"]) > float(rows[0]["offered_rps"])
    assert all(float(r["throughput_rps"]) > 0 and r["server_busy_fraction"] for r in rows)
    assert (out / "sweep.png").stat().st_size > 10_000
    assert (out / "devices_0_.count=1" / "summary.json").exists() and (out / "devices_0_.count=4").is_dir()
    assert "kept up at every point" in proc.stdout or "saturated from" in proc.stdout
    page = (out / "report.html").read_text()  # the sweep's own page: its curves and a link per point
    assert "Sweep over devices[0].count" in page and 'data-plot="sweep"' in page
    assert 'href="devices_0_.count=4/report.html"' in page and (out / "devices_0_.count=4" / "report.html").exists()
