"""The userspace shaper: its plan (pure) and real bytes on a loopback socket, timed."""

from __future__ import annotations

import asyncio
import statistics

import pytest

from testbed.base.clock import now
from throttling.shaper import LinkDirection, LinkShaper


def test_plan_of_one_message_is_bytes_over_rate_plus_delay():
    spec = LinkDirection(rate_mbps=8.0, delay_ms=20.0)  # 1 MB/s
    plan = LinkShaper(spec).plan(100_000, t_start=10.0)
    assert plan.t_last == pytest.approx(10.0 + 0.100 + 0.020)
    assert plan.ends[-1] == 100_000 and len(plan.ends) == 67  # 1500-byte packets
    assert plan.arrivals == sorted(plan.arrivals)
    assert spec.ideal_ms(100_000) == pytest.approx(120.0)


def test_back_to_back_messages_queue_on_the_link_but_propagate_in_parallel():
    shaper = LinkShaper(LinkDirection(rate_mbps=8.0, delay_ms=50.0))
    first = shaper.plan(10_000, t_start=0.0)
    second = shaper.plan(10_000, t_start=0.0)
    assert first.t_last == pytest.approx(0.010 + 0.050)
    assert second.t_last == pytest.approx(0.020 + 0.050)  # waits 10 ms for the link, not 60 ms
    idle = shaper.plan(10_000, t_start=1.0)
    assert idle.t_last == pytest.approx(1.0 + 0.010 + 0.050)


def test_jitter_varies_delay_but_never_reorders():
    shaper = LinkShaper(LinkDirection(rate_mbps=100.0, delay_ms=30.0, jitter_ms=10.0), seed=1)
    lasts, delays = [], []
    for i in range(500):
        plan = shaper.plan(100, t_start=i * 0.001)
        lasts.append(plan.t_last)
        delays.append((plan.t_last - i * 0.001) * 1000)
    assert lasts == sorted(lasts)
    assert statistics.pstdev(delays) > 3.0


def test_jitter_statistics_on_an_idle_link():
    shaper = LinkShaper(LinkDirection(rate_mbps=1000.0, delay_ms=40.0, jitter_ms=5.0), seed=2)
    delays = [(shaper.plan(10, t_start=i * 1.0).t_last - i * 1.0) * 1000 for i in range(2000)]
    assert statistics.mean(delays) == pytest.approx(40.0, abs=0.5)
    assert statistics.pstdev(delays) == pytest.approx(5.0, rel=0.1)


def test_loss_costs_a_retransmission_delay_per_lost_packet():
    spec = LinkDirection(rate_mbps=12.0, delay_ms=10.0, loss_pct=10.0, rtx_ms=20.0)
    shaper = LinkShaper(spec, seed=3)
    plans = [shaper.plan(15_000, t_start=i * 10.0) for i in range(400)]  # 10 packets each, idle link
    lost = sum(p.lost_packets for p in plans)
    assert lost / (400 * 10) == pytest.approx(0.10, abs=0.02)
    clean = [p for p in plans if p.lost_packets == 0]
    assert all((p.t_last - p.t_start) * 1000 == pytest.approx(20.0) for p in clean)
    one = [p for p in plans if p.lost_packets == 1 and p.ends]
    # 1 ms per packet: the lost packet arrives after its resend (+1 ms on the link), the rtx wait
    # (20 ms) and the delay (10 ms); in-order delivery holds every later packet behind it.
    assert one
    for p in one:
        assert 2 + 20 + 10 - 1e-6 <= (p.t_last - p.t_start) * 1000 <= 20 + 1 + 20 + 1e-6


