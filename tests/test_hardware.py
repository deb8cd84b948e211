"""Hardware profiles: the registry, its validation, and the replicas and devices that keep to them."""

from __future__ import annotations

import pytest

from testbed.config.errors import ConfigError
from testbed.config.loading import load_topology
from testbed.domain import hardware


def test_mac_shares_match_torchvision_resnet50():
    import torch
    import torchvision

    model = torchvision.models.resnet50().eval()
    macs: dict[str, int] = {}

    def hook(top):
        def count(mod, _, out):
            if isinstance(mod, torch.nn.Conv2d):
                n = out.numel() * mod.in_channels // mod.groups * mod.kernel_size[0] * mod.kernel_size[1]
            else:
                n = mod.in_features * mod.out_features
            macs[top] = macs.get(top, 0) + n
        return count

    for name, mod in model.named_modules():
        if isinstance(mod, (torch.nn.Conv2d, torch.nn.Linear)):
            top = name.split(".")[0]
            mod.register_forward_hook(hook(top if top.startswith("layer") or top == "fc" else "stem"))
    with torch.inference_mode():
        model(torch.zeros(1, 3, 224, 224))
    assert sum(macs.values()) == hardware.MACS_TOTAL
    running = macs["stem"]
    for cut in hardware.CUT_ORDER:
        running += macs[cut]
        assert hardware.MACS_SHARE["resnet50"][cut] == pytest.approx(running / hardware.MACS_TOTAL, abs=1e-4)


def test_every_builtin_profile_resolves_and_grows_with_the_cut_and_batch():
    for name in hardware.known("device"):
        d = hardware.resolve_device(name)
        times = [d.cut_ms(c) for c in hardware.CUT_ORDER]
        assert times == sorted(times) and times[-1] < d.full_model_ms and d.source
        assert d.cut_ms("layer2+butterfly") > d.cut_ms("layer2") and d.cut_ms("cloud_only") == 0
    for name in hardware.known("cloud"):
        c = hardware.resolve_cloud(name)
        assert c.tail_ms("cloud_only", 1) < c.tail_ms("cloud_only", 8) and c.source
        assert c.tail_ms("layer4", 1) < c.tail_ms("layer1", 1) < c.tail_ms("cloud_only", 1)


def test_interpolation_is_linear_between_points_and_per_item_beyond():
    pts = {1: 2.0, 9: 10.0}
    assert hardware.interpolate(pts, 1) == 2.0
    assert hardware.interpolate(pts, 5) == pytest.approx(6.0)
    assert hardware.interpolate(pts, 13) == pytest.approx(14.0)
    assert hardware.interpolate({4: 8.0}, 2) == pytest.approx(4.0)


def _problems(overrides, tmp_path=None):
    with pytest.raises(ConfigError) as e:
        load_topology("topologies/paper_resnet50.yaml", overrides)
    return str(e.value)


def test_unknown_profile_names_the_key_and_lists_the_known_ones():
    msg = _problems(["cloud.hardware=tpu9", "device_classes.jetson_tx2.hardware=tx3"])
    assert "cloud.hardware: unknown cloud hardware profile; known: a100, gtx_1080ti, h100, v100" in msg
    assert "device_classes.jetson_tx2.hardware: unknown device hardware profile; known: jetson_tx2" in msg


def test_bad_profile_files_are_named_by_key_path(tmp_path):
    dev = tmp_path / "board.yaml"
    dev.write_text("kind: device\nfull_model_ms: 20\ncompute_power_w: 5\n"
                   "head_ms: {layer1: 4, layer2: 3, layer3: -1}\n")
    cloud = tmp_path / "gpu.yaml"
    cloud.write_text("kind: cloud\nbatch_ms: {1: 5, 8: 4}\n")
    msg = _problems([f"device_classes.jetson_tx2.hardware={dev}", f"cloud.hardware={cloud}"])
    assert f"device_classes.jetson_tx2.hardware: {dev}: head_ms.layer3: Input should be greater than 0" in msg
    cloud_line = f"cloud.hardware: {cloud}: batch_ms.8: must be larger than batch_ms.1 (5 ms): a batch curve increases"
    assert cloud_line in msg
    dev.write_text("kind: device\nfull_model_ms: 20\ncompute_power_w: 5\nhead_ms: {layer1: 4, layer2: 5}\n")
    msg = _problems([f"device_classes.jetson_tx2.hardware={dev}"])
    assert "head_ms.layer3: missing cut" in msg and "head_ms.layer4: missing cut" in msg


