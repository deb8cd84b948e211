"""The fault schedule (pure): windows per phase, who is hit, the frames that exist, and how they are counted."""

from __future__ import annotations

from testbed.config.loading import load_topology
from testbed.plan import faults
from testbed.plan.devices import arrivals
from testbed.results.metrics import new_record

FAULTS = """[
  {kind: link_outage, group: wifi, at_s: 1, duration_s: 2, direction: uplink},
  {kind: link_degrade, devices: [0], at_s: 4, duration_s: 20, rate_factor: 0.5},
  {kind: device_leave, devices: [1], at_s: 3, duration_s: 4},
  {kind: replica_kill, replica: 1, at_s: 5, strategies: [cloud_only]},
  {kind: pool_kill, pool: 1, at_s: 6, strategies: [butterfly]}]"""


def _topo(write_topology, faults_yaml):
    return load_topology(write_topology(faults_yaml), ["warmup_s=2", "devices[0].arrival.rate_hz=2",
                                                      "devices[1].arrival.rate_hz=2", f"faults={FAULTS}"])


def test_windows_per_phase_with_targets_and_clipped_ends(write_topology, faults_yaml):
    topo = _topo(write_topology, faults_yaml)
    butterfly = {w.kind: w for w in faults.windows(topo, "butterfly")}
    assert set(butterfly) == {"link_outage", "link_degrade", "device_leave", "pool_kill"}
    assert butterfly["link_outage"].devices == {3, 4} and butterfly["link_outage"].target == "group wifi"
    assert butterfly["link_degrade"].end_s == 12  # clipped to warm-up + duration
    assert butterfly["pool_kill"].devices == {3, 4} and butterfly["pool_kill"].end_s == 12
    kill = next(w for w in faults.windows(topo, "cloud_only") if w.kind == "replica_kill")
    assert kill.devices is None and kill.hits(0, 5.0) and not kill.hits(0, 4.9)
    assert kill.to_dict() == {"name": "replica_kill@5s", "kind": "replica_kill", "start_s": 5, "end_s": 12,
                              "target": "replica 1"}


def test_link_windows_per_direction(write_topology, faults_yaml):
    topo = _topo(write_topology, faults_yaml)
    assert faults.link_windows(topo, "butterfly", 3, "uplink") == [(1, 3, 0.0)]
    assert faults.link_windows(topo, "butterfly", 3, "downlink") == []
    assert faults.link_windows(topo, "butterfly", 0, "downlink") == [(4, 12, 0.5)]
    assert faults.link_windows(topo, "butterfly", 2, "uplink") == []


def test_a_device_that_left_generates_no_frames_and_the_rest_are_planned(write_topology, faults_yaml):
    topo = _topo(write_topology, faults_yaml)
    planned = faults.planned_arrivals(topo, "butterfly", 0, range(5))
    every = [(d, t) for d in range(5) for t in _until(topo, d)]
    gone = [(d, t) for d, t in every if d == 1 and 3 <= t < 7]
    assert gone and sorted(planned) == sorted(set(every) - set(gone))


def _until(topo, d):
    out = []
    for t in arrivals(topo.devices[0 if d < 3 else 1].arrival, d, 0):
        if t >= 12:
            return out
        out.append(t)
    return out


def test_a_killed_pool_gets_a_failed_record_for_each_frame_it_never_reported(write_topology, faults_yaml):
    topo = _topo(write_topology, faults_yaml)
    planned = faults.planned_arrivals(topo, "butterfly", 0, [3, 4])
    reported = {(d, round(t, 4)) for d, t in planned if t < 5}
    lost = faults.lost_pool_records(topo, "butterfly", 0, 1, 6.0, reported)
    assert len(lost) + len(reported) == len(planned)
    assert all(r["status"] == "failed" and r["reason"].startswith("device pool 1 killed at 6.000 s") for r in lost)
    assert {r["reason"].split("(")[1] for r in lost} == {"in flight or not yet collected)", "arrived after it)"}


def test_summary_counts_each_window_per_strategy_and_a_no_fault_baseline(write_topology, faults_yaml):
    topo = _topo(write_topology, faults_yaml)

    def rec(strategy, device, t, status):
        return new_record(strategy=strategy, device_id=device, t_arrival_s=t, status=status)

    records = [rec("butterfly", 3, 1.5, "timed_out"), rec("butterfly", 3, 0.5, "completed"),
               rec("cloud_only", 0, 6.0, "failed"), rec("cloud_only", 3, 1.5, "completed")]
    wins, baseline = faults.summarize(topo, records)
    by_name = {w["name"]: w for w in wins}
    assert by_name["link_outage@1s"]["counts"]["butterfly"] == {"completed": 0, "failed": 0, "timed_out": 1}
    assert by_name["link_outage@1s"]["counts"]["cloud_only"]["completed"] == 1
    assert by_name["replica_kill@5s"]["strategies"] == ["cloud_only"]
    assert by_name["replica_kill@5s"]["counts"]["cloud_only"]["failed"] == 1
    assert by_name["link_degrade@4s"]["counts"]["cloud_only"]["failed"] == 1  # overlapping windows both count
    assert baseline == {"butterfly": {"completed": 1, "failed": 0, "timed_out": 0}}
