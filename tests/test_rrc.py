"""RRC states cost time and energy from one timeline (testbed.domain.rrc): hand-computed values, then loopback runs."""

from __future__ import annotations

import asyncio
import math
import statistics

import pytest

from testbed.config.loading import load_topology
from testbed.domain.energy import RadioAccount, tail_energy_mj
from testbed.domain.rrc import downlink_wait_ms, state_at, uplink_promotion
from testbed.plan.devices import device_table
from tests.inprocess import run_phase

# Huang et al. 2012 LTE (profile huang2012): promotion 260.1 ms at 1210.7 mW; continuous reception 100 ms at
# 1060 mW; short DRX 20 ms at (1680.2 + 19*1060)/20 = 1091.01 mW; long DRX 11456 ms at (1680.1 + 39*1060)/40
# = 1075.5 mW, on-durations of 1 ms every 20 / 40 ms.
P_PRO_MJ = 0.2601 * 1210.7
CR_MW, SHORT_MW, LONG_MW = 1060.0, 1091.01, 1075.5
FULL_TAIL_MJ = 0.1 * CR_MW + 0.02 * SHORT_MW + 11.456 * LONG_MW


@pytest.fixture(scope="module")
def lte():
    topo = load_topology("topologies/smoke.yaml", ["devices[0].network=lte"])
    return device_table(topo)[0].radio


def test_lte_default_is_huang2012_with_its_tail(lte):
    assert lte.profile == "huang2012"
    assert lte.tail_ms == pytest.approx(11_576.0)
    assert lte.promotion_mj == pytest.approx(P_PRO_MJ)
    assert tail_energy_mj(lte, lte.tail_ms) == pytest.approx(FULL_TAIL_MJ)


def test_states_along_the_tail(lte):
    assert state_at(lte, 50) == "continuous_reception"
    assert state_at(lte, 110) == "short_drx"
    assert state_at(lte, 5_000) == "long_drx"
    assert state_at(lte, 11_577) == "idle"
    assert uplink_promotion(lte, 5_000) == ("long_drx", 0.0, 0.0)  # still connected: no promotion
    assert uplink_promotion(lte, 20_000) == ("idle", 260.1, pytest.approx(P_PRO_MJ))


def test_downlink_in_long_drx_waits_for_the_next_on_duration(lte):
    # long DRX starts 120 ms after the last transfer; on-durations at 120 + 40k ms, 1 ms long
    assert downlink_wait_ms(lte, 50.0) == 0.0  # continuous reception
    assert downlink_wait_ms(lte, 120.0 + 40 * 10 + 0.5) == 0.0  # inside an on-duration
    assert downlink_wait_ms(lte, 120.0 + 40 * 10 + 10.0) == pytest.approx(30.0)
    assert downlink_wait_ms(lte, 110.0) == pytest.approx(10.0)  # short DRX: the 20 ms cycle from 100 ms
    # idle (the tail has run out 11576 ms after): the next paging occasion (every 1280 ms) and the promotion
    assert downlink_wait_ms(lte, 11_576.0 + 100.0) == pytest.approx(1180.0 + 260.1)


def test_3g_fach_pays_its_own_promotion():
    topo = load_topology("topologies/smoke.yaml", ["devices[0].network=3g"])
    radio = device_table(topo)[0].radio
    assert radio.profile == "aro"  # ARO's i997 profile: DCH 4 s at 1.30 W, FACH 10 s at 0.30 W
    assert uplink_promotion(radio, 1_000) == ("dch", 0.0, 0.0)
    assert uplink_promotion(radio, 6_000) == ("fach", 1500.0, pytest.approx(1.5 * 800))
    assert uplink_promotion(radio, 15_000) == ("idle", 2000.0, pytest.approx(2.0 * 650))


def test_energy_of_a_scripted_sequence_from_the_timeline(lte):
    """Isolated request, two within the tail, one across into long DRX, then the end: every promotion and tail
    mJ by hand."""
    acct = RadioAccount(lte)
    charged = []
    a = acct.start(0.0)  # from idle
    assert (a.state, a.promotion_ms) == ("idle", 260.1)
    charged.append(a.promotion_mj)
    acct.end(0.5)
    b = acct.start(0.55)  # 50 ms later: continuous reception
    assert (b.state, b.promotion_ms, b.promotion_mj) == ("continuous_reception", 0.0, 0.0)
    charged.append(b.owed_tail_mj)
    acct.end(0.6)
    c = acct.start(0.6 + 2.0)  # 2 s later: long DRX
    assert (c.state, c.promotion_mj) == ("long_drx", 0.0)
    charged.append(c.owed_tail_mj)
    acct.end(3.0)
    d = acct.start(3.0 + 30.0)  # the tail has run out: promoted again
    charged += [d.promotion_mj, d.owed_tail_mj]
    by_hand = (P_PRO_MJ + 0.05 * CR_MW
               + 0.1 * CR_MW + 0.02 * SHORT_MW + 1.88 * LONG_MW
               + P_PRO_MJ + FULL_TAIL_MJ)
    assert sum(charged) == pytest.approx(by_hand)