def test_a_profile_for_another_input_size_is_an_error_not_a_fallback():
    msg = _problems(["device_classes.jetson_tx2.hardware=jetson_tx2", "model.input_size=112"])
    assert "device_classes.jetson_tx2.hardware: profile jetson_tx2 covers resnet50 at 224 px" in msg


def test_run_py_exits_2_on_a_bad_profile(capsys):
    from testbed.cli import main

    assert main(["topologies/paper_resnet50.yaml", "--validate", "--set", "cloud.hardware=k80"]) == 2
    assert "cloud.hardware: unknown cloud hardware profile" in capsys.readouterr().err


def test_mechanism_replays_a_device_faster_than_the_host_and_time_scales_a_slower_one():
    tx2, pi = hardware.resolve_device("jetson_tx2"), hardware.resolve_device("raspberry_pi4")
    host = {"layer2+butterfly": 40.0, "device_only": 90.0, "cloud_only": 0.0}
    fast = hardware.device_mechanism(tx2, host, ["cloud_only", "layer2+butterfly"])
    slow = hardware.device_mechanism(pi, host, ["cloud_only", "layer2+butterfly"])
    assert fast["mechanism"] == "replayed" and "faster than host" in fast["why"]
    assert slow["mechanism"] == "time-scaled" and "slower than host" in slow["why"]


def test_a_profile_barely_slower_than_the_host_is_replayed_so_load_cannot_make_it_overrun():
    phone = hardware.resolve_device("phone_cpu")
    cut = "layer2+butterfly"
    near = hardware.device_mechanism(phone, {cut: phone.cut_ms(cut) / 1.1}, [cut])
    far = hardware.device_mechanism(phone, {cut: phone.cut_ms(cut) / 1.5}, [cut])
    assert near["mechanism"] == "replayed" and far["mechanism"] == "time-scaled"


@pytest.mark.parametrize("ref", ["n" * 300 + ".yaml", "missing.yaml"])
def test_an_unreadable_profile_file_is_a_config_error(ref):
    msg = _problems([f"cloud.hardware={ref}"])
    assert "cloud.hardware: " in msg and "cannot read the profile file" in msg


def test_the_summary_warns_when_the_host_did_not_keep_up_with_a_profile():
    from testbed.report.hardware_report import hardware_summary

    topo = load_topology("topologies/paper_resnet50.yaml", ["ladder=[]", "cloud.hardware=gtx_1080ti",
                                                            "device_classes.jetson_tx2.hardware=jetson_tx2"])
    mech = hardware.device_mechanism(hardware.resolve_device("jetson_tx2"), {"layer2+butterfly": 40.0},
                                     ["layer2+butterfly"])
    pools = [{"device_mechanisms": {"jetson_tx2": mech}}]
    replicas = [{"replica": 0, "compute": "profile", "hardware": {"profile": "gtx_1080ti"}}]
    stats = [{"replica": 0, "overrun_batches": 3, "max_overrun_ms": 12.5, "host_kept_up": False,
              "computed_on_arrival": 1}]
    ok = {"group": "3g", "phase": "measure", "cut": "layer2+butterfly", "head_ms": 4.887, "emu_wait_ms": 0.0}
    late = {**ok, "head_ms": 9.0, "emu_wait_ms": 25.0}
    out = hardware_summary(topo, pools, replicas, stats, [ok, ok, late])
    assert out["device_classes"]["jetson_tx2"]["overrun_requests"] == 1
    assert out["device_classes"]["jetson_tx2"]["emu_wait_requests"] == 1
    assert out["replicas"]["replica0"]["host_kept_up"] is False
    text = " ".join(out["warnings"])
    assert "replica 0: 3 batches took longer" in text and "1 requests' head took longer" in text
    assert "waited over 10 ms" in text
    quiet = hardware_summary(topo, pools, replicas, [{**stats[0], "overrun_batches": 0, "host_kept_up": True}],
                             [ok, ok])
    assert quiet["warnings"] == []
