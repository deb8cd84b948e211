"""Energy formula values (hand-computed from the published coefficients) and summary statistics."""

from __future__ import annotations

import math

import numpy as np
import pytest

from testbed.config.loading import load_topology
from testbed.domain.energy import (
    RadioAccount,
    RadioModel,
    compute_energy_mj,
    radio_transfer_mj,
    tail_energy_mj,
    transfer_energy_mj,
)
from testbed.plan.devices import device_table
from testbed.results.metrics import new_record, percentile, ratios, strategy_stats

# Huang et al. 2012 (alpha_u, alpha_d, beta); promotion and tail from AT&T ARO's LTE defaults (profile aro;
# the built-in default is huang2012, tests/test_rrc.py):
# 0.1 s at 1.2 W, 0.02 s short DRX at (2*1680 + 18*1060)/20 = 1122 mW, 10 s long DRX at
# (2*1680 + 38*1060)/40 = 1091 mW; promotion 0.26 s at 1.21 W = 314.6 mJ.
LTE = RadioModel(438.39, 51.97, 1288.04, 260.0, 1210.0, ((100.0, 1200.0), (20.0, 1122.0), (10_000.0, 1091.0)))
FULL_TAIL_MJ = 0.1 * 1200 + 0.02 * 1122 + 10 * 1091  # 11052.44 mJ
PROMOTION_MJ = 0.26 * 1210  # 314.6 mJ


def test_compute_energy_is_power_times_time():
    assert compute_energy_mj(2.5, 100.0) == pytest.approx(250.0)  # 2.5 W for 100 ms = 250 mJ


def test_lte_uplink_transfer_energy_by_hand():
    # 1 Mbit (125000 B) in 500 ms: throughput 2 Mbit/s; P = 438.39*2 + 1288.04 = 2164.82 mW
    # E = 2164.82 mW * 0.5 s = 1082.41 mJ
    assert transfer_energy_mj(438.39, 1288.04, 125_000, 500.0) == pytest.approx(1082.41)


def test_radio_transfer_adds_both_directions():
    # down: 25000 B = 0.2 Mbit in 100 ms -> 2 Mbit/s: (51.97*2 + 1288.04) * 0.1 = 139.198 mJ
    total = radio_transfer_mj(LTE, 125_000, 500.0, 25_000, 100.0)
    assert total == pytest.approx(1082.41 + 139.198)
    assert radio_transfer_mj(LTE, 0, 0.0, 0, 0.0) == 0.0


def test_built_in_lte_aro_profile_is_the_published_model():
    topo = load_topology("topologies/smoke.yaml", ["devices[0].network=lte", "networks.lte.radio.profile=aro"])
    radio = device_table(topo)[0].radio
    fields = ("alpha_up_mw_per_mbps", "alpha_down_mw_per_mbps", "beta_mw", "promotion_ms", "promotion_mw", "tail")
    assert [getattr(radio, f) for f in fields] == [getattr(LTE, f) for f in fields]
    assert radio.promotion_mj == pytest.approx(PROMOTION_MJ)
    assert tail_energy_mj(radio, radio.tail_ms) == pytest.approx(FULL_TAIL_MJ)


def test_tail_energy_walks_the_phases():
    assert tail_energy_mj(LTE, 50.0) == pytest.approx(0.05 * 1200)  # inside continuous reception
    assert tail_energy_mj(LTE, 1120.0) == pytest.approx(120 + 22.44 + 1.0 * 1091)  # 1 s into long DRX
    assert tail_energy_mj(LTE, 60_000.0) == pytest.approx(FULL_TAIL_MJ)  # capped at the tail's end
    assert tail_energy_mj(LTE, -5.0) == 0.0


