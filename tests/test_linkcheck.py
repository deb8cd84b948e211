"""The link fidelity check that `run.py --check-links` prints."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from testbed.config.loading import load_topology
from testbed.run.linkcheck import check_links, expected_ms
from throttling.links import LinkBackend
from throttling.shaper import LinkDirection

ROOT = Path(__file__).resolve().parent.parent


def test_expected_time_is_bytes_over_rate_plus_delay():
    assert expected_ms(LinkDirection(rate_mbps=8.0, delay_ms=20.0), 100_000) == pytest.approx(120.0)


def test_userspace_check_measures_each_group_and_direction(write_topology, minimal_yaml):
    topo = load_topology(write_topology(minimal_yaml), ["networks.lte.rtt_ms=20"])
    rows = check_links(topo, [LinkBackend("userspace")], payloads=(50_000,))
    assert [(r.group, r.direction) for r in rows] == [("group0", "up"), ("group0", "down")]
    up, down = rows
    assert up.expected_ms == pytest.approx(10 + 50_000 * 8 / 5850)
    assert down.expected_ms == pytest.approx(10 + 50_000 * 8 / 13000)
    for r in rows:
        assert -1.0 <= r.error_pct <= 5.0  # never early; late by the loop's timer granularity at most


@pytest.mark.slow  # over 1.5 s here: out of the fast tier
def test_cli_prints_the_table(write_topology, minimal_yaml):
    proc = subprocess.run([sys.executable, str(ROOT / "run.py"), str(write_topology(minimal_yaml)), "--check-links",
                           "--set", "throttling.backend=userspace"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "expected ms" in proc.stdout and "group0" in proc.stdout and "userspace" in proc.stdout
