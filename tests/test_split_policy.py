"""Split policies: cut names, natural bottlenecks, hand-computed predictions and choices, the bandwidth
estimate, config errors, and (slow) dynamic against every static cut on a link that switches rate."""

from __future__ import annotations

import csv
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from testbed.config.errors import ConfigError
from testbed.config.loading import load_topology
from testbed.domain.energy import RadioModel
from testbed.domain.split_policy import (
    CloudTimes,
    CutProfile,
    LinkEstimator,
    LinkView,
    Objective,
    candidate_cuts,
    choose,
    cuts_for_run,
    natural_bottlenecks,
    predict,
    static_cut,
    strategy_problem,
)

ROOT = Path(__file__).resolve().parent.parent
NO_RADIO = RadioModel(None, None, None)
LATENCY = Objective("latency")


def _catalogue(sizes: dict[str, int]) -> list[dict]:
    return [{"cut": k, "float32_bytes": v} for k, v in sizes.items()]


def test_natural_bottlenecks_are_the_stages_smaller_than_the_input():
    cat = _catalogue({"input": 1000, "stem": 1200, "layer1": 4000, "layer2": 900, "layer3": 1100,
                      "layer4": 500})
    assert natural_bottlenecks(cat) == ["layer2", "layer4"]  # rows without the catalogue's flag: by their bytes
    flagged = [{**r, "natural_bottleneck": r["cut"] == "layer4"} for r in cat]
    assert natural_bottlenecks(flagged) == ["layer4"]  # the catalogue's flag decides where it is given
    assert candidate_cuts("auto", "layer3", cat) == ["cloud_only", "layer2", "layer4", "layer3+butterfly",
                                                     "device_only"]
    assert candidate_cuts(["layer1", "device_only"], "layer3", cat) == ["layer1", "device_only"]


def test_resnet50_natural_bottlenecks_at_224():
    """From the real network's catalogue: layer4's blocks (2048x7x7 floats) are smaller than 3x224x224, and the
    pooled vector (once: flatten only reshapes it; each block's add before its ReLU is not counted either)."""
    from testbed.model.split_model import build_backbone, split_catalogue

    assert natural_bottlenecks(split_catalogue(build_backbone(None, 0), 224)) == [
        "layer4.0", "layer4.1", "layer4", "flatten"]


def test_static_cuts_and_the_cuts_a_run_builds():
    assert static_cut("butterfly", "layer2") == "layer2+butterfly"
    assert static_cut("split", "layer3") == "layer3"
    assert static_cut("static:layer4", "layer2") == "layer4"
    assert static_cut("cloud_only", "layer2") == "cloud_only"
    assert static_cut("dynamic", "layer2") is None
    cat = _catalogue({"input": 10, "layer1": 20, "layer4": 5})
    assert cuts_for_run(["butterfly", "cloud_only"], "auto", "layer2", cat) == ["layer2+butterfly", "cloud_only"]
    assert cuts_for_run(["device_only", "dynamic"], "auto", "layer2", cat) == [
        "device_only", "cloud_only", "layer4", "layer2+butterfly"]
    assert strategy_problem("static:layer3+butterfly") is None  # the split check is the config's
    assert strategy_problem("static:features.4") is None  # any cut name; the catalogue check is model_check's
    assert "allowed:" in strategy_problem("static:layer 5")
    assert "allowed:" in strategy_problem("edge")


def test_prediction_by_hand():
    p = CutProfile("layer2+butterfly", device_ms=50.0, bytes_up=10_000, cloud_ms=20.0)
    link = LinkView(uplink_mbps=8.0, downlink_mbps=10.0, one_way_ms=20.0, queue_depth=2)
    pred = predict(p, link, 2.0, NO_RADIO, 1000.0, LATENCY)
    # 50 device + (80,000 bits / 8,000 bit/ms + 20) + 3 x 20 cloud + (1,600 / 10,000 + 20)
    assert pred.latency_ms == pytest.approx(50 + 30 + 60 + 20.16)
    assert pred.energy_mj is None and pred.cost == pred.latency_ms  # 5G-like: radio unknown
    local = predict(CutProfile("device_only", 120.0, 0, 0.0), link, 2.0, NO_RADIO, 1000.0, LATENCY)
    assert (local.latency_ms, local.energy_mj) == (120.0, 240.0)  # 2 W x 120 ms; the radio stays off


