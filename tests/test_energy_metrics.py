"""Energy formula values (hand-computed from the published coefficients) and summary statistics."""

from __future__ import annotations

import math

import numpy as np
import pytest

from testbed.energy import RadioModel, compute_energy_mj, radio_energy_mj, transfer_energy_mj
from testbed.metrics import new_record, percentile, ratios, strategy_stats

LTE = RadioModel(438.39, 51.97, 1288.04)  # Huang et al. 2012


def test_compute_energy_is_power_times_time():
    assert compute_energy_mj(2.5, 100.0) == pytest.approx(250.0)  # 2.5 W for 100 ms = 250 mJ


def test_lte_uplink_transfer_energy_by_hand():
    # 1 Mbit (125000 B) in 500 ms: throughput 2 Mbit/s; P = 438.39*2 + 1288.04 = 2164.82 mW
    # E = 2164.82 mW * 0.5 s = 1082.41 mJ
    assert transfer_energy_mj(438.39, 1288.04, 125_000, 500.0) == pytest.approx(1082.41)


def test_radio_energy_adds_both_directions():
    # down: 25000 B = 0.2 Mbit in 100 ms -> 2 Mbit/s: (51.97*2 + 1288.04) * 0.1 = 139.198 mJ
    up = transfer_energy_mj(438.39, 1288.04, 125_000, 500.0)
    total = radio_energy_mj(LTE, 125_000, 500.0, 25_000, 100.0)
    assert total == pytest.approx(up + 139.198)


def test_no_transfer_no_radio_energy():
    assert radio_energy_mj(LTE, 0, 0.0, 0, 0.0) == 0.0


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
