"""Topology validation: every rule gives exit-2-style errors naming file, key path, value, allowed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from testbed.base.keypaths import parse_key_path
from testbed.config.errors import ConfigError
from testbed.config.loading import apply_override, load_topology

ROOT = Path(__file__).resolve().parent.parent


def problems(path, overrides=()):
    with pytest.raises(ConfigError) as e:
        load_topology(path, overrides)
    return str(e.value)


def test_minimal_topology_loads_with_profiles(write_topology, minimal_yaml):
    topo = load_topology(write_topology(minimal_yaml))
    assert topo.device_count == 2
    link = topo.link_for(topo.devices[0])
    assert link.uplink_mbps == 5.85 and link.rtt_ms == 70.0
    assert topo.networks["lte"].radio.beta_mw == 1288.04
    with pytest.raises(ValidationError, match="frozen"):
        topo.duration_s = 5


@pytest.mark.parametrize("path", sorted((ROOT / "topologies").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_topologies_are_valid(path):
    if "traces" in path.name and not (ROOT.parent / "shared" / "traces" / "mahimahi").is_dir():
        pytest.skip("the Mahimahi traces (shared/traces beside the checkout) are not here")
    assert load_topology(path).device_count >= 1


@pytest.mark.parametrize("override, key, says", [
    ("cloud.foo=1", "cloud.foo", "unknown key; allowed keys here: replicas, device"),
    ("devices.arrival.rate_hz=0", "devices[0].arrival.rate_hz", "greater than 0"),
    ("devices.arrival.process=burst", "devices[0].arrival.process", "'periodic' or 'poisson'"),
    ("devices.count=many", "devices[0].count", "valid integer"),
    ("model.split=cloud_only", "model.split", "allowed: a cut of the model's catalogue"),
    ("model.arch='no such model'", "model.arch", "allowed: a torchvision classification model"),
    ("model.codec.dtype=int4", "model.codec.dtype", "'float32', 'float16' or 'int8'"),
    ("model.codec.zstd_level=40", "model.codec.zstd_level", "less than or equal to 22"),
    ("cloud.max_batch_size=0", "cloud.max_batch_size", "greater than or equal to 1"),
    ("networks.lte.loss_pct=100", "networks.lte.loss_pct", "less than 100"),
    ("device_classes.phone.speed=2", "device_classes.phone.speed", "less than or equal to 1"),
    ("strategies=[]", "strategies", "at least 1 item"),
    ("strategies=[edge_only]", "strategies[0]", "allowed: cloud_only, butterfly, split, device_only, best_static"),
    ("throttling.backend=magic", "throttling.backend", "'userspace'"),
    ("duration_s=-3", "duration_s", "greater than 0"),
    ("strategies=[static:layer3+butterfly]", "strategies[0]", "the butterfly unit sits at model.split (layer2)"),
    ("policy.cuts=[cloud_only, layer4+butterfly]", "policy.cuts[1]", "sits at model.split"),
    ("policy.cuts=['layer 9']", "policy.cuts[0]", "allowed: cloud_only, device_only, a cut of the model's"),
    ("policy.cuts=[layer4, layer4]", "policy.cuts", "each cut may appear once"),
    ("policy.objective=speed", "policy.objective", "'latency', 'energy' or 'weighted'"),
])
def test_each_field_rule_names_path_value_and_allowed(write_topology, minimal_yaml, override, key, says):
    path = write_topology(minimal_yaml)
    msg = problems(path, [override])
    assert f"{path}: {key}: " in msg
    assert says in msg
    assert "(got " in msg


@pytest.mark.parametrize("override, key, says", [
    ("devices.network=6g", "devices[0].network", "unknown network; allowed: 3g, 5g, lte, wifi"),
    ("devices.device_class=toaster", "devices[0].device_class",
     "unknown device class; allowed: host, jetson_tx2, phone, raspberry_pi4"),
    ("strategies=[butterfly, butterfly]", "strategies", "each strategy may appear once"),
    ("model.butterfly_channels=512", "model.butterfly_channels", "must be below the 512 channels at split layer2"),
    ("model.weights=missing.pt", "model.weights", "no such file"),
    ("cloud.device=cuda", "cloud.num_gpus", "must be > 0 when cloud.device is cuda"),
])
def test_cross_field_rules(write_topology, minimal_yaml, override, key, says):
    path = write_topology(minimal_yaml)
    msg = problems(path, [override])
    assert f"{path}: {key}: {says}" in msg


def test_missing_required_key(write_topology):
    path = write_topology("name: t\nstrategies: [butterfly]\ndevices: {count: 1, device_class: phone, "
                          "network: lte, arrival: {rate_hz: 1}}\n")
    assert f"{path}: duration_s: required key is missing" in problems(path)


def test_every_problem_is_reported_at_once(write_topology, minimal_yaml):
    msg = problems(write_topology(minimal_yaml), ["cloud.replicas=0", "model.jpeg_quality=101"])
    assert "cloud.replicas" in msg and "model.jpeg_quality" in msg


def test_file_level_errors(tmp_path, write_topology):
    assert "cannot read the file" in problems(tmp_path / "nope.yaml")
    assert "not valid YAML" in problems(write_topology("name: [unclosed\n"))
    assert "must hold a mapping" in problems(write_topology("- a\n- b\n"))


def test_yaml_tags_are_refused(write_topology, minimal_yaml):
    """A topology is data, not code: no object-building tags."""
    path = write_topology(minimal_yaml + "description: !!python/object/apply:os.getcwd []\n")
    assert "not valid YAML" in problems(path)


def test_overrides_parse_values_and_paths(write_topology, minimal_yaml):
    topo = load_topology(write_topology(minimal_yaml), ["devices.count=7", "cloud.max_batch_wait_ms=2.5",
                                                        "networks.lte.uplink_mbps=3", "strategies=[cloud_only]"])
    assert topo.device_count == 7 and topo.cloud.max_batch_wait_ms == 2.5
    assert topo.link_for(topo.devices[0]).uplink_mbps == 3.0
    assert topo.strategies == ["cloud_only"]


def test_group_link_override_merges_over_profile(write_topology, minimal_yaml):
    topo = load_topology(write_topology(minimal_yaml), ["devices.link.rtt_ms=10"])
    link = topo.link_for(topo.devices[0])
    assert link.rtt_ms == 10 and link.uplink_mbps == 5.85


def test_override_errors():
    raw = {"devices": [{"count": 1}, {"count": 2}]}
    with pytest.raises(ValueError, match="several device groups"):
        apply_override(raw, "devices.count=3")
    with pytest.raises(ValueError, match="does not exist"):
        apply_override(raw, "devices[5].count=3")
    with pytest.raises(ValueError, match="expected key.path=value"):
        apply_override(raw, "devices")
    apply_override(raw, "devices[1].count=9")
    assert raw["devices"][1]["count"] == 9


def test_key_path_parsing():
    assert parse_key_path("devices[0].arrival.rate_hz") == ["devices", 0, "arrival", "rate_hz"]
    for bad in ("", "a..b", "a[x]", "a.", "a[0"):
        with pytest.raises(ValueError):
            parse_key_path(bad)


def test_relative_paths_resolve_against_the_topology_file(tmp_path, write_topology, minimal_yaml):
    (tmp_path / "imgs").mkdir()
    topo = load_topology(write_topology(minimal_yaml + "model: {image_dir: imgs}\n"))
    assert topo.model.image_dir == str((tmp_path / "imgs").resolve())


def test_cli_exits_2_before_ray_starts(write_topology, minimal_yaml):
    path = write_topology(minimal_yaml)
    proc = subprocess.run([sys.executable, str(ROOT / "run.py"), str(path), "--set", "devices.count=-1"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert f"{path}: devices[0].count: Input should be greater than or equal to 1 (got -1)" in proc.stderr
    assert "Ray" not in proc.stderr  # nothing was started


def test_traces_resolve_relative_to_the_topology_and_are_checked(tmp_path, write_topology, minimal_yaml):
    (tmp_path / "up.trace").write_text("0\n5\n10\n")
    (tmp_path / "bad.trace").write_text("5\n3\n")
    topo = load_topology(write_topology(minimal_yaml), ["devices.link.uplink_trace=up.trace"])
    link = topo.link_for(topo.devices[0])
    assert link.uplink_trace == str((tmp_path / "up.trace").resolve()) and link.trace_offset_ms == "random"
    msg = problems(write_topology(minimal_yaml), ["networks.lte.downlink_trace=bad.trace"])
    assert "networks.lte.downlink_trace: not a usable Mahimahi trace" in msg
    assert "line 2: timestamp 3 is smaller than the previous one (5)" in msg
    msg = problems(write_topology(minimal_yaml), ["devices.link.uplink_trace=nope.up"])
    assert "devices[0].link.uplink_trace: not a usable Mahimahi trace" in msg and "no such file" in msg


@pytest.mark.parametrize("extra, says", [
    ('"": 1\n', "['']: unknown key; allowed keys here: name,"),
    ("cloud: {a.b: 1}\n", "cloud['a.b']: unknown key; allowed keys here: replicas,"),
])
def test_keys_a_dotted_path_cannot_spell_are_quoted(write_topology, minimal_yaml, extra, says):
    path = write_topology(minimal_yaml + extra)
    assert f"{path}: {says}" in problems(path)


@pytest.mark.parametrize("override, key, says", [
    ('model.weights="w\\0.pt"', "model.weights", "not a usable path: embedded null byte"),
    (f"model.image_dir={'d' * 300}", "model.image_dir", "not a usable path: File name too long"),
    ('devices.link.uplink_trace="up\\0.trace"', "devices[0].link.uplink_trace",
     "not a usable Mahimahi trace: not a usable path: embedded null byte"),
])
def test_paths_the_os_refuses_are_problems_not_tracebacks(write_topology, minimal_yaml, override, key, says):
    path = write_topology(minimal_yaml)
    assert f"{path}: {key}: {says}" in problems(path, [override])




def test_a_faults_section_loads(write_topology, faults_yaml):
    topo = load_topology(write_topology(faults_yaml), ["faults[0].direction=uplink"])
    assert topo.faults[0].kind == "link_outage" and topo.faults[0].strategies is None


@pytest.mark.parametrize("override, key, says", [
    ("faults[0].kind=meteor", "faults[0].kind", "'link_outage', 'link_degrade', 'device_leave', 'replica_kill'"),
    ("faults[0].group=5g", "faults[0].group", "unknown device group; allowed: lte, wifi"),
    ("faults[0].at_s=-1", "faults[0].at_s", "greater than or equal to 0"),
    ("faults[0].at_s=10", "faults[0].at_s", "allowed: 0 <= at_s < warmup_s + duration_s = 10"),
    ("faults[0].when=3", "faults[0].when", "unknown key; allowed keys here: kind, name, at_s, duration_s"),
    ("faults[0]={kind: replica_kill, replica: 2, at_s: 1}", "faults[0].replica", "no such replica; allowed: 0..1"),
    ("faults[0]={kind: pool_kill, pool: 2, at_s: 1}", "faults[0].pool", "no such device pool; allowed: 0..1"),
    ("faults[0]={kind: pool_kill, pool: 0, at_s: 1, duration_s: 2}", "faults[0].duration_s", "no duration_s"),
    ("faults[0]={kind: pool_kill, group: lte, at_s: 1}", "faults[0]", "needs exactly one target; allowed: pool"),
    ("faults[0]={kind: device_leave, devices: [0, 5], at_s: 1, duration_s: 1}", "faults[0].devices[1]",
     "no such device; allowed: 0..4"),
    ("faults[0]={kind: link_outage, group: lte, at_s: 1}", "faults[0].duration_s", "link_outage needs a duration"),
    ("faults[0]={kind: link_degrade, group: lte, at_s: 1, duration_s: 1}", "faults[0].rate_factor",
     "link_degrade needs rate_factor"),
    ("faults[0].rate_factor=0.5", "faults[0].rate_factor", "allowed on link_degrade only"),
    ("faults[0].rate_factor=1.5", "faults[0].rate_factor", "less than 1"),
    ("faults[0].strategies=[split]", "faults[0].strategies[0]", "not a strategy of this topology; allowed: butterfly"),
])
def test_each_fault_rule_names_path_value_and_allowed(write_topology, faults_yaml, override, key, says):
    path = write_topology(faults_yaml)
    msg = problems(path, [override])
    assert f"{path}: {key}: " in msg, msg
    assert says in msg, msg


def test_a_bad_fault_exits_2_naming_file_and_key(write_topology, faults_yaml):
    path = write_topology(faults_yaml.replace("group: lte", "group: nope"))
    proc = subprocess.run([sys.executable, str(ROOT / "run.py"), str(path), "--validate"], capture_output=True,
                          text=True, timeout=60, cwd=ROOT)
    assert proc.returncode == 2
    assert f"{path}: faults[0].group: unknown device group; allowed: lte, wifi (got 'nope')" in proc.stderr


def test_a_group_link_override_has_every_link_field_with_the_same_bounds():
    from pydantic import ValidationError

    from testbed.config.schema import LinkOverride, LinkParams

    assert list(LinkOverride.model_fields) == list(LinkParams.model_fields)
    assert LinkOverride().model_dump(exclude_none=True) == {}
    with pytest.raises(ValidationError, match="greater than 0"):
        LinkOverride(uplink_mbps=0)
    with pytest.raises(ValidationError, match="less than 100"):
        LinkOverride(loss_pct=100)