def test_energy_prediction_by_hand():
    radio = RadioModel(100.0, 50.0, 1000.0, tail=((500.0, 800.0),))
    p = CutProfile("cloud_only", device_ms=10.0, bytes_up=125_000, cloud_ms=30.0)  # 1 Mbit
    link = LinkView(uplink_mbps=10.0, downlink_mbps=10.0, one_way_ms=0.0)
    pred = predict(p, link, 1.0, radio, 200.0, Objective("energy"))
    up_ms, down_ms = 100.0, 200 * 8 / 1e4
    transfer = (100 * 10 + 1000) * up_ms / 1000 + (50 * 10 + 1000) * down_ms / 1000  # (alpha x Mbit/s + beta) x s
    tail = 800 * 30 / 1000 + 800 * 200 / 1000  # while the cloud works, then until the next request (200 ms)
    assert pred.energy_mj == pytest.approx(10.0 + transfer + tail)
    assert pred.cost == pred.energy_mj
    weighted = predict(p, link, 1.0, radio, 200.0, Objective("weighted", 0.5))
    assert weighted.cost == pytest.approx(weighted.latency_ms + 0.5 * pred.energy_mj)


def test_dynamic_choice_follows_bandwidth_and_queue():
    """JPEG: 1 ms encode, 16 KB, 80 ms cloud. Butterfly: 61 ms head, 1 KB, 40 ms cloud. Local: 300 ms.
    Each way 10 ms of delay; the 200-byte answer at 20 Mbit/s adds 0.08 ms."""
    profiles = [CutProfile("cloud_only", 1.0, 16_000, 80.0), CutProfile("layer2+butterfly", 61.0, 1_000, 40.0),
                CutProfile("device_only", 300.0, 0, 0.0)]

    def pick(mbps: float, queue: int = 0) -> tuple[str, float]:
        best, preds = choose(profiles, LinkView(mbps, 20.0, 10.0, queue), 1.0, NO_RADIO, 1000.0, LATENCY)
        assert best.cost == min(p.cost for p in preds)
        return best.cut, best.latency_ms

    # JPEG 1 + 128/m + 80 against butterfly 61 + 8/m + 40 (same delays): equal at m = 6 Mbit/s
    assert pick(50.0) == ("cloud_only", pytest.approx(1 + 2.56 + 10 + 80 + 10.08))
    assert pick(6.5)[0] == "cloud_only"
    assert pick(5.5)[0] == "layer2+butterfly"
    assert pick(0.05) == ("layer2+butterfly", pytest.approx(61 + 160 + 10 + 40 + 10.08))  # 281.08 < 300
    assert pick(0.04) == ("device_only", 300.0)  # butterfly 61 + 200 + 60.08 = 321.08
    # ten queued at the replica: 11 x 40 ms ahead of a butterfly frame, 11 x 80 ahead of a JPEG: stay local
    assert pick(5.0, queue=10) == ("device_only", 300.0)


def test_estimator_is_bytes_weighted_forgets_and_resets():
    est = LinkEstimator(LinkView(5.0, 10.0, 30.0), window=3, ttl_s=2.0)
    assert est.uplink_mbps(0.0) == 5.0 and est.one_way_ms == 30.0  # the prior before any answer
    est.observe(1.0, 100_000, 110.0, 20.0)
    est.observe(1.5, 1_000, 24.0, 25.0)
    assert est.one_way_ms == 22.5  # the median downlink time
    # (800,000 + 8,000) bits over (110 + 24 - 2 x 22.5) ms
    assert est.uplink_mbps(2.0) == pytest.approx(808_000 / 89 / 1e3)
    assert est.uplink_mbps(3.2) == pytest.approx(8_000 / 1.5 / 1e3)  # the first sample is older than 2 s
    assert est.uplink_mbps(10.0) == 5.0  # all forgotten: the configured link again
    for t in (4.0, 4.1, 4.2, 4.3):
        est.observe(t, 10_000, 30.0, 20.0)
    assert est.uplink_mbps(4.3) == pytest.approx(80_000 / 10 / 1e3)  # window 3: the last three
    est.observe(4.4, 10_000, 10.0, 20.0)  # jitter: faster than the delay estimate; the total stays positive
    assert est.uplink_mbps(4.4) == pytest.approx(240_000 / (10 + 10 - 10) / 1e3)  # -10 ms alone would be nonsense
    est.reset()
    assert est.uplink_mbps(4.3) == 5.0 and est.one_way_ms == 30.0


def test_cloud_times_start_from_calibration_then_follow_answers():
    times = CloudTimes({"cloud_only": 100.0, "layer4": 2.0}, weight=0.5)
    assert times.get("cloud_only") == 100.0 and times.get("layer2") == 0.0
    times.observe("cloud_only", 200.0)
    times.observe("cloud_only", 100.0)
    assert times.get("cloud_only") == 150.0 and times.get("layer4") == 2.0  # 200, then halfway to 100
    times.reset()
    assert times.get("cloud_only") == 100.0


