"""The README's cluster recipe as a user types it: one token made with `ray get-auth-token --generate`, a
head and two nodes started with the real `ray start` command (token authentication on), `run.py --address`
placing pools and replicas by custom resources; a driver without the token exits 2 saying how to give it.

The cluster has its own ports, temp dir and HOME (the token lives there, not in the user's ~/.ray), and
exactly its own processes are stopped afterwards (tests/ray_cli_cluster.py). Ray's CLI replaces
--node-ip-address 127.0.0.1 with the host's own address (ray/_private/services.py,
resolve_ip_for_localhost) unless its single-node switch is set, which forbids joining nodes; so the nodes
use the host's address, traffic stays on this host, and the token is what keeps others out."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from tests.ray_cli_cluster import RAY, CliCluster

ROOT = Path(__file__).resolve().parent.parent
pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]
RUN_ARGS = ["--set", "duration_s=3", "--set", "warmup_s=0", "--set", "strategies=[butterfly]",
            "--set", "pools.devices_per_pool=3", "--set", "pools.resources={edge: 1}", "--set", "pools.num_cpus=0",
            "--set", "cloud.resources={cloud: 1}"]


def _clean_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_AUTH", "RAY_ENABLE_WINDOWS"))}
    env["HOME"] = str(home)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
    return env


@pytest.fixture(scope="module")
def token_cluster():
    base = Path(tempfile.mkdtemp(prefix="sbc-", dir="/tmp"))  # short: Ray's socket paths have a length limit
    home = base / "home"
    home.mkdir()
    env = _clean_env(home) | {"RAY_AUTH_MODE": "token"}
    made = subprocess.run([RAY, "get-auth-token", "--generate"], env=env, capture_output=True, text=True, timeout=60)
    assert made.returncode == 0, made.stderr
    env["RAY_AUTH_TOKEN_PATH"] = str(home / ".ray" / "auth_token")  # the file each node and the driver is given
    c = CliCluster(base / "ray", env)
    try:
        c.start_head()
        c.wait_nodes(1)
        c.add_node("--num-cpus", "1", "--resources", '{"edge": 2}')
        c.wait_nodes(2)
        c.add_node("--num-cpus", "1", "--resources", '{"cloud": 1}')
        c.wait_nodes(3)
        yield c, base
    finally:
        c.stop()
        left = c.leftovers()
        shutil.rmtree(base, ignore_errors=True)
        assert not left, f"processes of this cluster still running: {[p.pid for p in left]}"


def _run(c: CliCluster, env: dict[str, str], out: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(ROOT / "run.py"), str(ROOT / "topologies/smoke.yaml"),
                           "--address", c.address, "--out", str(out), *RUN_ARGS],
                          capture_output=True, text=True, timeout=600, cwd=ROOT, env=env)


def test_run_with_the_token_places_pools_and_replicas_and_records_token_auth(token_cluster, tmp_path):
    c, _ = token_cluster
    proc = _run(c, c.env, tmp_path / "run")
    assert proc.returncode == 0, proc.stderr[-3000:]
    s = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert s["ray"]["mode"] == "cluster" and s["ray"]["auth_mode"] == "token"
    nodes = s["ray"]["nodes"]
    assert len(nodes) == 3
    edge = [n for n, v in nodes.items() if "edge" in v["resources"]]
    cloud = [n for n, v in nodes.items() if "cloud" in v["resources"]]
    assert set(s["placement"]["pools"].values()) == set(edge) and len(s["placement"]["pools"]) == 2
    assert s["placement"]["replicas"] == {"replica0": cloud[0]}
    st = s["strategies"]["butterfly"]
    assert st["by_status"]["completed"] == st["requests"] > 0


def test_a_driver_without_the_token_exits_2_saying_how_to_give_it(token_cluster, tmp_path):
    c, base = token_cluster
    empty_home = base / "no-token-home"
    empty_home.mkdir(exist_ok=True)
    proc = _run(c, _clean_env(empty_home), tmp_path / "run")
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "ray.address" in proc.stderr and "refused the connection" in proc.stderr
    assert "RAY_AUTH_MODE=token" in proc.stderr and "RAY_AUTH_TOKEN_PATH" in proc.stderr


def test_with_authentication_off_on_every_node_and_the_driver_the_recipe_runs_too(tmp_path):
    base = Path(tempfile.mkdtemp(prefix="sbd-", dir="/tmp"))
    env = _clean_env(base) | {"RAY_AUTH_MODE": "disabled"}  # HOME without a token: nothing to find
    c = CliCluster(base / "ray", env)
    try:
        c.start_head()
        c.wait_nodes(1)
        c.add_node("--num-cpus", "2", "--resources", '{"edge": 2, "cloud": 1}')
        c.wait_nodes(2)
        proc = _run(c, env, tmp_path / "run")
        assert proc.returncode == 0, proc.stderr[-3000:]
        s = json.loads((tmp_path / "run" / "summary.json").read_text())
        assert s["ray"]["auth_mode"] == "disabled" and len(s["ray"]["nodes"]) == 2
        assert s["strategies"]["butterfly"]["by_status"]["completed"] > 0
    finally:
        c.stop()
        shutil.rmtree(base, ignore_errors=True)
    assert not c.leftovers()
