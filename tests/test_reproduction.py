"""The paper-form reproduction table and the split-point sweep: values, directions, files."""

from __future__ import annotations

import csv
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from testbed.report.reproduction import accuracy, explanations, paper_energy, rows

ROOT = Path(__file__).resolve().parent.parent


def _st(latency, energy, compute, transfer, up, done=5):
    return {"by_status": {"completed": done}, "latency_ms": {"mean": latency, "p50": latency},
            "energy_mj_mean": energy, "bytes_up_mean": up,
            "energy_breakdown_mj_mean": {"compute": compute, "transfer": transfer, "promotion": 0.0,
                                         "tail": energy - compute - transfer},
            "breakdown_ms_mean": {"head_ms": 70.0, "encode_ms": 1.0, "cloud_ms": 90.0}}


def _summary(groups):
    return {"groups": groups, "topology": {"devices": [{"name": "3g"}, {"name": "wifi"}],
                                           "model": {"jpeg_quality": 90}, "references": []},
            "strategies": groups["3g"], "backends": {"cpu": "time-scaled", "cloud_device": ["cpu (cpu)"]}}


def test_factors_are_cloud_only_over_strategy_in_topology_order():
    s = _summary({"wifi": {"cloud_only": _st(200, 300, 2, 50, 16000), "butterfly": _st(100, 100, 40, 10, 4000)},
                  "3g": {"cloud_only": _st(400, 600, 2, 300, 16000), "butterfly": _st(100, 200, 40, 60, 4000)}})
    out = rows(s)
    assert [(r["group"], r["strategy"]) for r in out] == [("3g", "cloud_only"), ("3g", "butterfly"),
                                                          ("wifi", "cloud_only"), ("wifi", "butterfly")]
    b3g = out[1]
    assert b3g["latency_x"] == 4.0 and b3g["energy_x"] == 3.0
    assert b3g["energy_paper_x"] == pytest.approx((2 + 300) / (40 + 60))  # compute + transfer only
    assert math.isnan(out[0]["latency_x"])  # the baseline has no factor over itself


def test_papers_energy_model_needs_both_parts():
    assert paper_energy(_st(1, 10, 3, 4, 1)) == 7
    st = _st(1, 10, 3, 4, 1)
    st["energy_breakdown_mj_mean"]["transfer"] = math.nan  # radio unknown (e.g. 5g)
    assert math.isnan(paper_energy(st))


def test_explanations_quote_this_runs_numbers():
    s = _summary({"3g": {"cloud_only": _st(400, 600, 2, 300, 16000), "butterfly": _st(100, 200, 40, 60, 4000)},
                  "wifi": {}})
    text = "\n".join(explanations(s))
    assert "70.0 ms" in text and "16.0 KB" in text and "4.0x less" in text
    assert "50%" in text  # tail 298 of radio 300 + 298 mJ: the promotion + tail share of cloud_only


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_paper_topology_reproduces_the_directions_of_every_comparison(tmp_path):
    out = tmp_path / "paper"
    proc = subprocess.run([sys.executable, "run.py", "topologies/paper_resnet50.yaml", "--out", str(out),
                           "--set", "duration_s=8", "--set", "warmup_s=2", "--set", "ladder=[]",
                           "--set", "cloud.hardware=gtx_1080ti"],
                          capture_output=True, text=True, timeout=560, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for text in ("per network", "published: butterfly unit (Eshratifar et al., ISQED 2019): latency x53.0, "
                 "energy x68.0", "BottleNet", "why different: radio tail"):
        assert text in proc.stdout
    summary = json.loads((out / "summary.json").read_text())
    table = {(r["group"], r["strategy"]): r for r in rows(summary)}
    for net in ("3g", "lte", "wifi"):
        bfly, cloud, local = table[(net, "butterfly")], table[(net, "cloud_only")], table[(net, "device_only")]
        assert bfly["bytes_up"] < cloud["bytes_up"] / 3  # 8 int8 channels at layer2 vs a JPEG
        groups = summary["groups"][net]
        assert (groups["butterfly"]["energy_breakdown_mj_mean"]["transfer"]
                < groups["cloud_only"]["energy_breakdown_mj_mean"]["transfer"])
        assert groups["device_only"]["energy_breakdown_mj_mean"]["transfer"] == 0.0
        assert local["energy_mj"] == pytest.approx(groups["device_only"]["energy_breakdown_mj_mean"]["compute"])
    # the slower the uplink, the more the split gains over cloud_only (the papers' central claim). The cloud is
    # the papers' GPU as a profile (labelled PROFILE in the output): on this host's CPU a full ResNet-50 took
    # 160-250 ms plus 50-90 ms of queueing behind the other devices, noise that swamped the link's gap once in
    # CI (3G's cloud_only p50 425 against WiFi's 334 ms). The link alone puts 3G's cloud_only about 190 ms
    # behind WiFi's (a 15.7 KB JPEG at 1.1 against 18.9 Mbit/s, and 100 against 20 ms of RTT)
    p50 = {net: summary["groups"][net]["cloud_only"]["latency_ms"]["p50"] for net in ("3g", "wifi")}
    assert p50["3g"] > p50["wifi"] + 100
    assert table[("3g", "butterfly")]["latency_x"] > table[("wifi", "butterfly")]["latency_x"]
    assert table[("3g", "butterfly")]["energy_paper_x"] > table[("wifi", "butterfly")]["energy_paper_x"]


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_split_point_sweep_measures_each_cut_with_and_without_the_butterfly(tmp_path):
    out = tmp_path / "cuts"
    proc = subprocess.run([sys.executable, "run.py", "topologies/smoke.yaml", "--out", str(out),
                           "--sweep", "model.split=layer3,layer4", "--set", "strategies=[butterfly,split]",
                           "--set", "duration_s=4", "--set", "warmup_s=1"],
                          capture_output=True, text=True, timeout=560, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "split-point sweep:" in proc.stdout
    with (out / "splits.csv").open() as f:
        got = {(r["cut"], r["network"], r["strategy"]): r for r in csv.DictReader(f)}
    assert {k[0] for k in got} == {"layer3", "layer4"} and {k[1] for k in got} == {"lte", "wifi"}
    for cut in ("layer3", "layer4"):
        for net in ("lte", "wifi"):
            # without the butterfly unit the whole feature map goes up: many times the bytes
            assert float(got[(cut, net, "split")]["bytes_up_mean"]) > 5 * float(
                got[(cut, net, "butterfly")]["bytes_up_mean"])
    assert (out / "splits.png").stat().st_size > 10_000


def test_accuracy_column_weights_each_cut_by_how_often_the_policy_used_it():
    by_cut = {"cloud_only": 0.97, "device_only": 0.98, "layer2+butterfly": 0.95}
    dynamic = dict(_st(100, 100, 40, 10, 4000), cuts={"cloud_only": 3, "layer2+butterfly": 1})
    assert accuracy(dynamic, by_cut) == pytest.approx((3 * 0.97 + 0.95) / 4)
    assert math.isnan(accuracy(dict(dynamic, cuts={"layer4": 4}), by_cut))  # not measured by training
    assert math.isnan(accuracy(dynamic, None))  # random weights: no trained accuracy
    s = dict(_summary({"3g": {"cloud_only": dict(_st(400, 600, 2, 300, 16000), cuts={"cloud_only": 5}),
                              "dynamic": dynamic}}), accuracy_by_cut=by_cut)
    assert [r["accuracy"] for r in rows(s)] == pytest.approx([0.97, 0.965])