def test_tail_is_shared_by_requests_that_arrive_within_it():
    acct = RadioAccount(LTE)
    assert acct.begin(0.0) == (pytest.approx(PROMOTION_MJ), None)  # idle radio: promotion, no tail owed
    assert acct.end(0.5) is True  # left the radio idle: owns the tail
    promo, owed = acct.begin(0.6)  # 100 ms later: still in continuous reception
    assert promo == 0.0 and owed == pytest.approx(0.1 * 1200)
    acct.end(1.0)
    promo, owed = acct.begin(3.0)  # 2 s later: long DRX, no promotion
    assert promo == 0.0 and owed == pytest.approx(120 + 22.44 + 1.88 * 1091)
    acct.end(3.2)
    promo, owed = acct.begin(30.0)  # 26.8 s later: the tail ran out, the radio went idle
    assert promo == pytest.approx(PROMOTION_MJ) and owed == pytest.approx(FULL_TAIL_MJ)


def test_frequent_sender_never_pays_promotion_again():
    acct = RadioAccount(LTE)
    promotions, tails = [], []
    for k in range(50):  # every 100 ms, 40 ms on the air each
        promo, owed = acct.begin(k * 0.1)
        promotions.append(promo)
        tails.append(owed)
        acct.end(k * 0.1 + 0.04)
    assert promotions[0] == pytest.approx(PROMOTION_MJ) and sum(promotions[1:]) == 0.0
    assert all(t == pytest.approx(0.06 * 1200) for t in tails[1:])  # 60 ms of continuous reception each


def test_overlapping_requests_hand_the_tail_to_the_last_one():
    acct = RadioAccount(LTE)
    acct.begin(0.0)
    assert acct.begin(0.1) == (0.0, None)  # the radio is busy: nothing to promote or settle
    assert acct.end(0.5) is False  # another request still uses the radio
    assert acct.end(0.7) is True
    assert not acct.expired(0.7 + 10.0) and acct.expired(0.7 + 10.2)
    assert acct.full_tail_mj() == pytest.approx(FULL_TAIL_MJ)


def test_network_without_published_coefficients_is_unknown_not_zero():
    topo = load_topology("topologies/smoke.yaml", ["devices[0].network=5g"])
    radio = device_table(topo)[0].radio
    assert radio.known is False
    topo = load_topology("topologies/smoke.yaml", ["devices[0].network=5g",
                                                   "networks.5g.radio.alpha_up_mw_per_mbps=400",
                                                   "networks.5g.radio.alpha_down_mw_per_mbps=50",
                                                   "networks.5g.radio.beta_mw=1000"])
    assert device_table(topo)[0].radio.known is True


def test_percentile_matches_numpy():
    xs = [5.0, 1.0, 9.0, 3.0, 7.0, 2.0]
    for q in (0, 50, 95, 99, 100):
        assert percentile(xs, q) == pytest.approx(float(np.percentile(xs, q)))
    assert math.isnan(percentile([], 50))


def _rec(status, e2e, **kw):
    return new_record(strategy="s", phase="measure", status=status, e2e_ms=e2e, energy_mj=kw.pop("e", 10.0),
                      bytes_up=kw.pop("up", 1000), reason=kw.pop("reason", None), **kw)


def test_strategy_stats_counts_and_latency():
    recs = [_rec("completed", x) for x in (100.0, 200.0, 300.0)]
    recs.append(_rec("failed", None, reason="rejected: queue_full"))
    recs.append(_rec("timed_out", None, reason="no answer"))
    st = strategy_stats(recs, window_s=2.0)
    assert st["by_status"] == {"completed": 3, "failed": 1, "timed_out": 1}
    assert st["latency_ms"]["p50"] == 200.0 and st["latency_ms"]["mean"] == 200.0
    assert st["throughput_rps"] == 1.5
    assert st["failure_reasons"] == {"rejected: queue_full": 1, "no answer": 1}


def test_ratios_baseline_over_other():
    per = {"cloud_only": strategy_stats([_rec("completed", 400.0, e=100.0, up=20000)], 1),
           "butterfly": strategy_stats([_rec("completed", 100.0, e=25.0, up=5000)], 1)}
    r = ratios(per)["cloud_only/butterfly"]
    assert r["latency_p50"] == 4.0 and r["energy_mean"] == 4.0 and r["bytes_up_mean"] == 4.0


def test_records_refuse_unknown_fields():
    with pytest.raises(KeyError):
        new_record(latency=1)
