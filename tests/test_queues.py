"""Drop-tail queues and Gilbert-Elliott loss (throttling.queues): by hand on the plan, then in records."""

from __future__ import annotations

import asyncio
import random

import pytest

from testbed.config.errors import ConfigError
from testbed.config.loading import load_topology
from testbed.plan.devices import device_table
from testbed.results.metrics import strategy_stats
from tests.inprocess import run_phase
from throttling.queues import DropTail, GeParams, GilbertElliott
from throttling.shaper import LinkDirection, LinkShaper


def test_drop_tail_counts_what_is_waiting():
    q = DropTail(packets=2)
    assert q.admits(1500, 0.0)
    q.enqueue(1500, 0.010)
    q.enqueue(1500, 0.020)
    assert not q.admits(1500, 0.005)  # two still waiting
    assert q.admits(1500, 0.010)  # the first has left
    b = DropTail(nbytes=3000)
    b.enqueue(1500, 1.0)
    assert b.admits(1500, 0.5) and not b.admits(1501, 0.5)


def test_full_queue_drops_are_counted_and_resent_by_hand():
    # 1 Mbit/s: 12 ms per 1500 B packet; queue of 5; a lost packet is resent 100 ms later (rtx)
    spec = LinkDirection(rate_mbps=1.0, delay_ms=10.0, rtx_ms=100.0, queue_packets=5)
    plan = LinkShaper(spec).plan(20 * 1500, t_start=0.0)
    # packets 0-4 queue at t=0; packet 5 finds 5 waiting: dropped, retried at 0.1 s (all gone), and so on
    assert plan.queue_drops == 3
    assert plan.ends[-1] == 20 * 1500  # every byte still arrives
    assert plan.t_last == pytest.approx(0.3 + 5 * 0.012 + 0.010)
    unbounded = LinkShaper(LinkDirection(rate_mbps=1.0, delay_ms=10.0, rtx_ms=100.0)).plan(20 * 1500, 0.0)
    assert unbounded.queue_drops == 0 and unbounded.t_last == pytest.approx(20 * 0.012 + 0.010)


def test_gilbert_elliott_loss_rate_and_bursts():
    p = GeParams(p_good_bad=0.02, p_bad_good=0.25, loss_good=0.0, loss_bad=1.0)
    ge = GilbertElliott(p, random.Random(7))
    losses = [ge.lost() for _ in range(200_000)]
    assert sum(losses) / len(losses) == pytest.approx(p.mean_loss, rel=0.05)  # 0.02 / 0.27 = 7.4%
    bursts, run = [], 0
    for lost in losses:
        if lost:
            run += 1
        elif run:
            bursts.append(run)
            run = 0
    assert sum(bursts) / len(bursts) == pytest.approx(1 / 0.25, rel=0.08)  # mean burst = 1 / p_bad_good


def test_bursty_loss_on_the_link_costs_a_resend_per_lost_packet():
    spec = LinkDirection(rate_mbps=100.0, delay_ms=5.0, rtx_ms=50.0, ge_loss=(0.05, 0.5, 0.0, 1.0))
    plan = LinkShaper(spec, seed=4).plan(1000 * 1500, 0.0)
    assert 0.05 < plan.lost_packets / 1000 < 0.15  # mean 0.05 / 0.55 = 9%


def test_loss_pct_and_loss_model_are_alternatives():
    with pytest.raises(ConfigError, match="alternatives"):
        load_topology("topologies/smoke.yaml", ["networks.lte.loss_pct=1",
                                                "networks.lte.loss_model={p_good_bad: 0.1, p_bad_good: 0.5}"])
    topo = load_topology("topologies/smoke.yaml", ["devices[0].network=lte", "networks.lte.uplink_queue={packets: 8}",
                                                   "networks.lte.loss_model={p_good_bad: 0.1, p_bad_good: 0.5}"])
    up = device_table(topo)[0].uplink()
    assert (up.queue_packets, up.queue_bytes, up.ge_loss) == (8, None, (0.1, 0.5, 0.0, 1.0))


@pytest.mark.slow  # over 1.5 s here: out of the fast tier
@pytest.mark.timeout(300)
def test_drop_tail_drops_are_in_the_records_and_summary(write_topology, minimal_yaml):
    topo = load_topology(write_topology(minimal_yaml), [
        "duration_s=2", "warmup_s=0", "strategies=[cloud_only]", "devices.arrival.rate_hz=2", "devices.count=1",
        "networks.lte.jitter_ms=0", "throttling.rrc=off", "networks.lte.uplink_queue={packets: 3}"])

    recs = [r for r in asyncio.run(run_phase(topo, "cloud_only")) if r["status"] == "completed"]
    assert recs and all(r["bytes_up"] > 4 * 1500 for r in recs)  # a JPEG: more packets than the queue holds
    assert all(r["queue_drops"] > 0 for r in recs)
    for r in recs:  # each refused packet waited one RTT (70 ms) before its resend
        assert r["uplink_ms"] > r["uplink_ideal_ms"] + 70.0
    stats = strategy_stats([{**r, "phase": "measure"} for r in recs], 2.0)
    assert stats["uplink_queue_drops"] == sum(r["queue_drops"] for r in recs)
