"""Link fidelity check: send known payloads over each configured link, per backend, before a run.

`python run.py TOPOLOGY --check-links` (or `throttling.check_links: true`)
measures, for every device group's link and each available backend, how long
a payload takes to reach the far end against what the link should take
(jitter is set to zero so the expectation is exact; traced links are expected
to follow their trace as the shaper plans it). Transfers go over loopback
(userspace) or between namespaces this check creates (tc), nothing else.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import statistics
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from testbed.base.clock import now
from testbed.config.schema import Topology
from testbed.plan.devices import DeviceSpec, device_table
from throttling.links import LinkBackend, choose_backend, userspace_part
from throttling.netns import NetnsLayout, NetnsTopology, socket_in_netns
from throttling.shaper import LinkDirection, LinkShaper

if TYPE_CHECKING:
    from throttling.netns import NetnsLayout

PAYLOADS = (10_000, 100_000, 1_000_000)
REPEATS = 3


@dataclass(frozen=True)
class CheckRow:
    group: str
    backend: str
    direction: str
    nbytes: int
    expected_ms: float
    measured_ms: float

    @property
    def error_pct(self) -> float:
        return 100 * (self.measured_ms - self.expected_ms) / self.expected_ms


def expected_ms(spec: LinkDirection, nbytes: int) -> float:
    """What the link should take for one message on an idle link (the shaper's own plan)."""
    t0 = 1000.0
    return (LinkShaper(spec).plan(nbytes, t0).t_last - t0) * 1000


async def pipe_times(connect: Any, listen: Any, shaper: LinkShaper, nbytes: int, repeats: int) -> list[float]:
    """Send `nbytes` through `shaper` `repeats` times; receiver-side completion times (ms)."""
    done: asyncio.Queue[float] = asyncio.Queue()

    async def receive(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                await reader.readexactly(nbytes)
                done.put_nowait(now())
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            writer.close()

    server = await listen(receive)
    _, writer = await connect(server)
    payload = b"\0" * nbytes
    times = []
    for _ in range(repeats):
        sent = await shaper.send(writer, payload)
        times.append((await done.get() - sent.t_start) * 1000)
        await asyncio.sleep(0.05)
    writer.close()
    server.close()
    await server.wait_closed()
    return times


def loopback_endpoints() -> tuple[Any, Any]:
    """(listen, connect) for a transfer over 127.0.0.1."""
    async def listen(cb: Any) -> Any:
        return await asyncio.start_server(cb, "127.0.0.1", 0)

    async def connect(server: Any) -> Any:
        return await asyncio.open_connection("127.0.0.1", server.sockets[0].getsockname()[1])

    return listen, connect


def _check_userspace(spec: LinkDirection, nbytes: int) -> float:
    listen, connect = loopback_endpoints()
    return statistics.median(asyncio.run(pipe_times(connect, listen, LinkShaper(spec), nbytes, REPEATS)))


def check_layout(device_id: int) -> NetnsLayout:
    """A link check's namespaces, named with this driver's pid (`splitbed-chk<pid>-<device>-c`): two runs checking
    links at once must not share one (the second's failed create would delete the first's), and `--cleanup`
    keeps a live run's."""

    return NetnsLayout(f"chk{os.getpid()}-{device_id}", "10.254.0.0/29", 1)


def _check_tc(dev: DeviceSpec, backend: LinkBackend, direction: str, nbytes: int) -> float:
    """One device's link in fresh namespaces: the kernel does the rate, as in a run."""

    spec = dev.uplink() if direction == "up" else dev.downlink()
    layout = check_layout(dev.device_id)
    src, dst = ((layout.device_ns(0), layout.cloud_ns) if direction == "up" else
                (layout.cloud_ns, layout.device_ns(0)))
    dst_ip = layout.cloud_ip if direction == "up" else layout.device_ip(0)

    async def listen(cb: Any) -> Any:
        sock = socket_in_netns(dst)
        sock.bind((dst_ip, 0))
        return await asyncio.start_server(cb, sock=sock)

    async def connect(server: Any) -> Any:
        sock = socket_in_netns(src)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, (dst_ip, server.sockets[0].getsockname()[1]))
        return await asyncio.open_connection(sock=sock)

    with NetnsTopology(layout, [dev.kernel_link()], netem=backend.netem):  # the caller set jitter to 0
        shaper = LinkShaper(userspace_part(spec, backend))
        return statistics.median(asyncio.run(pipe_times(connect, listen, shaper, nbytes, REPEATS)))


def check_links(topo: Topology, backends: list[LinkBackend], payloads: tuple[int, ...] = PAYLOADS) -> list[CheckRow]:
    rows = []
    table = device_table(topo)
    for gi, group in enumerate(topo.devices):
        dev = next(d for d in table if d.group == (group.name or f"group{gi}"))
        dev = dataclasses.replace(dev, link=dev.link.model_copy(update={"jitter_ms": 0.0}))
        for direction in ("up", "down"):
            spec = dev.uplink() if direction == "up" else dev.downlink()
            for nbytes in payloads:
                for backend in backends:
                    measured = (_check_userspace(spec, nbytes) if backend.name == "userspace"
                                else _check_tc(dev, backend, direction, nbytes))
                    rows.append(CheckRow(dev.group, backend.name, direction, nbytes, expected_ms(spec, nbytes),
                                         measured))
    return rows


def available_backends() -> list[LinkBackend]:
    """userspace always; tc where a probe shows it works here."""

    tc_backend = choose_backend("auto", "")
    return [LinkBackend("userspace")] + ([tc_backend] if tc_backend.name == "tc" else [])


def format_rows(rows: list[CheckRow]) -> str:
    lines = [f"{'group':<12}{'backend':<11}{'dir':<6}{'bytes':>10}{'expected ms':>13}{'measured ms':>13}{'error %':>9}"]
    for r in rows:
        lines.append(f"{r.group:<12}{r.backend:<11}{r.direction:<6}{r.nbytes:>10,}{r.expected_ms:>13.1f}"
                     f"{r.measured_ms:>13.1f}{r.error_pct:>9.2f}")
    return "\n".join(lines)
