"""testbed.api: topologies from files and dicts with the CLI's overrides and errors, results folders as
DataFrames row for row, typed summaries, report figures, comparisons; one real run on a local Ray."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import pandas as pd
import pytest
import yaml

import testbed.api as sb
from testbed.config.errors import ConfigError
from tests.results_factory import make_run

ROOT = Path(__file__).resolve().parent.parent
SMOKE = ROOT / "topologies/smoke.yaml"


def test_file_and_dict_load_to_the_same_topology_with_the_same_overrides():
    raw = yaml.safe_load(SMOKE.read_text())
    over = {"devices[0].count": 2, "strategies": ["butterfly", "cloud_only"], "model.split": "layer3"}
    a = sb.load_topology(SMOKE, over)
    b = sb.load_topology(raw, over)
    c = sb.load_topology(SMOKE, ["devices[0].count=2", "strategies=[butterfly, cloud_only]", "model.split=layer3"])
    assert a == b == c
    assert a.devices[0].count == 2 and a.strategies == ["butterfly", "cloud_only"] and a.model.split == "layer3"
    assert raw["devices"][0]["count"] == 3  # the caller's dict is not modified


def test_a_bad_override_raises_the_error_the_cli_prints(capsys):
    from testbed.cli import main

    with pytest.raises(ConfigError) as api_err:
        sb.load_topology(SMOKE, {"devices[0].arrival.rate_hz": -1})
    assert main([str(SMOKE), "--validate", "--set", "devices[0].arrival.rate_hz=-1"]) == 2
    assert str(api_err.value) in capsys.readouterr().err
    assert "devices[0].arrival.rate_hz" in str(api_err.value)
    with pytest.raises(ConfigError, match="unknown key"):
        sb.load_topology({"name": "x"} | yaml.safe_load(SMOKE.read_text()), {"cloud.foo": 1})


def test_results_frames_match_the_csvs_row_for_row(tmp_path):
    folder = make_run(tmp_path / "run", per_strategy=30)
    res = sb.open_results(folder)
    with (folder / "requests.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(res.requests.columns) == list(rows[0])
    assert len(res.requests) == len(rows) == 60
    for i in (0, 7, 59):
        for col in ("strategy", "status", "request_id", "e2e_ms", "bytes_up"):
            got, want = res.requests.iloc[i][col], rows[i][col]
            if want == "":
                assert pd.isna(got)
            elif isinstance(got, str):
                assert got == want
            else:
                assert math.isclose(float(got), float(want))
    with (folder / "server_load.csv").open(newline="") as f:
        assert len(res.server_load) == sum(1 for _ in csv.DictReader(f))


def test_summary_is_typed_and_strategies_frame_matches_it(tmp_path):
    res = sb.open_results(make_run(tmp_path / "run"))
    raw = res.summary.raw["strategies"]["butterfly"]
    bf = res.summary.strategies["butterfly"]
    assert isinstance(bf, sb.StrategySummary) and bf.completed == raw["by_status"]["completed"]
    assert bf.p50_ms == raw["latency_ms"]["p50"] and res.summary.status == "complete"
    assert res.strategies.loc["cloud_only", "p95_ms"] == raw_p95(res, "cloud_only")
    assert set(res.breakdown.columns) >= {"uplink_ms", "cloud_ms"}
    assert res.breakdown.loc["butterfly", "head_ms"] > res.breakdown.loc["cloud_only", "head_ms"]


def raw_p95(res: sb.Results, strategy: str) -> float:
    return res.summary.raw["strategies"][strategy]["latency_ms"]["p95"]


def test_figures_are_the_reports_plots_as_matplotlib_figures(tmp_path):
    from matplotlib.figure import Figure

    figs = sb.open_results(make_run(tmp_path / "run")).figures()
    assert {"latency_cdf", "breakdown", "over_time", "energy"} <= set(figs)
    assert all(isinstance(f, Figure) for f in figs.values())
    bars = figs["breakdown"].axes[0].patches
    assert len(bars) >= 2 * 5  # two strategies, a segment per stage


def test_compare_is_the_cli_table(tmp_path):
    a, b = make_run(tmp_path / "a", seed=1), make_run(tmp_path / "b", seed=2)
    table = sb.compare(sb.open_results(a), b)
    assert list(table["run"]) == ["a", "a", "b", "b"]
    assert table.set_index(["run", "strategy"]).loc[("b", "butterfly"), "p50_ms"] == \
        sb.open_results(b).summary.strategies["butterfly"].p50_ms


def test_a_folder_without_results_raises_report_error(tmp_path):
    with pytest.raises(sb.ReportError, match="no summary.json"):
        sb.open_results(tmp_path)
    with pytest.raises(sb.ReportError, match="no summary.json"):
        sb.compare(tmp_path)


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_run_on_embedded_ray_returns_what_the_folder_holds(tmp_path):
    topo = sb.load_topology(SMOKE, {"duration_s": 3, "warmup_s": 0, "strategies": ["butterfly"],
                                    "devices[0].count": 2, "devices[1].count": 1})
    res = sb.run(topo, out=tmp_path / "run")
    assert res.summary.status == "complete" and res.summary.ray_mode == "embedded"
    assert (tmp_path / "run" / "report.html").exists()
    st = res.summary.strategies["butterfly"]
    measured = res.requests[res.requests.phase == "measure"]
    assert st.requests == len(measured) > 0
    assert st.completed == int((measured.status == "completed").sum())
