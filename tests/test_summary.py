"""summary.json from one pure function: synthetic records, load rows and facts give known values."""

from __future__ import annotations

import json

from testbed.config.loading import load_topology
from testbed.results.metrics import new_record
from testbed.run.summary import RunFacts, build_summary, busy_by_strategy

HOST = {"cpu": "test"}


def _records() -> list[dict]:
    out = []
    for i, e2e in enumerate([100.0, 200.0, 300.0, 400.0]):
        out.append(new_record(strategy="butterfly", phase="measure", device_id=i % 2, group="g", request_id=i,
                              t_arrival_s=3.0 + i, status="completed", e2e_ms=e2e, energy_mj=10.0 * (i + 1),
                              bytes_up=1000, uplink_ms=55.0, uplink_ideal_ms=50.0, cut="conv2"))
    out.append(new_record(strategy="butterfly", phase="warmup", device_id=0, group="g", request_id=9,
                          t_arrival_s=0.5, status="completed", e2e_ms=9999.0))
    out.append(new_record(strategy="butterfly", phase="measure", device_id=1, group="g", request_id=10,
                          t_arrival_s=4.0, status="timed_out", reason="no answer"))
    return out


def _facts(write_topology, minimal_yaml) -> RunFacts:
    topo = load_topology(write_topology(minimal_yaml), ["duration_s=4", "devices.name=g"])
    facts = RunFacts(topo, "topo.yaml", started_at="2026-01-01T00:00:00+00:00")
    facts.current_strategy = "butterfly"
    facts.replica_stats = [{"replica": 0, "busy_s": 5.0}]
    return facts


def test_a_finished_strategy_gives_known_statistics(write_topology, minimal_yaml):
    facts = _facts(write_topology, minimal_yaml)
    facts.strategies_done.append("butterfly")
    facts.status = "complete"
    load = [{"strategy": "butterfly", "busy_fraction": 0.2}, {"strategy": "butterfly", "busy_fraction": 0.4}]
    s = build_summary(facts, _records(), load, wall_s=10.0, host=HOST)
    st = s["strategies"]["butterfly"]
    assert st["requests"] == 5 and st["by_status"] == {"completed": 4, "failed": 0, "timed_out": 1}
    assert st["latency_ms"]["p50"] == 250.0 and st["latency_ms"]["max"] == 400.0  # the warm-up row is left out
    assert st["throughput_rps"] == 1.0 and st["energy_mj_mean"] == 25.0 and st["cuts"] == {"conv2": 4}
    assert s["groups"]["g"]["butterfly"]["requests"] == 5
    assert abs(s["server_busy_by_strategy"]["butterfly"] - 0.3) < 1e-12
    assert s["replicas"] == [{"replica": 0, "busy_s": 5.0, "busy_fraction_of_run": 0.5}]
    assert s["fidelity"]["uplink_vs_configured_pct"]["p50"] == 10.0
    assert (s["status"], s["partial"], s["wall_s"], s["host"]) == ("complete", False, 10.0, HOST)
    assert s["phases_done"] == ["butterfly"] and s["faults"] == []


def test_the_same_inputs_give_the_same_summary_and_keep_summary_json_keys(write_topology, minimal_yaml):
    facts = _facts(write_topology, minimal_yaml)
    a = build_summary(facts, _records(), [], wall_s=3.0, host=HOST)
    b = build_summary(facts, _records(), [], wall_s=3.0, host=HOST)
    assert json.dumps(a, sort_keys=False) == json.dumps(b, sort_keys=False)
    assert list(a)[:6] == ["splitbed_version", "status", "partial", "error", "started_at", "wall_s"]
    assert a["partial"] is True and a["strategies"]["butterfly"]["requests"] == 5  # the strategy under way counts
    assert a["server_busy_by_strategy"] == {} and a["phases_done"] == []


def test_busy_by_strategy_is_derived_from_the_load_rows_in_order():
    rows = [{"strategy": "b", "busy_fraction": 1.0}, {"strategy": "a", "busy_fraction": 0.0},
            {"strategy": "b", "busy_fraction": 0.5}]
    assert busy_by_strategy(rows) == {"b": 0.75, "a": 0.0}