async def _measure(spec: LinkDirection, nbytes: int, repeats: int = 1) -> list[tuple[float, float]]:
    """Send over loopback through the shaper; returns (planned, measured at the receiver) in ms."""
    done: asyncio.Queue[float] = asyncio.Queue()

    async def receiver(reader, writer):
        for _ in range(repeats):
            await reader.readexactly(nbytes)
            done.put_nowait(now())
        writer.close()

    server = await asyncio.start_server(receiver, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    _, writer = await asyncio.open_connection("127.0.0.1", port)
    shaper = LinkShaper(spec)
    out = []
    payload = b"x" * nbytes
    for _ in range(repeats):
        result = await shaper.send(writer, payload)
        t_recv = await done.get()
        out.append(((result.t_planned - result.t_start) * 1000, (t_recv - result.t_start) * 1000))
        await asyncio.sleep(0.01)
    writer.close()
    server.close()
    await server.wait_closed()
    return out


@pytest.mark.parametrize("nbytes, rate_mbps, delay_ms", [
    (100_000, 8.0, 20.0),     # 100 KB on 8 Mbit/s: 100 ms + 20 ms
    (1_000_000, 40.0, 10.0),  # 1 MB on 40 Mbit/s: 200 ms + 10 ms
    (6_000, 5.85, 35.0),      # a butterfly payload on LTE
])
def test_real_bytes_arrive_when_the_link_says(nbytes, rate_mbps, delay_ms):
    spec = LinkDirection(rate_mbps=rate_mbps, delay_ms=delay_ms)
    results = asyncio.run(_measure(spec, nbytes, repeats=3))
    ideal = spec.ideal_ms(nbytes)
    for planned, measured in results:
        assert planned == pytest.approx(ideal, rel=1e-6)
        # timing within 5% or 3 ms, whichever is larger (loop wake-up granularity on a busy host)
        assert measured == pytest.approx(ideal, abs=max(3.0, 0.05 * ideal))
        assert measured >= ideal - 0.5  # never early beyond coalescing slack


# ---------------------------------------------------------------- fault windows (link_outage, link_degrade)
def test_outage_holds_every_byte_until_the_window_ends():
    shaper = LinkShaper(LinkDirection(rate_mbps=8.0, delay_ms=20.0))  # 1 MB/s
    shaper.set_faults([(10.0, 12.0, 0.0)])
    inside = shaper.plan(10_000, t_start=10.5)  # sent during the outage: crosses after it
    assert inside.arrivals[0] > 12.0
    assert inside.t_last == pytest.approx(12.0 + 0.010 + 0.020)
    straddling = LinkShaper(LinkDirection(rate_mbps=8.0, delay_ms=20.0))
    straddling.set_faults([(10.0, 12.0, 0.0)])
    plan = straddling.plan(10_000, t_start=9.995)  # 5 ms on the link before it goes down, 5 ms after
    assert plan.t_last == pytest.approx(12.0 + 0.005 + 0.020)
    assert min(a for a in plan.arrivals if a > 10.02) > 12.0  # nothing crosses during the outage


def test_degradation_scales_the_transfer_time_and_ends_with_its_window():
    shaper = LinkShaper(LinkDirection(rate_mbps=8.0, delay_ms=20.0))
    shaper.set_faults([(10.0, 20.0, 0.25)])
    slow = shaper.plan(100_000, t_start=11.0)
    assert (slow.t_last - 11.0) == pytest.approx(0.100 / 0.25 + 0.020)
    after = shaper.plan(100_000, t_start=21.0)
    assert (after.t_last - 21.0) == pytest.approx(0.100 + 0.020)
    shaper.set_faults([])  # cleared: the link is back to its rate
    assert shaper.plan(100_000, t_start=31.0).t_last == pytest.approx(31.0 + 0.120)
    # overlapping windows multiply: half of a quarter
    both = LinkShaper(LinkDirection(rate_mbps=8.0, delay_ms=0.0))
    both.set_faults([(0.0, 5.0, 0.5), (0.0, 5.0, 0.25)])
    assert both.plan(10_000, t_start=1.0).t_last == pytest.approx(1.0 + 0.010 / 0.125)


def test_an_outage_over_the_kernel_serializer_still_holds_the_bytes():
    shaper = LinkShaper(LinkDirection(rate_mbps=8.0, delay_ms=5.0, kernel_rate=True))
    shaper.set_faults([(10.0, 11.0, 0.0)])
    assert shaper.plan(50_000, t_start=10.2).t_last == pytest.approx(11.0 + 0.005)
    assert shaper.plan(50_000, t_start=12.0).t_last == pytest.approx(12.0 + 0.005)


def test_real_bytes_wait_out_an_outage_on_a_socket():
    async def run() -> tuple[float, float]:
        got: asyncio.Queue[float] = asyncio.Queue()

        async def receiver(reader, writer):
            await reader.readexactly(6_000)
            got.put_nowait(now())
            writer.close()

        server = await asyncio.start_server(receiver, "127.0.0.1", 0)
        _, writer = await asyncio.open_connection("127.0.0.1", server.sockets[0].getsockname()[1])
        shaper = LinkShaper(LinkDirection(rate_mbps=5.85, delay_ms=35.0))
        t0 = now()
        shaper.set_faults([(t0, t0 + 0.3, 0.0)])
        await shaper.send(writer, b"x" * 6_000)
        t_recv = await got.get()
        writer.close()
        server.close()
        await server.wait_closed()
        return t0, t_recv

    t0, t_recv = asyncio.run(run())
    ideal_ms = 300 + LinkDirection(rate_mbps=5.85, delay_ms=35.0).ideal_ms(6_000)
    assert (t_recv - t0) * 1000 == pytest.approx(ideal_ms, abs=max(3.0, 0.05 * ideal_ms))


# ---------------------------------------------------------------- throttling.delivery: message
async def _first_and_last_byte(spec: LinkDirection, nbytes: int) -> tuple[float, float, float, bytes]:
    """(first byte, last byte, planned last byte) in ms from the send's start, and the bytes received."""
    got: asyncio.Queue[tuple[float, float, bytes]] = asyncio.Queue()

    async def receiver(reader, writer):
        first = await reader.readexactly(1)
        t_first = now()
        rest = await reader.readexactly(nbytes - 1)
        got.put_nowait((t_first, now(), first + rest))
        writer.close()

    server = await asyncio.start_server(receiver, "127.0.0.1", 0)
    _, writer = await asyncio.open_connection("127.0.0.1", server.sockets[0].getsockname()[1])
    payload = bytes(range(256)) * (nbytes // 256)
    result = await LinkShaper(spec).send(writer, payload)
    t_first, t_last, data = await got.get()
    writer.close()
    server.close()
    await server.wait_closed()
    ms = lambda t: (t - result.t_start) * 1000  # noqa: E731
    return ms(t_first), ms(t_last), ms(result.t_planned), data


@pytest.mark.parametrize("per_message", [False, True])
def test_message_delivery_writes_every_byte_at_the_last_bytes_time(per_message):
    spec = LinkDirection(rate_mbps=8.0, delay_ms=20.0, per_message=per_message)  # 102,400 B: 102.4 + 20 ms
    first, last, planned, data = asyncio.run(_first_and_last_byte(spec, 102_400))
    assert data == bytes(range(256)) * 400  # the same bytes, in order
    assert planned == pytest.approx(spec.ideal_ms(102_400))
    assert last == pytest.approx(planned, abs=max(3.0, 0.05 * planned))  # completion is the link's either way
    if per_message:  # nothing before the message is complete
        assert first >= planned - 0.5
    else:  # packets arrive as they cross: the first 1500 B after 1.5 ms on the link + 20 ms
        assert first < 40.0
