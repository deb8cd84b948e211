"""Kernel link backend: one network namespace per device, shaped by tbf on a veth pair.

Layout (single host):

    device ns  splitbed-<tag>-d<i>: eth0 = 10.77.0.<i+2>/32 -- tbf (uplink rate)
         | veth
    cloud ns   splitbed-<tag>-c: d<i> -- tbf (downlink rate); lo also holds 10.77.0.1/32 (service)

The cloud replicas create their listening sockets inside the cloud namespace,
and each device creates its socket inside its own namespace. A socket keeps
the namespace it was made in, so one pool process serves many namespaced
devices, and all the shaped traffic stays between addresses inside namespaces
this run created. Why not `lo` with HTB: lo's 64 KB MTU lets small messages
through far above the set rate; a veth with tbf and a one-frame burst was
within 4% from 100 KB up.

`NetnsTopology` owns everything it creates: namespaces (deleting one removes
its veths and qdiscs) are deleted on exit, on error and on Ctrl-C, and
`sweep()` removes leftovers of a killed run by their name prefix. Commands are
plain `ip`/`tc` argv lists run in batches (`-batch -`): 100 devices set up in a
few hundred milliseconds, with no helper process per namespace.
"""

from __future__ import annotations

import ctypes
import ipaddress
import os
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from throttling import tc
from throttling.trace import MahimahiTrace

PREFIX = "splitbed-"
NETNS_DIR = "/var/run/netns"
CLONE_NEWNET = 0x40000000


class NetnsError(RuntimeError):
    """A namespace, veth or qdisc could not be set up; the message has the command and its error."""


@dataclass(frozen=True)
class DeviceLink:
    uplink_mbps: float
    downlink_mbps: float
    delay_ms: float = 0.0  # one way; used only where netem does delay in the kernel
    jitter_ms: float = 0.0
    loss_pct: float = 0.0


@dataclass(frozen=True)
class NetnsLayout:
    """Names and addresses of one run's namespaces (pure, shared by driver and actors)."""

    tag: str
    subnet: str
    devices: int

    def __post_init__(self) -> None:
        net = ipaddress.ip_network(self.subnet)
        if net.version != 4 or net.num_addresses < self.devices + 3:
            raise ValueError(f"subnet {self.subnet} has room for {max(0, net.num_addresses - 3)} devices, "
                             f"{self.devices} needed")

    @property
    def cloud_ns(self) -> str:
        return f"{PREFIX}{self.tag}-c"

    @property
    def cloud_ip(self) -> str:
        return str(ipaddress.ip_network(self.subnet).network_address + 1)

    def device_ns(self, i: int) -> str:
        return f"{PREFIX}{self.tag}-d{i}"

    def device_ip(self, i: int) -> str:
        return str(ipaddress.ip_network(self.subnet).network_address + 2 + i)

    @staticmethod
    def cloud_if(i: int) -> str:
        return f"d{i}"

    def namespaces(self) -> list[str]:
        return [self.cloud_ns] + [self.device_ns(i) for i in range(self.devices)]


def root_commands(layout: NetnsLayout) -> list[list[str]]:
    """`ip -batch` lines run in the root namespace: create namespaces and veth pairs."""
    cmds = [["netns", "add", ns] for ns in layout.namespaces()]
    for i in range(layout.devices):
        cmds.append(["link", "add", "eth0", "netns", layout.device_ns(i), "type", "veth", "peer", "name",
                     layout.cloud_if(i), "netns", layout.cloud_ns])
    return cmds


def cloud_commands(layout: NetnsLayout) -> list[list[str]]:
    cmds = [["link", "set", "lo", "up"], ["addr", "add", f"{layout.cloud_ip}/32", "dev", "lo"]]
    for i in range(layout.devices):
        cmds += [["link", "set", layout.cloud_if(i), "up"],
                 ["route", "add", f"{layout.device_ip(i)}/32", "dev", layout.cloud_if(i)]]
    return cmds


def device_commands(layout: NetnsLayout, i: int) -> list[list[str]]:
    return [["link", "set", "lo", "up"], ["addr", "add", f"{layout.device_ip(i)}/32", "dev", "eth0"],
            ["link", "set", "eth0", "up"], ["route", "add", f"{layout.cloud_ip}/32", "dev", "eth0"]]