def test_rrc_off_keeps_the_energy_but_no_wait(lte):
    acct = RadioAccount(lte, enabled=False)
    s = acct.start(0.0)
    assert s.promotion_ms == 0.0 and s.promotion_mj == pytest.approx(P_PRO_MJ)
    assert acct.downlink_wait(5.0) == 0.0


def test_unknown_rrc_timers_are_reported_unknown_not_zero():
    topo = load_topology("topologies/smoke.yaml", ["devices[0].network=5g"])
    acct = RadioAccount(device_table(topo)[0].radio)
    assert acct.start(0.0).promotion_ms is None
    assert acct.downlink_wait(1.0) is None


def test_profile_by_name_replaces_the_rrc_values():
    topo = load_topology("topologies/smoke.yaml", ["devices[0].network=lte", "networks.lte.radio.profile=aro"])
    radio = device_table(topo)[0].radio
    assert radio.profile == "aro" and radio.tail_ms == pytest.approx(10_120.0)
    assert radio.alpha_up_mw_per_mbps == 438.39  # the transfer coefficients stay Huang's
    topo = load_topology("topologies/smoke.yaml", ["devices[0].network=3g", "networks.3g.radio.profile=huang2012",
                                                   "networks.3g.radio.promotion_ms=600"])
    assert device_table(topo)[0].radio.promotion_ms == 600.0  # the user's own key wins over the profile


# ---------------------------------------------------------------- real bytes over loopback (no Ray)
SHORT_TAIL = ["networks.lte.radio.tail=[{state: continuous_reception, ms: 20, mw: 1060}, "
              "{state: long_drx, ms: 280, mw: 1075.5, cycle_ms: 40, on_ms: 1}]",
              "networks.lte.radio.idle={cycle_ms: 0}"]  # idle: the answer waits the promotion, no paging


def _topology(write_topology, minimal_yaml, rate_hz, rrc):
    return load_topology(write_topology(minimal_yaml), [
        "duration_s=3", "warmup_s=0", "strategies=[butterfly]", f"devices.arrival.rate_hz={rate_hz}",
        "devices.count=1", "cloud.max_batch_wait_ms=1", "networks.lte.jitter_ms=0", "model.input_size=64",
        "networks.lte.radio.promotion_ms=200", *SHORT_TAIL, f"throttling.rrc={rrc}"])


async def _phase(topo, strategy="butterfly"):
    return [r for r in await run_phase(topo, strategy) if r["status"] == "completed"]


@pytest.mark.slow  # over 1.5 s here: out of the fast tier
@pytest.mark.timeout(300)
def test_promotion_after_the_tail_none_within_it(write_topology, minimal_yaml):
    # 1 Hz: a request finds the radio idle (tail 300 ms) unless a loaded host made the one before last 700 ms;
    # 5 Hz: the next starts within the tail
    idle_on = asyncio.run(_phase(_topology(write_topology, minimal_yaml, 1, "on")))
    idle_off = asyncio.run(_phase(_topology(write_topology, minimal_yaml, 1, "off")))
    found_idle = [r for r in idle_on if r["rrc_state"] == "idle"]
    assert len(found_idle) >= 2 and all(r["rrc_promotion_ms"] == 200.0 for r in found_idle)
    assert all(r["rrc_promotion_ms"] == 0.0 for r in idle_on if r["rrc_state"] != "idle")
    extra = statistics.median(r["uplink_ms"] for r in found_idle) - statistics.median(r["uplink_ms"] for r in idle_off)
    assert extra == pytest.approx(200.0, abs=2.0)
    busy = asyncio.run(_phase(_topology(write_topology, minimal_yaml, 5, "on")))[1:]  # the first starts idle
    assert busy and statistics.median(r["rrc_promotion_ms"] for r in busy) == 0.0
    assert sum(r["rrc_promotion_ms"] > 0 for r in busy) <= 1  # (one host stall may let the tail run out)
    assert statistics.median(r["uplink_ms"] for r in busy) < statistics.median(r["uplink_ms"] for r in idle_off) + 5
    for r in idle_on + busy:  # e2e holds the waits; the answer lands in long DRX and waits under one cycle
        assert r["rrc_ms"] == pytest.approx(r["rrc_promotion_ms"] + r["rrc_drx_ms"])
        # (or, behind a cloud slowed by a loaded host, after the 300 ms tail: the 200 ms promotion)
        assert 0.0 <= r["rrc_drx_ms"] < 40.0 or r["rrc_drx_ms"] >= 200.0
        assert r["e2e_ms"] >= r["uplink_ms"] + r["server_ms"] + r["downlink_ms"] - 1.0
    assert statistics.median(r["rrc_drx_ms"] for r in idle_on + busy) < 40.0
    assert statistics.median(r["rrc_drx_ms"] for r in idle_on) > 0.0
    downlink_gap = (statistics.median(r["downlink_ms"] - r["rrc_drx_ms"] for r in idle_on)
                    - statistics.median(r["downlink_ms"] for r in idle_off))
    assert downlink_gap == pytest.approx(0.0, abs=8.0)  # the downlink is longer by its DRX wait, no more