def test_energy_objective_needs_known_radio(write_topology, minimal_yaml):
    path = write_topology(minimal_yaml)
    load_topology(path, ["strategies=[dynamic]", "policy.objective=energy"])  # LTE has coefficients
    with pytest.raises(ConfigError, match="policy.objective: objective energy needs radio coefficients; "
                                          "network 5g has none"):
        load_topology(path, ["strategies=[dynamic]", "policy.objective=energy", "devices.network=5g"])


# ---------------------------------------------------------------- end to end
SWITCH_PERIOD_MS = 20_000


def _switching_trace(path: Path) -> None:
    """Mahimahi: 10 s at 24 Mbit/s (two 1500-byte packets per ms), then 10 s at 0.12 Mbit/s (one per 100 ms)."""
    lines = []
    for ms in range(1, SWITCH_PERIOD_MS + 1):
        if ms <= SWITCH_PERIOD_MS // 2:
            lines += [ms, ms]
        elif ms % 100 == 0:
            lines.append(ms)
    path.write_text("\n".join(map(str, lines)) + "\n")


SWITCHING = """
name: switching
duration_s: 20
warmup_s: 0
request_timeout_s: 30
strategies: [cloud_only, "static:layer4", butterfly, device_only, best_static, dynamic]
devices:
  - name: phone
    count: 2
    device_class: slow
    network: lte
    link: {uplink_trace: switch.up, trace_offset_ms: 0, rtt_ms: 40}
    arrival: {process: periodic, rate_hz: 1, seed: 7}
device_classes:
  slow: {speed: 0.1, compute_power_w: 2.5}
model: {split: layer2, butterfly_channels: 8}
cloud: {max_batch_size: 4, max_batch_wait_ms: 2}
pools: {devices_per_pool: 5, compute: replay}
policy: {bandwidth_window: 2, estimate_ttl_s: 2}
"""


@pytest.mark.slow
def test_dynamic_beats_every_static_cut_on_a_switching_link(tmp_path):
    """Fast halves: the JPEG is cheapest; slow halves: the slow device's own work (butterfly head, or all of it)
    is. Each phase replays the trace from its start, so every policy meets the same link over time; dynamic must
    beat every static cut on mean latency."""
    _switching_trace(tmp_path / "switch.up")
    (tmp_path / "switching.yaml").write_text(SWITCHING)
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, str(ROOT / "run.py"), str(tmp_path / "switching.yaml"), "--out", str(out)],
                          capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    s = json.loads((out / "summary.json").read_text())
    st = s["strategies"]
    assert all(v["by_status"]["completed"] == v["requests"] > 0 for v in st.values()), st
    mean = {k: v["latency_ms"]["mean"] for k, v in st.items()}
    statics = ("cloud_only", "static:layer4", "butterfly", "device_only")
    assert all(mean["dynamic"] < mean[k] for k in statics), mean
    assert st["static:layer4"]["cuts"] == {"layer4": st["static:layer4"]["requests"]}  # the natural bottleneck
    with open(out / "requests.csv") as f:
        rows = [r for r in csv.DictReader(f) if r["strategy"] in ("dynamic", "best_static")]
    best = {}
    for r in (r for r in rows if r["strategy"] == "best_static"):
        best.setdefault(r["device_id"], set()).add(r["cut"])
    assert all(len(c) == 1 for c in best.values()), best  # one cut per device for the whole phase
    dyn = [r for r in rows if r["strategy"] == "dynamic"]
    def cuts_between(lo: float, hi: float) -> list[str]:
        return [r["cut"] for r in dyn if lo <= float(r["t_arrival_s"]) < hi]

    fast, slow = cuts_between(1.5, 10.0), cuts_between(12.0, 20.0)  # each after the first answers of its half
    assert fast.count("cloud_only") >= 0.7 * len(fast), fast
    assert slow.count("cloud_only") <= 0.3 * len(slow), slow
    assert all(not math.isnan(float(r["est_uplink_mbps"])) for r in dyn)
    assert "dynamic: cuts " in proc.stdout + proc.stderr  # the console says which cuts it used
    assert 'data-plot="cuts"' in (out / "report.html").read_text()


def test_cuts_plot_orders_cuts_as_the_catalogue():
    from testbed.report.policy_plot import _rank

    order = ("cloud_only", "features.2", "features.4", "features.6", "device_only")
    used = ["device_only", "features.6", "features.4+butterfly", "cloud_only", "features.2"]
    assert sorted(used, key=lambda c: _rank(c, order)) == [
        "cloud_only", "features.2", "features.4+butterfly", "features.6", "device_only"]