def qdisc_commands(dev: str, rate_mbps: float, link: DeviceLink, netem: bool) -> list[list[str]]:
    cmds = [tc.tbf_args(dev, rate_mbps)]
    if netem and (link.delay_ms > 0 or link.jitter_ms > 0 or link.loss_pct > 0):
        cmds.append(tc.netem_args(dev, link.delay_ms, link.jitter_ms, link.loss_pct))
    return cmds


def _run(argv: list[str], batch: str) -> None:
    proc = subprocess.run(argv, input=batch, capture_output=True, text=True)
    if proc.returncode != 0:
        first = batch.splitlines()[0] if batch else ""
        raise NetnsError(f"{' '.join(argv)} failed ({proc.stderr.strip() or proc.returncode}); batch began: {first}")


def ip_batch(commands: list[list[str]], netns: str | None = None) -> None:
    _run(["ip"] + (["-n", netns] if netns else []) + ["-batch", "-"], tc.to_batch(commands))


def tc_batch(commands: list[list[str]], netns: str) -> None:
    _run(["tc", "-n", netns, "-batch", "-"], tc.to_batch(commands))


class NetnsTopology:
    """Creates the run's namespaces, veths and qdiscs; removes all of them on close()."""

    def __init__(self, layout: NetnsLayout, links: Sequence[DeviceLink], netem: bool = False):
        if len(links) != layout.devices:
            raise ValueError("one link per device")
        self.layout, self.links, self.netem = layout, list(links), netem
        self._created = False

    def __enter__(self) -> NetnsTopology:
        self.create()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def create(self) -> None:
        """Set everything up; if any step fails, remove what was made and re-raise."""
        self._created = True
        try:
            self._setup()
        except BaseException:
            self.close()
            raise

    def _setup(self) -> None:
        lay = self.layout
        ip_batch(root_commands(lay))
        ip_batch(cloud_commands(lay), lay.cloud_ns)
        down: list[list[str]] = []
        for i, link in enumerate(self.links):
            ip_batch(device_commands(lay, i), lay.device_ns(i))
            tc_batch(qdisc_commands("eth0", link.uplink_mbps, link, self.netem), lay.device_ns(i))
            down += qdisc_commands(lay.cloud_if(i), link.downlink_mbps, link, self.netem)
        tc_batch(down, lay.cloud_ns)

    def set_rates(self, uplink_mbps: dict[int, float], downlink_mbps: dict[int, float]) -> None:
        """Change devices' kernel rates in place (trace-driven links): one tc batch per namespace."""
        for i, rate in uplink_mbps.items():
            tc_batch([tc.tbf_change_args("eth0", rate)], self.layout.device_ns(i))
        if downlink_mbps:
            tc_batch([tc.tbf_change_args(self.layout.cloud_if(i), r) for i, r in downlink_mbps.items()],
                     self.layout.cloud_ns)

    def close(self) -> None:
        if self._created:
            delete_namespaces(self.layout.namespaces())
            self._created = False


