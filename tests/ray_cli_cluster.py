"""A Ray cluster started with the real `ray start` command, as a user types it, on 127.0.0.1 only.

Every node gets its own ports and the cluster its own --temp-dir, so it cannot meet another Ray on a
shared host. Each node runs as `ray start --block` in its own process group; stopping ends exactly those
groups (never `ray stop`, which ends every Ray on the host), and `leftovers()` lists any process still
naming this cluster's temp dir.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

RAY = str(Path(sys.executable).with_name("ray"))


def free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
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
        return f"127.0.0.1:{self.port}"

    def _start(self, args: list[str]) -> None:
        log = (self.temp_dir.parent / f"node{len(self.procs)}.log").open("wb")
        self.procs.append(subprocess.Popen([RAY, "start", "--block", "--node-ip-address", "127.0.0.1",
                                            "--disable-usage-stats", *node_ports(), *args], env=self.env,
                                           stdout=log, stderr=subprocess.STDOUT, start_new_session=True))

    def start_head(self) -> None:
        self.port = free_ports(1)[0]
        self._start(["--head", "--port", str(self.port),
                     "--include-dashboard", "false", "--num-cpus", "0", "--temp-dir", str(self.temp_dir)])

    def add_node(self, *args: str) -> None:
        self._start(["--address", self.address, *args])

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
            time.sleep(2)
        raise TimeoutError(f"{n} nodes not up: {out[-2000:]}\n{self.logs()[-3000:]}")

    def logs(self) -> str:
        return "".join(p.read_text(errors="replace") for p in sorted(self.temp_dir.parent.glob("node*.log")))

    def stop(self) -> None:
        """Worker nodes first, then the head: SIGTERM to each node's own process group, SIGKILL if it stays."""
        for p in reversed(self.procs):
            _end_group(p, signal.SIGTERM)
        for p in reversed(self.procs):
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                _end_group(p, signal.SIGKILL)
                p.wait(timeout=10)
        for proc in self.leftovers():  # raylet/GCS children that outlived their `ray start`
            proc.kill()

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
