"""A Ray cluster started with the real `ray start` command, as a user types it, talking over loopback only.

Every node is given --node-ip-address 127.0.0.2 (`ray start` swaps 127.0.0.1 for the host's routable
address; 127.0.0.2 is loopback too and kept as given), its own ports and its own --temp-dir inside the
cluster's, so it cannot meet another Ray on a shared host and nodes started at once do not race for the
same socket names. Each node runs as `ray start --block` in its own process group; stopping ends exactly
those (never `ray stop`, which ends every Ray on the host), and `leftovers()` lists any process still
naming this cluster's temp dir. `sockets()` lists what the cluster's processes listen on and talk to.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import psutil

RAY = str(Path(sys.executable).with_name("ray"))
# Not 127.0.0.1: `ray start` swaps that (and localhost, ::1) for the host's routable address.
NODE_IP = "127.0.0.2"


def free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind((NODE_IP, 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def node_ports() -> list[str]:
    names = ("--node-manager-port", "--object-manager-port", "--dashboard-agent-listen-port",
             "--dashboard-agent-grpc-port", "--metrics-export-port", "--runtime-env-agent-port")
    return [a for name, port in zip(names, free_ports(len(names)), strict=True) for a in (name, str(port))]


@dataclass
class CliCluster:
    temp_dir: Path
    env: dict[str, str]
    port: int = 0
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def address(self) -> str:
        return f"{NODE_IP}:{self.port}"

    def _start(self, args: list[str]) -> None:
        log = (self.temp_dir.parent / f"node{len(self.procs)}.log").open("wb")
        self.procs.append(subprocess.Popen([RAY, "start", "--block", "--node-ip-address", NODE_IP,
                                            "--disable-usage-stats", *node_ports(), *args], env=self.env,
                                           stdout=log, stderr=subprocess.STDOUT, start_new_session=True))

    def start_head(self) -> None:
        self.port = free_ports(1)[0]
        self._start(["--head", "--port", str(self.port),
                     "--include-dashboard", "false", "--num-cpus", "0", "--temp-dir", str(self.temp_dir)])

    def add_node(self, *args: str) -> None:
        # Its own temp dir (inside the cluster's): nodes started at once in one dir race for the same
        # socket names (raylet.1: "bind: Address already in use").
        self._start(["--address", self.address, "--temp-dir", str(self.temp_dir / f"n{len(self.procs)}"), *args])

    def wait_nodes(self, n: int, timeout_s: float = 120) -> None:
        """Until n nodes are alive, asked with the CLI's own `ray status` (which needs the token too)."""
        deadline = time.monotonic() + timeout_s
        out = ""
        while time.monotonic() < deadline:
            for p in self.procs:
                if p.poll() is not None:
                    raise RuntimeError(f"a node exited ({p.returncode}): {self.logs()[-3000:]}")
            r = subprocess.run([RAY, "status", "--address", self.address], env=self.env, capture_output=True,
                               text=True, timeout=60)
            out = r.stdout + r.stderr
            if r.returncode == 0 and out.count(" node_") >= n:
                return
            time.sleep(0.5)
        raise TimeoutError(f"{n} nodes not up: {out[-2000:]}\n{self.logs()[-3000:]}")

    def logs(self) -> str:
        return "".join(p.read_text(errors="replace") for p in sorted(self.temp_dir.parent.glob("node*.log")))

    def stop(self) -> None:
        """Worker nodes first, then the head: SIGTERM to each `ray start`, SIGKILL to its process group if it stays.

        Only `ray start` gets the SIGTERM, and workers get it while the head is up: its handler asks the GCS
        to drain the node and then ends the node's processes; with the GCS already gone that request waits
        out RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S (30 s)."""
        for group in (self.procs[1:], self.procs[:1]):
            for p in group:
                p.send_signal(signal.SIGTERM)
            for p in group:
                try:
                    p.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    _end_group(p, signal.SIGKILL)
                    p.wait(timeout=10)
        for proc in self.leftovers():  # raylet/GCS children that outlived their `ray start`
            proc.kill()

    def processes(self) -> list[psutil.Process]:
        """Every live process of this cluster: each `ray start` and its descendants, and all naming its temp dir."""
        found = {proc.pid: proc for proc in self.leftovers()}
        for p in self.procs:
            try:
                top = psutil.Process(p.pid)
                found |= {proc.pid: proc for proc in [top, *top.children(recursive=True)]}
            except psutil.NoSuchProcess:
                pass
        return list(found.values())

    def sockets(self, extra: Sequence[psutil.Process] = ()) -> list[tuple[str, str, str, str]]:
        """(process name, status, local address, remote address) of each inet socket the cluster (and `extra`) holds."""
        names = {}
        for proc in [*self.processes(), *extra]:
            try:
                names[proc.pid] = proc.name()
            except psutil.NoSuchProcess:
                pass
        return [(names[c.pid], c.status, c.laddr.ip, c.raddr.ip if c.raddr else "")
                for c in psutil.net_connections(kind="inet") if c.pid in names]

    def leftovers(self) -> list[psutil.Process]:
        mine = str(self.temp_dir)
        out = []
        for proc in psutil.process_iter(["cmdline"]):
            try:
                if any(mine in part for part in proc.info["cmdline"] or ()):
                    out.append(proc)
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                pass
        return out


def _end_group(p: subprocess.Popen[bytes], sig: int) -> None:
    try:
        os.killpg(p.pid, sig)
    except ProcessLookupError:
        pass