def test_summary_and_first_line_say_which_rrc():
    from testbed.plan.devices import rrc_line, rrc_summary

    topo = load_topology("topologies/smoke.yaml", ["devices[0].network=5g", "throttling.rrc=off"])
    s = rrc_summary(topo)
    assert s["mode"] == "off"
    assert s["networks"]["5g"]["known"] is False and s["networks"]["5g"]["promotion_ms"] is None
    assert rrc_line(topo).startswith("rrc: off") and "5g: unknown, timers unknown" in rrc_line(topo)
    assert load_topology("topologies/smoke.yaml").throttling.rrc == "on"  # the default


# ---------------------------------------------------------------- predictions charge what the run charges
def test_predictions_include_promotion_and_drx(lte):
    from testbed.domain.rrc import mean_downlink_wait_ms
    from testbed.domain.split_policy import CutProfile, LinkView, Objective, RrcContext, predict

    p = CutProfile("layer2+butterfly", device_ms=50.0, bytes_up=10_000, cloud_ms=20.0)
    link = LinkView(uplink_mbps=8.0, downlink_mbps=10.0, one_way_ms=20.0)
    energy = Objective("energy")
    off = predict(p, link, 2.0, lte, 20_000.0, energy, RrcContext(on=False))
    idle = predict(p, link, 2.0, lte, 20_000.0, energy)  # periodic, 20 s apart: every request from idle
    drx = mean_downlink_wait_ms(lte, 20.0 + 20.0)  # the answer 40 ms after the last uplink byte: continuous
    assert drx == 0.0
    assert idle.latency_ms - off.latency_ms == pytest.approx(260.1)
    assert idle.energy_mj == pytest.approx(off.energy_mj)  # the run charges promotion energy with RRC off too
    warm = predict(p, link, 2.0, lte, 20_000.0, energy, RrcContext(idle_ms=0.0))  # dynamic: the radio is up
    assert idle.energy_mj - warm.energy_mj == pytest.approx(P_PRO_MJ)
    assert idle.latency_ms - warm.latency_ms == pytest.approx(260.1)
    poisson = predict(p, link, 2.0, lte, 20_000.0, energy, RrcContext(poisson=True))
    share = math.exp(-(11_576.0 + warm.latency_ms) / 20_000.0)  # P(gap > tail + busy)
    assert poisson.latency_ms - warm.latency_ms == pytest.approx(share * 260.1)
    slow_cloud = CutProfile("layer2+butterfly", 50.0, 10_000, cloud_ms=500.0)  # the answer arrives in long DRX
    gap = predict(slow_cloud, link, 2.0, lte, 20_000.0, energy).latency_ms - predict(
        slow_cloud, link, 2.0, lte, 20_000.0, energy, RrcContext(on=False)).latency_ms
    assert gap == pytest.approx(260.1 + 39 ** 2 / 80)  # promotion + the mean wait for a 1 ms on in 40 ms


@pytest.mark.slow  # over 1.5 s here: out of the fast tier
@pytest.mark.timeout(300)
def test_prediction_matches_measurement_for_an_idle_device(write_topology, minimal_yaml):
    """With RRC on, best_static's prediction misses the measured e2e by as much as with RRC off: the promotion
    and the DRX wait are in it. (Each run calibrates its own compute and cloud times, so predictions are compared
    with their own run's measurements; the miss itself is host overhead that no prediction models.)"""
    miss, runs = {}, {}
    for rrc in ("on", "off"):
        topo = load_topology(write_topology(minimal_yaml), [
            "duration_s=6", "warmup_s=0", "strategies=[best_static]", "policy.cuts=[layer2+butterfly]",
            "devices.arrival.rate_hz=1", "devices.count=1", "cloud.max_batch_wait_ms=1", "networks.lte.jitter_ms=0",
            "model.input_size=64", "networks.lte.radio.promotion_ms=200", *SHORT_TAIL, f"throttling.rrc={rrc}"])
        runs[rrc] = [r for r in sorted(asyncio.run(_phase(topo, "best_static")), key=lambda r: r["t_arrival_s"])[1:]
                     if r["rrc_state"] == "idle"]  # (a host stall may let one start within the 300 ms tail)
        miss[rrc] = statistics.median(r["e2e_ms"] - r["predicted_ms"] for r in runs[rrc])
    assert len(runs["on"]) >= 3 and all(r["rrc_promotion_ms"] == 200.0 for r in runs["on"])
    assert 200.0 <= statistics.median(r["rrc_ms"] for r in runs["on"]) < 240.0  # + the answer's DRX wait (< 40 ms)
    # without the promotion in it the prediction would miss by 200 ms more; the host's share of the miss moves by
    # up to about +-50 ms between runs on a loaded 2-core host
    assert miss["on"] == pytest.approx(miss["off"], abs=100.0)
