"""Device populations: seeded draws follow their distribution, a CSV population is reproduced row for
row, bad CSVs stop run.py with exit 2 naming file, line and column, and a real run records each device's
own values in summary.json and in every request row."""

from __future__ import annotations

import math
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import testbed.api as sb
from testbed.config.errors import ConfigError
from testbed.domain.population import Distribution, Population, draws
from testbed.plan.devices import device_table, device_values

ROOT = Path(__file__).resolve().parent.parent
SMOKE = ROOT / "topologies/smoke.yaml"


def _smoke(population: dict, count: int = 3) -> dict:
    raw = yaml.safe_load(SMOKE.read_text())
    raw["devices"][0].update(count=count, population=population)
    return raw


def test_lognormal_draws_follow_the_distribution_and_the_seed():
    pop = Population(seed=4, compute_ms=Distribution(dist="lognormal", median=150, sigma=0.4),
                     uplink_kbps=Distribution(dist="uniform", low=1000, high=9000))
    got = draws(pop, 4000, "g", 60.0)
    logs = [math.log(d.compute_ms) for d in got]
    assert math.exp(statistics.median(logs)) == pytest.approx(150, rel=0.03)
    assert statistics.stdev(logs) == pytest.approx(0.4, rel=0.05)
    ups = [d.uplink_kbps for d in got]
    assert min(ups) >= 1000 and max(ups) <= 9000 and statistics.mean(ups) == pytest.approx(5000, rel=0.03)
    assert all(d.downlink_kbps is None for d in got)  # left out: the network's rate stays
    assert draws(pop, 4000, "g", 60.0) == got
    assert draws(pop.model_copy(update={"seed": 5}), 10, "g", 60.0) != got[:10]


def test_drawn_values_reach_each_device_spec():
    topo = sb.load_topology(_smoke({"seed": 1, "uplink_kbps": {"dist": "lognormal", "median": 3000, "sigma": 1}}))
    specs = device_table(topo)
    ups = [s.link.uplink_mbps for s in specs[:3]]
    assert len(set(ups)) == 3 and ups != [topo.networks["lte"].uplink_mbps] * 3
    assert specs[3].link.uplink_mbps == topo.link_for(topo.devices[1]).uplink_mbps  # the other group unchanged


def test_a_csv_population_reproduces_its_rows_exactly(tmp_path):
    rows = [(0, 210.5, 1800.0, 12000.0), (1, 95.25, 640.0, 3000.0), (2, 400.0, 25000.0, 50000.0)]
    path = tmp_path / "pop.csv"
    path.write_text("device,compute_ms,uplink_kbps,downlink_kbps\n" + "".join(",".join(map(str, r)) + "\n"
                                                                          for r in rows))
    specs = device_table(sb.load_topology(_smoke({"csv": str(path)})))
    for spec, (_, compute, up, down) in zip(specs, rows, strict=False):
        assert device_values(spec) == {"device_full_model_ms": compute, "device_uplink_kbps": up,
                                       "device_downlink_kbps": down}


@pytest.mark.slow  # over 1.5 s here: out of the fast tier
@pytest.mark.parametrize(("text", "where"), [
    ("device,compute_ms,uplink_kbps\n0,100,1000\n", ":1: missing column(s) downlink_kbps"),
    ("device,compute_ms,uplink_kbps,downlink_kbps\n0,100,1000,2000\n1,100,-5,2000\n", ":3: column uplink_kbps"),
    ("device,compute_ms,uplink_kbps,downlink_kbps\n0,fast,1000,2000\n", ":2: column compute_ms: not a number"),
    ("device,compute_ms,uplink_kbps,downlink_kbps,offline_s\n0,100,1000,2000,2-5;4-8\n",
     ":2: column offline_s: '4-8': overlaps"),
    ("device,compute_ms,uplink_kbps,downlink_kbps,offline_s\n0,100,1000,2000,5-2\n", ":2: column offline_s: '5-2'"),
])
def test_a_bad_population_csv_exits_2_naming_file_line_and_column(tmp_path, text, where):
    csv_path = tmp_path / "pop.csv"
    csv_path.write_text(text)
    topo = tmp_path / "t.yaml"
    topo.write_text(yaml.safe_dump(_smoke({"csv": "pop.csv"}, count=1)))  # relative to the topology file
    proc = subprocess.run([sys.executable, str(ROOT / "run.py"), str(topo), "--validate"], capture_output=True,
                          text=True, timeout=60, cwd=ROOT)
    assert proc.returncode == 2
    assert f"devices[0].population.csv: {csv_path}{where}" in proc.stderr