class TraceRates:
    """Makes the kernel rate follow each traced link, updated every `interval_s` (a thread).

    For each update the rate is the trace's capacity over the coming interval; an outage
    (no delivery opportunity in it) sets the floor rate. Stops and joins on close().
    """

    FLOOR_MBPS = 0.008

    def __init__(self, topo: NetnsTopology, uplinks: dict[int, tuple[str, float]],
                 downlinks: dict[int, tuple[str, float]], interval_s: float):
        self.topo, self.interval_s = topo, interval_s
        self.uplinks = {i: (MahimahiTrace.load(p), off) for i, (p, off) in uplinks.items()}
        self.downlinks = {i: (MahimahiTrace.load(p), off) for i, (p, off) in downlinks.items()}
        self.updates = 0
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._loop, name="trace-rates", daemon=True)

    def rates_at(self, elapsed_s: float) -> tuple[dict[int, float], dict[int, float]]:
        def rate(trace: Any, offset_ms: float) -> float:
            t = offset_ms + elapsed_s * 1000
            return max(self.FLOOR_MBPS, trace.rate_mbps(t, t + self.interval_s * 1000))

        return ({i: rate(*v) for i, v in self.uplinks.items()}, {i: rate(*v) for i, v in self.downlinks.items()})

    def __enter__(self) -> TraceRates:
        self.topo.set_rates(*self.rates_at(0.0))
        self._t0 = time.monotonic()
        self._thread.start()
        return self

    def restart(self) -> None:
        """A new phase: every trace starts over from its offset, as the userspace shaper's do."""
        with self._lock:  # an update computed from the old start must not land after this one
            self._t0 = time.monotonic()
            self.topo.set_rates(*self.rates_at(0.0))

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                with self._lock:
                    self.topo.set_rates(*self.rates_at(time.monotonic() - self._t0))
                self.updates += 1
            except BaseException as e:  # noqa: BLE001 - kept and reported by the run
                self.error = e
                return

    def check(self) -> None:
        """Raise what stopped the update thread: a run must not go on with rates that no longer follow the
        traces (the driver calls this every poll)."""
        if self.error is not None:
            raise NetnsError(f"trace rates stopped updating after {self.updates} updates: "
                             f"{type(self.error).__name__}: {self.error}")

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def delete_namespaces(names: Sequence[str]) -> list[str]:
    existing = set(list_namespaces())
    gone = [n for n in names if n in existing]
    if gone:
        # -force: keep going past a namespace that vanished meanwhile
        subprocess.run(["ip", "-force", "-batch", "-"], input="".join(f"netns del {n}\n" for n in gone),
                       capture_output=True, text=True)
    return gone


def list_namespaces() -> list[str]:
    try:
        return sorted(os.listdir(NETNS_DIR))
    except OSError:
        return []


def sweep(prefix: str = PREFIX) -> list[str]:
    """Remove every namespace a splitbed run left behind (idempotent)."""
    return delete_namespaces([n for n in list_namespaces() if n.startswith(prefix)])


# ------------------------------------------------------------------ sockets in a namespace
_libc = None


def _setns(fd: int) -> None:
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def socket_in_netns(netns: str, family: int = socket.AF_INET) -> socket.socket:
    """A TCP socket created inside `netns`; it stays there, whichever thread uses it later.

    setns() changes only the calling thread, so a short-lived thread enters the
    namespace, creates the socket and exits; the caller's threads never move.
    """
    result: dict[str, Any] = {}

    def make() -> None:
        try:
            with open(os.path.join(NETNS_DIR, netns)) as f:
                _setns(f.fileno())
            result["sock"] = socket.socket(family, socket.SOCK_STREAM)
        except BaseException as e:  # noqa: BLE001 - re-raised in the caller
            result["error"] = e

    t = threading.Thread(target=make, name=f"setns-{netns}")
    t.start()
    t.join()
    if "error" in result:
        raise NetnsError(f"cannot create a socket in namespace {netns}: {result['error']}")
    return result["sock"]


# ------------------------------------------------------------------ capability
@dataclass(frozen=True)
class KernelSupport:
    usable: bool
    netem: bool
    reason: str


def probe(tag: str = "probe") -> KernelSupport:
    """Can this process shape links in namespaces here? Tries a real namespace, veth, tbf, netem."""
    if os.geteuid() != 0:
        return KernelSupport(False, False, "not root (tc and network namespaces need CAP_NET_ADMIN)")
    missing = [t for t in ("ip", "tc") if shutil.which(t) is None]
    if missing:
        return KernelSupport(False, False, f"{' and '.join(missing)} not found (install iproute2)")
    layout = NetnsLayout(f"{tag}{os.getpid()}", "10.255.255.0/29", 1)
    topo = NetnsTopology(layout, [DeviceLink(10.0, 10.0)])
    try:
        topo.create()
    except NetnsError as e:
        topo.close()
        return KernelSupport(False, False, f"veth/tbf in a namespace failed: {e}")
    try:
        tc_batch([tc.netem_args("eth0", 1, 0, 0)], layout.device_ns(0))
        netem = True
    except NetnsError:
        netem = False
    finally:
        topo.close()
    return KernelSupport(True, netem, "namespaces, veth and tbf work" + ("; netem too" if netem else
                                                                         "; no sch_netem in this kernel"))
