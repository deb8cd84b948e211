"""The assumption ladder: rungs as cumulative overrides, validated up front, and its table from run summaries."""

from __future__ import annotations

import json

import pytest

from testbed.base import codec
from testbed.config.errors import ConfigError
from testbed.config.loading import load_topology
from testbed.config.variants import load_rungs
from testbed.report import ladder

PAPER = "topologies/paper_resnet50.yaml"


def test_rungs_accumulate_and_unset_brings_the_topologys_value_back():
    rungs = dict(load_rungs(PAPER, []))
    a, b, c, d = rungs["a_papers"], rungs["b_jpeg"], rungs["c_rtt"], rungs["d_rrc"]
    assert (a.model.cloud_only_upload, b.model.cloud_only_upload) == ("raw", "jpeg")
    assert a.networks["3g"].rtt_ms == b.networks["3g"].rtt_ms == 0 and c.networks["3g"].rtt_ms == 100
    assert c.networks["lte"].radio.tail == [] and d.networks["lte"].radio.promotion_ms == 260.1  # huang2012
    assert (a.throttling.rrc, c.throttling.rrc, d.throttling.rrc) == ("off", "off", "on")
    assert rungs["e_phone"].device_classes["jetson_tx2"].hardware == "phone_cpu"
    assert rungs["e_phone"].cloud.hardware == "gtx_1080ti" and rungs["f_host_cloud"].cloud.hardware is None
    assert all(t.ladder == [] for t in rungs.values())


def test_a_bad_rung_is_named_before_anything_runs(tmp_path):
    text = open(PAPER).read().replace("set: [model.cloud_only_upload=jpeg]", "set: [model.cloud_only_upload=gif]")
    bad = tmp_path / "p.yaml"
    bad.write_text(text)
    with pytest.raises(ConfigError) as e:
        load_rungs(str(bad), [])
    assert "model.cloud_only_upload" in str(e.value) and "[ladder[1] b_jpeg]" in str(e.value)
    with pytest.raises(ConfigError, match="no such rung; allowed: a_papers, b_jpeg"):
        load_rungs(PAPER, [], ["z"])


def _stats(latency, energy, kb, uplink, head, cloud):
    return {"by_status": {"completed": 5}, "latency_ms": {"mean": latency}, "energy_mj_mean": energy,
            "bytes_up_mean": kb * 1000, "breakdown_ms_mean": {"uplink_ms": uplink, "head_ms": head, "cloud_ms": cloud}}


def test_rows_give_factors_and_parts_per_network(tmp_path):
    summary = {"groups": {"3g": {"cloud_only": _stats(1200, 2000, 150, 1100, 0, 7),
                                 "butterfly": _stats(40, 80, 3.7, 27, 5, 4)}}}
    rows = ladder.rows("a_papers", summary)
    assert rows[0]["latency_x"] == pytest.approx(30) and rows[0]["energy_x"] == pytest.approx(25)
    assert rows[0]["kb_up_cloud_only"] == 150 and rows[0]["head_butterfly_ms"] == 5
    assert ladder.averages(rows)["a_papers"]["latency_x"] == pytest.approx(30)
    topo = load_topology(PAPER)
    (tmp_path / "summary.json").write_text(json.dumps(ladder.summary(topo, rows, "complete")))
    from testbed.report.html_report import write_report

    page = write_report(tmp_path).read_text()
    assert 'data-plot="ladder"' in page and "a_papers" in page


@pytest.mark.parametrize("upload", codec.IMAGE_UPLOADS)
def test_cloud_only_uploads_round_trip(upload):
    import numpy as np

    rgb = np.random.default_rng(0).integers(0, 255, (32, 32, 3), dtype=np.uint8)
    data = codec.encode_image(rgb, upload, 90)
    back = codec.decode_image(data, upload, 32)
    assert back.shape == (32, 32, 3)
    if upload == "raw":
        assert len(data) == 32 * 32 * 3
    if upload in ("raw", "png"):
        assert (back == rgb).all()  # lossless
    with pytest.raises(ValueError, match="expected 16x16x3"):
        codec.decode_image(codec.encode_image(rgb, "raw"), "raw", 16)


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_rung_a_puts_butterfly_ahead_of_cloud_only_on_every_network(tmp_path):
    import subprocess
    import sys

    out = tmp_path / "ladder"
    proc = subprocess.run([sys.executable, "run.py", PAPER, "--rungs", "a_papers", "--out", str(out),
                           "--set", "duration_s=8", "--set", "warmup_s=2"],
                          capture_output=True, text=True, timeout=560)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "replayed" in proc.stderr and "PROFILE gtx_1080ti" in proc.stderr  # the mechanisms, first lines
    data = json.loads((out / "summary.json").read_text())
    assert data["kind"] == "ladder" and (out / "ladder.png").exists() and (out / "report.html").exists()
    rows = {r["network"]: r for r in data["rows"]}
    assert set(rows) == {"3g", "lte", "wifi"}
    for net, r in rows.items():
        assert r["latency_x"] > 1 and r["energy_x"] > 1, (net, r)
        assert r["kb_up_cloud_only"] == pytest.approx(224 * 224 * 3 / 1000, rel=0.01)  # raw pixels go up
    run = json.loads((out / "a_papers" / "summary.json").read_text())
    assert run["hardware"]["device_classes"]["jetson_tx2"]["mechanism"] == "replayed"
    assert run["hardware"]["replicas"]["replica0"]["mechanism"] == "profile"
    # the slower the uplink, the larger the gain (the papers' order)
    assert rows["3g"]["latency_x"] > rows["lte"]["latency_x"] > rows["wifi"]["latency_x"]


@pytest.mark.slow  # over 1.5 s here: out of the fast tier
def test_validate_checks_every_rung_and_exits_2_naming_the_rung(capsys):
    from testbed.cli import main

    assert main([PAPER, "--validate"]) == 0
    assert "ladder of 6 rungs, each valid" in capsys.readouterr().out
    assert main([PAPER, "--validate", "--set", "ladder[4].set=[device_classes.jetson_tx2.hardware=tx9]"]) == 2
    err = capsys.readouterr().err
    assert "device_classes.jetson_tx2.hardware: unknown device hardware profile" in err and "[ladder[4] e_phone]" in err
