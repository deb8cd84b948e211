"""A real multi-node Ray cluster on this machine (head + an edge node + a cloud node, all on
loopback): `run.py --address` joins it and places pools and replicas by custom resources."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


@pytest.fixture(scope="module")
def cluster():
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # every node on 127.0.0.1
    from ray.cluster_utils import Cluster

    c = Cluster(initialize_head=True,
                head_node_args={"num_cpus": 0, "node_ip_address": "127.0.0.1", "include_dashboard": False})
    try:
        edge = c.add_node(num_cpus=1, resources={"edge": 2}, node_ip_address="127.0.0.1")
        cloud = c.add_node(num_cpus=1, resources={"cloud": 1}, node_ip_address="127.0.0.1")
        yield c, edge.node_id, cloud.node_id
    finally:
        c.shutdown()


def test_pools_and_replicas_land_on_the_nodes_their_resources_name(cluster, tmp_path):
    c, edge_node, cloud_node = cluster
    out = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "run.py"), str(ROOT / "topologies/smoke.yaml"), "--address", c.address,
         "--out", str(out), "--set", "duration_s=3", "--set", "warmup_s=0", "--set", "strategies=[butterfly]",
         "--set", "pools.devices_per_pool=3", "--set", "pools.resources={edge: 1}", "--set", "pools.num_cpus=0",
         "--set", "cloud.resources={cloud: 1}"],
        capture_output=True, text=True, timeout=500, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    s = json.loads((out / "summary.json").read_text())
    assert s["ray"]["mode"] == "cluster" and len(s["ray"]["nodes"]) == 3
    assert set(s["placement"]["pools"].values()) == {edge_node}  # two pools, both on the edge node
    assert len(s["placement"]["pools"]) == 2
    assert s["placement"]["replicas"] == {"replica0": cloud_node}
    st = s["strategies"]["butterfly"]
    assert st["by_status"]["completed"] == st["requests"] > 0
