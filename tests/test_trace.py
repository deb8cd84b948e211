"""Mahimahi traces: parsing rules, capacity over looping windows, and replay fidelity of the serializers."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from throttling.trace import (
    MahimahiTrace,
    RateSerializer,
    TraceError,
    TraceSerializer,
    trace_offset_ms,
)

TRACES = Path("/work/shared/traces/mahimahi")
needs_traces = pytest.mark.skipif(not TRACES.is_dir(), reason=f"real traces not available ({TRACES} missing)")

# From /work/shared/traces/README.md: file -> (lines, period in ms, mean Mbit/s).
REAL = {
    "ATT-LTE-driving-2016.down": (45604, 120002, 4.560),
    "ATT-LTE-driving-2016.up": (19101, 120002, 1.910),
    "ATT-LTE-driving.down": (338895, 786112, 5.173),
    "ATT-LTE-driving.up": (70336, 1012472, 0.834),
    "TMobile-LTE-driving.down": (505078, 474609, 12.770),
    "TMobile-LTE-short.down": (194846, 139986, 16.703),
    "TMobile-LTE-short.up": (155381, 140000, 13.318),
    "TMobile-UMTS-driving.down": (156262, 928424, 2.020),
    "TMobile-UMTS-driving.up": (73197, 931233, 0.943),
    "Verizon-EVDO-driving.down": (46065, 1062016, 0.521),
    "Verizon-EVDO-driving.up": (74768, 1064718, 0.843),
}


@pytest.fixture
def write_trace(write_topology):
    """Writes a temp file (the conftest fixture does that for any text)."""
    return lambda text, name="t.up": write_topology(text, name)


def hand_count(ts: list[int], start_ms: float, end_ms: float, loops: int = 50) -> int:
    """Opportunities in [start_ms, end_ms) by brute force over explicit loops."""
    period = ts[-1]
    return sum(1 for n in range(loops) for t in ts if start_ms <= n * period + t < end_ms)


# --- parsing -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, message",
    [
        ("", "the trace is empty"),
        ("0\n0\n", "the last timestamp must be > 0"),
        ("1\n5\n\n9\n", "line 3: empty line"),
        ("1\n5\n  \n9\n", "line 3: empty line"),
        ("1\nabc\n9\n", "line 2: not a number: 'abc'"),
        ("1\n2.5\n9\n", "line 2: not a number: '2.5'"),
        ("1\n-3\n9\n", "line 2: not a number: '-3'"),
        ("1\n1_0\n19\n", "line 2: not a number: '1_0'"),
        ("1\n" * 16 + "52\n40\n60\n", "line 18: timestamp 40 is smaller than the previous one (52)"),
        ("1\n5\n9\n\n", "line 4: empty line"),
    ],
)
def test_bad_traces_are_rejected_naming_file_and_line(write_trace, text, message):
    path = write_trace(text)
    with pytest.raises(TraceError) as err:
        MahimahiTrace.load(path)
    assert str(err.value) == f"{path}: {message}"
    assert isinstance(err.value, ValueError)


def test_unreadable_trace_is_a_trace_error(tmp_path):
    missing = tmp_path / "nope.up"
    with pytest.raises(TraceError, match=f"^{missing}: cannot read"):
        MahimahiTrace.load(missing)
    binary = tmp_path / "bin.up"
    binary.write_bytes(b"1\n\xff\n")
    with pytest.raises(TraceError, match="not a text trace"):
        MahimahiTrace.load(binary)


def test_period_and_mean_rate_of_a_hand_made_trace(write_trace):
    trace = MahimahiTrace.load(write_trace("0\n0\n3\n7\n7\n10\n"))  # 6 opportunities per 10 ms
    assert trace.period_ms == 10
    assert trace.mean_mbps == pytest.approx(6 * 1500 * 8 / 10 / 1000)  # 7.2 Mbit/s
    assert list(trace.timestamps_ms) == [0, 0, 3, 7, 7, 10]
    assert MahimahiTrace.load(write_trace("0\n0\n3\n7\n7\n10\n")) is trace  # cached per path
    with pytest.raises(ValueError):
        trace.timestamps_ms[0] = 5  # read-only


@pytest.mark.parametrize(
    "start_ms, end_ms",
    [(0, 10), (0, 10.5), (0, 11), (3, 7), (3, 7.01), (10, 20), (9.5, 10.5), (7, 47), (2.5, 93.2), (0, 100),
     (13, 13), (20, 30), (-5, 4), (99.9, 257)],
)  # fmt: skip
def test_capacity_over_windows_spanning_loops_equals_a_hand_count(write_trace, start_ms, end_ms):
    ts = [0, 0, 3, 7, 7, 10]
    trace = MahimahiTrace.load(write_trace("\n".join(map(str, ts)) + "\n"))
    assert trace.capacity_bytes(start_ms, end_ms) == 1500 * hand_count(ts, start_ms, end_ms)


def test_capacity_of_a_trace_not_starting_at_zero(write_trace):
    ts = [4, 4, 4, 9, 12]
    trace = MahimahiTrace.load(write_trace("\n".join(map(str, ts))))  # no final newline
    for start, end in [(0, 4), (0, 4.001), (4, 12), (12, 16), (12, 16.5), (5, 61), (24, 24.5), (1, 120)]:
        assert trace.capacity_bytes(start, end) == 1500 * hand_count(ts, start, end), (start, end)
    assert trace.rate_mbps(0, 120) == pytest.approx(hand_count(ts, 0, 120) * 1500 * 8 / 120 / 1000)


def test_capacity_of_a_long_window_is_fast_and_exact(write_trace):
    trace = MahimahiTrace.load(write_trace("0\n0\n3\n7\n7\n10\n"))
    loops = 10**9
    assert trace.capacity_bytes(0, loops * 10) == 1500 * 6 * loops - 1500  # the last loop's line at 10 is outside
    assert trace.capacity_bytes(5, 5 + loops * 10) == 1500 * 6 * loops


@needs_traces
@pytest.mark.parametrize("name", sorted(REAL))
def test_every_real_trace_loads_with_the_documented_size(name):
    trace = MahimahiTrace.load(TRACES / name)
    lines, period_ms, mean_mbps = REAL[name]
    assert len(trace.timestamps_ms) == lines
    assert trace.period_ms == period_ms
    assert trace.mean_mbps == pytest.approx(mean_mbps, abs=0.0006)
    for start_ms in (0.5, 12_345.0, 7.3 * period_ms):  # any window of one period (after 0) holds each line once
        assert trace.capacity_bytes(start_ms, start_ms + period_ms) == 1500 * lines
    assert trace.rate_mbps(0, 10 * period_ms) == pytest.approx(trace.mean_mbps, rel=1e-3)


@needs_traces
def test_all_trace_files_in_the_folder_are_known():
    found = {p.name for p in TRACES.iterdir() if p.suffix in (".up", ".down")}
    assert found == set(REAL)


# --- serializers ---------------------------------------------------------------------------


def delivered_bytes(serializer: TraceSerializer, size: int, t_ready: float, t_end: float) -> int:
    """Feed a continuous backlog of `size`-byte packets, all ready at `t_ready`; bytes departed before t_end."""
    total = 0
    while serializer.depart(size, t_ready) < t_end:
        total += size
    return total


@needs_traces
@pytest.mark.parametrize("name", ["TMobile-LTE-short.up", "ATT-LTE-driving.up"])
@pytest.mark.parametrize("size", [1500, 200, 1000])
@pytest.mark.parametrize("offset", ["random", 137_123.0])  # the fixed one wraps around TMobile's 140 s period
def test_trace_replay_delivers_the_trace_capacity(name, size, offset):
    trace = MahimahiTrace.load(TRACES / name)
    offset_ms = trace_offset_ms(trace, offset, random.Random(7))
    window_s, t0 = 10.0, 5000.25
    got = delivered_bytes(TraceSerializer(trace, t0, offset_ms), size, t0, t0 + window_s)
    want = trace.capacity_bytes(offset_ms, offset_ms + window_s * 1000)
    assert want > 0
    assert got == pytest.approx(want, rel=0.05)
    assert abs(got - want) <= 1500  # exact up to one packet


def test_small_packets_share_an_opportunity(write_trace):
    trace = MahimahiTrace.load(write_trace("2\n2\n5\n10\n"))
    ser = TraceSerializer(trace, t0=100.0)
    times = [ser.depart(200, 100.0) for _ in range(16)]  # 7 fit in one 1500-byte opportunity, then 100 bytes left
    assert times[:7] == [pytest.approx(100.002)] * 7
    assert times[7] == pytest.approx(100.002)  # second opportunity at 2 ms carries all of packet 8 (7*200 = 1400)
    assert times[8:15] == [pytest.approx(100.002)] * 7  # 100 + 200*7 = 1500: the second one is full
    assert times[15] == pytest.approx(100.005)


def test_a_packet_spans_opportunities_and_returns_its_last_byte_time(write_trace):
    trace = MahimahiTrace.load(write_trace("1\n2\n3\n4\n"))
    ser = TraceSerializer(trace, t0=0.0)
    assert ser.depart(1000, 0.0) == pytest.approx(0.001)  # 500 bytes left in the 1 ms opportunity
    assert ser.depart(1000, 0.0) == pytest.approx(0.002)  # 500 at 1 ms, 500 at 2 ms
    assert ser.depart(4500, 0.0) == pytest.approx(0.005)  # 1000 at 2, 1500 at 3 and 4, 500 at the next loop's 1 ms
    assert ser.depart(1, 0.0) == pytest.approx(0.005)  # 1000 bytes were left at 4 + 1 ms


def test_a_packet_ready_after_a_gap_skips_the_wasted_opportunities(write_trace):
    trace = MahimahiTrace.load(write_trace("0\n10\n20\n30\n40\n"))  # period 40 ms
    ser = TraceSerializer(trace, t0=1.0)
    assert ser.depart(100, 1.0) == pytest.approx(1.000)  # 1400 bytes left at 0 ms
    assert ser.depart(100, 1.005) == pytest.approx(1.010)  # the rest of 0 ms is wasted: it was before t_ready
    assert ser.depart(100, 1.010) == pytest.approx(1.010)  # ready exactly at the partly used one: shares it
    assert ser.depart(100, 1.0105) == pytest.approx(1.020)
    # Far ahead, many loops later (O(1) skip): 1000 loops of 40 ms + 25 ms -> the opportunity at 30 ms.
    assert ser.depart(1500, 1.0 + 40.0 + 0.025) == pytest.approx(1.0 + 40.0 + 0.030)
    assert ser.depart(1500, 1.0) == pytest.approx(1.0 + 40.0 + 0.040)  # backlog: next opportunity, not the past
    assert ser.depart(1500, 1.0) == pytest.approx(1.0 + 40.0 + 0.040)  # loop 1000 ends at 40040, loop 1001 starts there


def test_a_departure_time_handed_back_as_ready_time_keeps_its_opportunity(write_trace):
    trace = MahimahiTrace.load(write_trace("3\n7\n"))
    t0 = 123456.789  # large monotonic values: float round-off must not waste the partly used opportunity
    ser = TraceSerializer(trace, t0, offset_ms=995.0)  # loop 142 starts at 994 ms: next opportunity at 997
    t = ser.depart(500, t0)
    assert t == pytest.approx(t0 + 0.002)
    assert ser.depart(500, t) == t


def test_offset_shifts_which_opportunities_come_first(write_trace):
    trace = MahimahiTrace.load(write_trace("0\n1\n1\n1\n8\n10\n"))
    at0 = TraceSerializer(trace, t0=50.0, offset_ms=0.0)
    assert [at0.depart(1500, 50.0) for _ in range(4)] == pytest.approx([50.0, 50.001, 50.001, 50.001])
    at5 = TraceSerializer(trace, t0=50.0, offset_ms=5.0)  # the 8 ms opportunity is 3 ms after t0
    assert [at5.depart(1500, 50.0) for _ in range(4)] == pytest.approx([50.003, 50.005, 50.005, 50.006])
    late = TraceSerializer(trace, t0=50.0, offset_ms=25.0)  # loops: 25 ms is 5 ms into loop 2
    assert [late.depart(1500, 50.0) for _ in range(2)] == pytest.approx([50.003, 50.005])
    early = TraceSerializer(trace, t0=50.0, offset_ms=8.0)  # packets ready before t0 wait for the link to start
    assert early.depart(1500, 49.0) == pytest.approx(50.0)


def test_rate_serializer_spaces_packets_by_size_over_rate_and_queues_back_to_back():
    ser = RateSerializer(12.0)  # 1500 bytes per ms
    assert ser.depart(1500, 2.0) == pytest.approx(2.001)
    assert ser.depart(1500, 2.0) == pytest.approx(2.002)  # queued behind the first
    assert ser.depart(750, 2.0) == pytest.approx(2.0025)
    assert ser.busy_until == pytest.approx(2.0025)
    assert ser.depart(1500, 3.0) == pytest.approx(3.001)  # idle link: starts at t_ready
    assert ser.depart(3, 3.0) == 3.001 + 3 * 8 / 12e6
    with pytest.raises(ValueError):
        RateSerializer(0.0)


def test_serializers_reject_bad_arguments(write_trace):
    trace = MahimahiTrace.load(write_trace("5\n"))
    with pytest.raises(ValueError):
        TraceSerializer(trace, 0.0, offset_ms=-1.0)
    with pytest.raises(ValueError):
        TraceSerializer(trace, 0.0).depart(0, 0.0)


def test_trace_offset_modes(write_trace):
    trace = MahimahiTrace.load(write_trace("0\n100\n"))
    rng = random.Random(1)
    offsets = [trace_offset_ms(trace, "random", rng) for _ in range(2000)]
    assert all(0 <= o < 100 for o in offsets)
    assert min(offsets) < 5 and max(offsets) > 95
    assert trace_offset_ms(trace, "random", random.Random(3)) == trace_offset_ms(trace, "random", random.Random(3))
    assert trace_offset_ms(trace, 42, rng) == 42.0
    assert trace_offset_ms(trace, 250.5, rng) == 50.5
    with pytest.raises(ValueError):
        trace_offset_ms(trace, "start", rng)