def test_too_few_rows_and_bad_distributions_are_config_errors(tmp_path):
    path = tmp_path / "pop.csv"
    path.write_text("device,compute_ms,uplink_kbps,downlink_kbps\n0,100,1000,2000\n")
    with pytest.raises(ConfigError, match="1 device rows, the group has 3 devices"):
        sb.load_topology(_smoke({"csv": str(path)}))
    with pytest.raises(ConfigError, match=r"devices\[0\]\.population\.compute_ms.*lognormal needs median, sigma"):
        sb.load_topology(_smoke({"compute_ms": {"dist": "lognormal", "median": 100}}))
    with pytest.raises(ConfigError, match="either csv or distributions"):
        sb.load_topology(_smoke({"csv": str(path), "uplink_kbps": {"dist": "uniform", "low": 1, "high": 2}}))
    with pytest.raises(ConfigError, match="throttling.cpu"):
        sb.load_topology(_smoke({"uplink_kbps": {"dist": "uniform", "low": 1, "high": 2}}),
                         {"throttling.cpu": "cgroup"})


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_a_run_records_each_devices_own_values(tmp_path):
    pop = {"seed": 2, "compute_ms": {"dist": "lognormal", "median": 300, "sigma": 0.5},
           "uplink_kbps": {"dist": "lognormal", "median": 4000, "sigma": 0.7}}
    topo = sb.load_topology(_smoke(pop), {"duration_s": 4, "warmup_s": 0, "strategies": ["butterfly"],
                                          "devices[1].count": 1})
    res = sb.run(topo, out=tmp_path / "run")
    assert res.summary.status == "complete"
    listed = res.summary.raw["device_population"]["lte"]
    expected = [device_values(s) for s in device_table(topo)[:3]]
    assert [{k: v for k, v in d.items() if k not in ("device_id", "offline_s")} for d in listed] == expected
    req = res.requests
    for d in listed:
        mine = req[req.device_id == d["device_id"]]
        assert len(mine) > 0 and (mine.device_uplink_kbps == d["device_uplink_kbps"]).all()
        assert (mine.device_full_model_ms == d["device_full_model_ms"]).all()
    assert "population" in res.figures()
    assert "device population" in (tmp_path / "run" / "report.html").read_text()


def test_fedscale_capacity_converts_to_a_population_the_loader_reads(tmp_path, capsys):
    import pickle

    from testbed.domain.fedscale import main

    capacity = {432802: {"computation": 162.0, "communication": 5648.1}, 7: {"computation": 40.5,
                                                                             "communication": 900.0}}
    trace = tmp_path / "client_device_capacity"
    trace.write_bytes(pickle.dumps(capacity))
    out = tmp_path / "pop.csv"
    assert main([str(trace), str(out), "--compute-scale", "2"]) == 0
    assert "data-only unpickler" in capsys.readouterr().err  # it says that it unpickles
    specs = device_table(sb.load_topology(_smoke({"csv": str(out)}, count=2)))
    assert [device_values(s) for s in specs[:2]] == [
        {"device_full_model_ms": 324.0, "device_uplink_kbps": 5648.1, "device_downlink_kbps": 5648.1},  # "432802"
        {"device_full_model_ms": 81.0, "device_uplink_kbps": 900.0, "device_downlink_kbps": 900.0}]


def test_a_pickle_that_would_run_code_is_refused_not_run(tmp_path, capsys):
    import os
    import pickle

    from testbed.domain.fedscale import main

    marker = tmp_path / "ran"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    trace = tmp_path / "evil"
    trace.write_bytes(pickle.dumps({"1": Evil()}))
    assert main([str(trace), str(tmp_path / "pop.csv")]) == 2
    assert "refused to load" in capsys.readouterr().err and not marker.exists()


