"""Shared fixtures. Tiers: unit tests (no Ray), in-process server tests (asyncio, no Ray),
and `slow` end-to-end runs on a local Ray (run in CI too)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
# testbed.run.ray_runtime sets Ray's loopback-only switch before it imports Ray. In-process server tests import Ray
# earlier (CloudServer.start asks for the node id), and Ray reads the switch at import: set it for the whole
# session, so the loopback test holds whatever order the tests run in.
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")


@pytest.fixture
def write_topology(tmp_path):
    """Write text (a topology, a trace) to a temp file and return its path."""

    def _write(text: str, name: str = "topo.yaml") -> Path:
        path = tmp_path / name
        path.write_text(text)
        return path

    return _write


MINIMAL = """
name: t
duration_s: 2
strategies: [butterfly]
devices:
  count: 2
  device_class: phone
  network: lte
  arrival: {rate_hz: 1}
"""


@pytest.fixture
def minimal_yaml() -> str:
    return MINIMAL


FAULTS = """
name: t
duration_s: 10
strategies: [butterfly, cloud_only]
devices:
  - {name: lte, count: 3, device_class: phone, network: lte, arrival: {rate_hz: 1}}
  - {name: wifi, count: 2, device_class: phone, network: wifi, arrival: {rate_hz: 1}}
cloud: {replicas: 2}
pools: {devices_per_pool: 3}
faults:
  - {kind: link_outage, group: lte, at_s: 1, duration_s: 2}
"""


@pytest.fixture
def faults_yaml() -> str:
    """Two groups in two pools, two replicas, one fault (tests replace or add to it)."""
    return FAULTS
