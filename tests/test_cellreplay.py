"""Workload-aware replay (throttling.cellreplay): delay traces, CellReplay's light/heavy switch, the converter."""

from __future__ import annotations

import pytest

from testbed.config.errors import ConfigError
from testbed.config.loading import load_topology
from testbed.plan.devices import replay_line, replay_summary
from throttling.cellreplay import CellReplaySerializer, DelayTrace, LightTrace, convert, main
from throttling.shaper import LinkDirection, LinkShaper
from throttling.trace import MahimahiTrace, TraceError, TraceSerializer

LIGHT = "0 30 0 10 40\n1000 50 0 10 40\n2000 30 0 10 40\n"  # base 30 -> 50 -> 30 ms; light PDOs at 0, 10, 40 ms
HEAVY = "".join(f"{ms}\n" for ms in range(1, 2001))  # an opportunity every ms


@pytest.fixture
def files(tmp_path):
    def write(name, text):
        path = tmp_path / name
        path.write_text(text)
        return str(path)
    return write


def test_delay_trace_interpolates_and_loops(files):
    trace = DelayTrace.load(files("d.txt", "0 20\n100 60\n200 20\n"))
    assert trace.delay_ms(0) == 20 and trace.delay_ms(50) == pytest.approx(40) and trace.delay_ms(100) == 60
    assert trace.delay_ms(250) == pytest.approx(40)  # period 200 ms


def test_delay_trace_replay_follows_the_trace(files):
    spec = LinkDirection(rate_mbps=1000.0, delay_ms=999.0, delay_trace_path=files("d.txt", "0 20\n100 60\n200 20\n"))
    shaper = LinkShaper(spec)
    t0 = shaper._t0
    for at_ms, delay_ms in ((0, 20), (50, 40), (100, 60), (150, 40), (250, 40)):
        plan = shaper.plan(100, t0 + at_ms / 1000)
        transfer_ms = 100 * 8 / (1000 * 1e3)  # 100 B at 1000 Mbit/s, in ms
        assert (plan.t_last - t0) * 1000 == pytest.approx(at_ms + transfer_ms + delay_ms, abs=1e-6)


@pytest.mark.parametrize("text, what", [
    ("0 20\n100 60\n50 20\n", "before the previous line"),
    ("0 20\n100 -5\n", "negative"),
    ("0 20\n", "at least 2 lines"),
    ("0 x\n1 2\n", "not numbers"),
])
def test_bad_delay_traces_are_refused(files, text, what):
    with pytest.raises(TraceError, match=what):
        DelayTrace.load(files(f"bad{abs(hash(text))}.txt", text))


def test_a_short_burst_gets_light_opportunities_then_the_heavy_trace(files):
    light, heavy = LightTrace.load(files("l", LIGHT)), MahimahiTrace.load(files("h", HEAVY))
    s = CellReplaySerializer(light, heavy, t0=0.0)
    # a 5-packet burst on a drained link at t=0: the first after the base delay (30 ms), the next two at their
    # light PDOs (10, 40 ms after the start, plus the base delay), then the heavy trace, in order
    out = [round(s.depart(1500, 0.0) * 1000, 6) for _ in range(5)]
    assert out == [30.0, 40.0, 70.0, 70.0, 70.0]
    mahimahi = TraceSerializer(heavy, 0.0)
    saturator = [round(mahimahi.depart(1500, 0.0) * 1000 + 30, 6) for _ in range(5)]
    assert saturator == [31.0, 32.0, 33.0, 34.0, 35.0]  # the saturator-recorded replay: optimistic for bursts
    # half a second later the link has drained: a new burst, with the base delay interpolated (30 -> 50 ms)
    assert s.depart(1500, 0.5) * 1000 == pytest.approx(500 + 40)


def test_shaper_replays_cellreplay_with_its_own_delay(files):
    spec = LinkDirection(rate_mbps=1.0, delay_ms=500.0, light_trace_path=files("l", LIGHT),
                         heavy_trace_path=files("h", HEAVY))
    shaper = LinkShaper(spec)
    plan = shaper.plan(3 * 1500, shaper._t0)
    assert [round((a - shaper._t0) * 1000, 6) for a in plan.arrivals] == [30.0, 40.0, 70.0]  # not rtt/2, not rate
    assert "cellreplay" in spec.replay and "saturator" in LinkDirection(1.0, 0.0, trace_path="x").replay


def test_convert_rebases_and_validates(files, tmp_path):
    src = files("up-delay-light-pdo", "5000 30 0 10\n6000 40 0 12\n7000 30 0 10\n")
    light, heavy = convert(src, files("up-pdo", HEAVY), str(tmp_path / "out"))
    assert light.read_text().splitlines()[0] == "0 30 0 10"
    assert LightTrace.load(str(light)).times_ms == (0.0, 1000.0, 2000.0)
    assert MahimahiTrace.load(str(heavy)).period_ms == 2000
    assert main([files("bad", "0 30\n"), str(heavy), str(tmp_path / "x")]) == 2  # too few lines: exit 2


def test_config_validates_workload_traces(files, write_topology, minimal_yaml):
    light, heavy = files("l", LIGHT), files("h", HEAVY)
    ok = load_topology(write_topology(minimal_yaml), [
        f"networks.lte.uplink_cellreplay={{light: {light}, heavy: {heavy}}}",
        f"networks.lte.downlink_delay_trace={files('d', '0 20' + chr(10) + '100 30' + chr(10))}"])
    group = replay_summary(ok)["group0"]
    assert group["uplink"]["capacity"].startswith("cellreplay") and group["downlink"]["delay"].startswith("trace")
    assert replay_line(ok).startswith("trace replay: cellreplay")
    for override, where in (
        (f"networks.lte.uplink_cellreplay={{light: {files('b', '0 1')}, heavy: {heavy}}}",
         "networks.lte.uplink_cellreplay.light"),
        (f"networks.lte.downlink_delay_trace={files('n', '0 5' + chr(10) + '10 -1' + chr(10))}",
         "networks.lte.downlink_delay_trace"),
        (f"networks.lte.uplink_cellreplay={{light: {light}, heavy: {heavy}}}", "networks.lte.uplink_trace"),
        (f"networks.lte.uplink_cellreplay={{light: {light}, heavy: {heavy}}}", "throttling.backend"),
    ):
        extra = {"networks.lte.uplink_trace": [f"networks.lte.uplink_trace={heavy}"],
                 "throttling.backend": ["throttling.backend=auto"]}.get(where, [])
        with pytest.raises(ConfigError) as e:
            load_topology(write_topology(minimal_yaml), [override, *extra])
        assert where in str(e.value)