def test_offline_intervals_come_from_the_csv_and_remove_the_frames_inside_them(tmp_path):
    from testbed.plan.faults import planned_arrivals

    path = tmp_path / "pop.csv"
    path.write_text("device,compute_ms,uplink_kbps,downlink_kbps,offline_s\n"
                    "0,100,1000,2000,1-3;4.5-6\n1,100,1000,2000,\n2,100,1000,2000,0-7\n")
    topo = sb.load_topology(_smoke({"csv": str(path)}), {"devices[0].arrival.rate_hz": 4})
    specs = device_table(topo)
    assert [s.offline_s for s in specs[:3]] == [((1.0, 3.0), (4.5, 6.0)), (), ((0.0, 7.0),)]
    frames = planned_arrivals(topo, "butterfly", 0, [0, 1, 2])
    times = {d: [t for dd, t in frames if dd == d] for d in (0, 1, 2)}
    assert times[2] == []  # away for the whole phase (warm-up 1 s + 6 s)
    assert all(not (1 <= t < 3 or 4.5 <= t < 6) for t in times[0]) and len(times[0]) >= 10
    assert len(times[1]) > len(times[0])  # the same rate, always available


def _on_off(offline: tuple[tuple[float, float], ...], horizon_s: float) -> tuple[list[float], list[float]]:
    """A device that starts on: its complete on and off periods (the last one, cut at the horizon, left out)."""
    ons, offs, t = [], [], 0.0
    for a, b in offline:
        ons.append(a - t)
        if b < horizon_s:
            offs.append(b - a)
        t = b
    return ons, offs


def test_drawn_availability_follows_its_distributions_and_the_seed():
    from testbed.domain.population import Availability

    horizon_s = 3000.0
    av = Availability(on_s=Distribution(dist="lognormal", median=20, sigma=0.5),
                      off_s=Distribution(dist="uniform", low=5, high=15), start="on")
    got = draws(Population(seed=7, availability=av), 300, "g", horizon_s)
    ons, offs = [], []
    for d in got:
        on, off = _on_off(d.offline_s, horizon_s)
        ons += on
        offs += off
        assert all(a < b <= horizon_s for a, b in d.offline_s) and d.compute_ms is None  # the rest keeps the class's
    assert len(ons) > 20_000 and len(offs) > 20_000
    assert statistics.median(ons) == pytest.approx(20, rel=0.03)
    assert statistics.stdev(math.log(x) for x in ons) == pytest.approx(0.5, rel=0.05)
    assert statistics.median(offs) == pytest.approx(10, rel=0.03) and 5 <= min(offs) and max(offs) <= 15
    assert draws(Population(seed=7, availability=av), 300, "g", horizon_s) == got
    assert draws(Population(seed=8, availability=av), 3, "g", horizon_s) != got[:3]
    assert draws(Population(seed=7, availability=av), 3, "h", horizon_s) != got[:3]  # seeded per group
    longer = draws(Population(seed=7, availability=av), 3, "g", 2 * horizon_s)  # a longer phase extends the timeline
    assert [d.offline_s[:10] for d in longer] == [d.offline_s[:10] for d in got[:3]]
    off_first = draws(Population(seed=7, availability=av.model_copy(update={"start": "off"})), 50, "g", 100.0)
    assert all(d.offline_s[0][0] == 0.0 for d in off_first)
    rand = draws(Population(seed=7, availability=av.model_copy(update={"start": "random"})), 200, "g", 100.0)
    away_at_0 = sum(1 for d in rand if d.offline_s and d.offline_s[0][0] == 0.0)
    assert 20 < away_at_0 < 120  # not in step: some start away, most start on


