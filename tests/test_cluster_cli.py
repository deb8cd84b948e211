"""The README's cluster recipe as a user types it: one token made with `ray get-auth-token --generate`, a
head and two nodes started with the real `ray start` command (token authentication on), `run.py --address`
placing pools and replicas by custom resources; a driver without the token exits 2 saying how to give it;
with authentication off on every node and the driver, the recipe runs too.

The cluster has its own ports, temp dir and HOME (the token lives there, not in the user's ~/.ray), and
exactly its own processes are stopped afterwards (tests/ray_cli_cluster.py). Every node is started with
--node-ip-address 127.0.0.2: `ray start` replaces 127.0.0.1 (and localhost, ::1) with the host's routable
address, and its switch that keeps 127.0.0.1 also refuses joining nodes; 127.0.0.2 is loopback too (Linux
routes 127.0.0.0/8 on lo) and is kept as given. So every connection of the cluster, its workers and the
driver runs between loopback addresses (checked below while a run goes). Ray's gRPC servers bind the
loopback address only for a node IP spelled 127.0.0.1 or localhost; for 127.0.0.2 the GCS server, each
raylet and each core worker (the driver's and the actors') listen on the wildcard address (`::`, IPv4 and
IPv6), and Ray 2.60 has no setting for it that we found; the runtime-env agent and the replica's ingress bind
127.0.0.2. The token is what keeps other hosts' connections to those wildcard ports out."""

from __future__ import annotations

import ipaddress
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import pytest

from tests.ray_cli_cluster import NODE_IP, RAY, CliCluster

ROOT = Path(__file__).resolve().parent.parent
pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]
RUN_ARGS = ["--set", "duration_s=2", "--set", "warmup_s=0", "--set", "strategies=[butterfly]",
            "--set", "pools.devices_per_pool=3", "--set", "pools.resources={edge: 1}", "--set", "pools.num_cpus=0",
            "--set", "cloud.resources={cloud: 1}"]
WILDCARD = {"0.0.0.0", "::"}


def _clean_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_AUTH", "RAY_ENABLE_WINDOWS"))}
    env["HOME"] = str(home)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
    return env


@pytest.fixture(scope="module")
def token_cluster():
    """One token cluster for the placement run and the refusal; both worker nodes start at once."""
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
        c.add_node("--num-cpus", "1", "--resources", '{"edge": 2}')
        c.add_node("--num-cpus", "1", "--resources", '{"cloud": 1}')
        c.wait_nodes(3)
        yield c, base
    finally:
        c.stop()
        left = c.leftovers()
        shutil.rmtree(base, ignore_errors=True)
        assert not left, f"processes of this cluster still running: {[p.pid for p in left]}"


def _run(c: CliCluster, env: dict[str, str], out: Path, watch: set[tuple[str, str, str, str]] | None = None
         ) -> subprocess.CompletedProcess[str]:
    """run.py against the cluster; with `watch`, every inet socket of the cluster and the driver seen meanwhile."""
    argv = [sys.executable, str(ROOT / "run.py"), str(ROOT / "topologies/smoke.yaml"), "--address", c.address,
            "--out", str(out), *RUN_ARGS]
    with subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
                          env=env) as proc:
        if watch is not None:
            while proc.poll() is None:
                watch |= set(c.sockets(_tree(proc.pid)))
                time.sleep(0.3)
        stdout, stderr = proc.communicate(timeout=300)
    return subprocess.CompletedProcess(argv, proc.returncode, stdout, stderr)


def _tree(pid: int) -> list[psutil.Process]:
    try:
        top = psutil.Process(pid)
        return [top, *top.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def _is_loopback(ip: str) -> bool:
    addr = ipaddress.ip_address(ip)
    mapped = getattr(addr, "ipv4_mapped", None)  # ::ffff:127.0.0.2 is loopback too
    return (mapped or addr).is_loopback


def test_run_with_the_token_places_pools_and_replicas_over_loopback_only(token_cluster, tmp_path):
    c, _ = token_cluster
    seen: set[tuple[str, str, str, str]] = set()
    proc = _run(c, c.env, tmp_path / "run", watch=seen)
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

    talking = [x for x in seen if x[3]]
    assert talking and all(_is_loopback(x[2]) and _is_loopback(x[3]) for x in talking), talking
    listening = [x for x in seen if x[1] == psutil.CONN_LISTEN]
    assert all(_is_loopback(x[2]) or x[2] in WILDCARD for x in listening), listening
    # What the docstring and README say binds the wildcard; if a Ray release binds the node IP, update them.
    assert {x[0] for x in listening if x[2] in WILDCARD} >= {"gcs_server", "raylet"}
    assert any(ipaddress.ip_address(x[2]) == ipaddress.ip_address(NODE_IP) for x in listening), listening


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