def test_frames_fall_only_in_drawn_on_periods():
    from testbed.plan.faults import planned_arrivals

    pop = {"seed": 3, "availability": {"on_s": {"dist": "lognormal", "median": 1.5, "sigma": 0.3},
                                       "off_s": {"dist": "uniform", "low": 0.5, "high": 1.5}, "start": "random"}}
    topo = sb.load_topology(_smoke(pop), {"devices[0].arrival.rate_hz": 20})
    specs = device_table(topo)
    horizon_s = topo.warmup_s + topo.duration_s
    assert [s.offline_s for s in specs[:3]] == [d.offline_s for d in draws(topo.devices[0].population, 3, "lte",
                                                                          horizon_s)]
    frames = planned_arrivals(topo, "butterfly", 0, [0, 1, 2])
    for d in (0, 1, 2):
        times = [t for dd, t in frames if dd == d]
        away_s = sum(b - a for a, b in specs[d].offline_s)
        assert specs[d].offline_s and 0 < away_s < horizon_s
        assert all(not any(a <= t < b for a, b in specs[d].offline_s) for t in times)
        assert len(times) == pytest.approx(20 * (horizon_s - away_s), rel=0.35)  # the on periods keep their rate


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_a_run_generates_frames_only_in_drawn_on_periods(tmp_path):
    from testbed.plan.faults import planned_arrivals

    pop = {"seed": 5, "availability": {"on_s": {"dist": "lognormal", "median": 1.0, "sigma": 0.3},
                                       "off_s": {"dist": "uniform", "low": 0.5, "high": 1.0}, "start": "random"}}
    topo = sb.load_topology(_smoke(pop), {"duration_s": 4, "warmup_s": 0, "strategies": ["butterfly"],
                                          "devices[1].count": 1, "devices[0].arrival.rate_hz": 4})
    res = sb.run(topo, out=tmp_path / "run")
    assert res.summary.status == "complete"
    specs = device_table(topo)
    listed = res.summary.raw["device_population"]["lte"]
    assert [tuple(map(tuple, d["offline_s"])) for d in listed] == [s.offline_s for s in specs[:3]]
    req = res.requests
    for spec in specs[:3]:
        got = sorted(req[req.device_id == spec.device_id].t_arrival_s)
        assert spec.offline_s and all(not any(a <= t < b for a, b in spec.offline_s) for t in got)
        assert got == pytest.approx(sorted(t for _, t in planned_arrivals(topo, "butterfly", 0, [spec.device_id])),
                                    abs=1e-3)


def test_bad_availability_is_a_config_error(monkeypatch):
    import testbed.domain.population as population

    on = {"dist": "uniform", "low": 1, "high": 2}
    with pytest.raises(ConfigError, match=r"devices\[0\]\.population\.availability\.off_s"):
        sb.load_topology(_smoke({"availability": {"on_s": on}}))
    with pytest.raises(ConfigError, match=r"devices\[0\]\.population\.availability\.begin"):
        sb.load_topology(_smoke({"availability": {"on_s": on, "off_s": on, "begin": "on"}}))
    with pytest.raises(ConfigError, match=r"devices\[0\]\.population\.availability\.start"):
        sb.load_topology(_smoke({"availability": {"on_s": on, "off_s": on, "start": "sometimes"}}))
    with pytest.raises(ConfigError, match=r"availability\.on_s\.high.*a week"):
        sb.load_topology(_smoke({"availability": {"on_s": {"dist": "uniform", "low": 1, "high": 1e9},
                                                  "off_s": on}}))
    with pytest.raises(ConfigError, match="either csv or distributions"):
        sb.load_topology(_smoke({"csv": "pop.csv", "availability": {"on_s": on, "off_s": on}}))
    monkeypatch.setattr(population, "MAX_AVAILABILITY_PERIODS", 1_000)
    with pytest.raises(ConfigError, match=r"devices\[0\]\.population\.availability: more than 1000 on/off periods"):
        fast = {"dist": "uniform", "low": 0.001, "high": 0.002}
        sb.load_topology(_smoke({"availability": {"on_s": fast, "off_s": fast}}))


CAPACITY = {5: {"computation": 100.0, "communication": 2000.0}, 9: {"computation": 50.0, "communication": 800.0}}
BEHAVIOUR = {9: {"duration": 50, "active": [10, 50], "inactive": [30, 80], "finish_time": 100, "model": "X1"},
             5: {"duration": 40, "active": [0, 40], "inactive": [20, 60], "finish_time": 60, "model": "Y2"}}


def _fedscale(tmp_path: Path, behaviour: dict, form: str, *args: str) -> tuple[int, Path]:
    import json
    import pickle

    from testbed.domain.fedscale import main

    cap = tmp_path / "client_device_capacity"
    cap.write_bytes(pickle.dumps(CAPACITY))
    beh = tmp_path / ("behave.json" if form == "json" else "client_behave_trace")
    beh.write_bytes(json.dumps(behaviour).encode() if form == "json" else pickle.dumps(behaviour))
    out = tmp_path / "pop.csv"
    return main([str(cap), str(out), "--behaviour", str(beh), *args]), out


@pytest.mark.parametrize("form", ["pickle", "json"])
def test_fedscale_behaviour_converts_to_the_exact_offline_intervals(tmp_path, capsys, form):
    rc, out = _fedscale(tmp_path, BEHAVIOUR, form, "--behaviour-scale", "0.1", "--horizon-s", "25")
    assert rc == 0
    err = capsys.readouterr().err
    assert ("behave.json" not in err) if form == "json" else "unpickling" in err and "client_behave_trace" in err
    specs = device_table(sb.load_topology(_smoke({"csv": str(out)}, count=2)))
    # client 5 (period 6 s after scaling): away 20-40 of 60; client 9 (period 10 s): away 0-10, 30-50, 80-100 of
    # 100; repeated to 25 s, a period's last gap joining the next one's first
    assert specs[0].offline_s == ((2.0, 4.0), (8.0, 10.0), (14.0, 16.0), (20.0, 22.0))
    assert specs[1].offline_s == ((0.0, 1.0), (3.0, 5.0), (8.0, 11.0), (13.0, 15.0), (18.0, 21.0), (23.0, 25.0))
    assert "2-4;8-10;14-16;20-22" in out.read_text()


def test_fedscale_behaviour_one_period_and_position_join(tmp_path):
    rc, out = _fedscale(tmp_path, BEHAVIOUR, "pickle", "--behaviour-join", "position")
    assert rc == 0
    specs = device_table(sb.load_topology(_smoke({"csv": str(out)}, count=2)))
    # by position, as FedScale pairs them: capacity client 5 takes the first trace (client 9), 9 the second (5)
    assert specs[0].offline_s == ((0.0, 10.0), (30.0, 50.0), (80.0, 100.0))
    assert specs[1].offline_s == ((20.0, 40.0),)


@pytest.mark.parametrize(("change", "message"), [
    ({"inactive": [5, 80]}, "client 9: active period 0 is reversed (10 to 5)"),
    ({"active": [10, 25]}, "client 9: active period 1 (25 to 80) overlaps or precedes the one before (10 to 30)"),
    ({"finish_time": 70}, "client 9: finish_time 70 is before the last active period ends (80)"),
    ({"inactive": [30]}, "client 9: 2 active and 1 inactive times"),
    ({"active": [10, "later"]}, "client 9: needs 'active' and 'inactive' lists and 'finish_time'"),
])
def test_bad_behaviour_traces_are_reported_with_the_client_id(tmp_path, capsys, change, message):
    bad = {**BEHAVIOUR, 9: {**BEHAVIOUR[9], **change}}
    rc, _ = _fedscale(tmp_path, bad, "json")
    assert rc == 2 and message in capsys.readouterr().err


def test_a_behaviour_trace_that_misses_clients_or_would_run_code_is_refused(tmp_path, capsys):
    import os

    rc, _ = _fedscale(tmp_path, {9: BEHAVIOUR[9]}, "pickle")
    assert rc == 2 and "1 of 2 clients have no behaviour trace (first: 5)" in capsys.readouterr().err
    marker = tmp_path / "ran"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    rc, _ = _fedscale(tmp_path, {5: Evil()}, "pickle")
    assert rc == 2 and "refused to load" in capsys.readouterr().err and not marker.exists()
