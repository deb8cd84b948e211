"""`run.py compare`: runs side by side from their summary.json, a table, compare.png and compare.html."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from results_factory import make_run, write_summary_only

from testbed.report import compare

ROOT = Path(__file__).resolve().parent.parent


def run_cli(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(ROOT / "run.py"), "compare", *args], capture_output=True, text=True,
                          timeout=120, cwd=cwd)


def test_rows_carry_each_runs_own_figures(tmp_path):
    a = make_run(tmp_path / "a", seed=1)
    b = make_run(tmp_path / "b", strategies=("butterfly",), seed=2)
    runs = compare.load_runs([a, b])
    rows = compare.rows(runs)
    assert [(r["run"], r["strategy"]) for r in rows] == [("a", "butterfly"), ("a", "cloud_only"), ("b", "butterfly")]
    st = json.loads((b / "summary.json").read_text())["strategies"]["butterfly"]
    assert rows[2] == {"run": "b", "strategy": "butterfly", "status": "complete",
                       "completed": st["by_status"]["completed"], "p50_ms": st["latency_ms"]["p50"],
                       "p95_ms": st["latency_ms"]["p95"], "p99_ms": st["latency_ms"]["p99"],
                       "energy_mj": st["energy_mj_mean"], "throughput_rps": st["throughput_rps"],
                       "kb_up": st["bytes_up_mean"] / 1000}
    assert rows[0]["p50_ms"] != rows[2]["p50_ms"]  # different runs, different figures


def test_figure_has_a_bar_per_run_and_strategy_and_skips_what_a_run_lacks(tmp_path):
    runs = compare.load_runs([make_run(tmp_path / "a"), make_run(tmp_path / "b", strategies=("butterfly",))])
    fig = compare.figure(compare.rows(runs))
    panels = [ax for ax in fig.axes if ax.get_title()]
    assert [ax.get_title() for ax in panels] == [m[3] for m in compare.METRICS]
    assert all(len(ax.patches) == 3 for ax in panels)  # a: 2 strategies, b: 1
    assert fig.axes[-1].get_legend().get_title().get_text() == "run"


def test_same_folder_names_are_told_apart_by_path(tmp_path):
    runs = compare.load_runs([make_run(tmp_path / "x" / "run"), make_run(tmp_path / "y" / "run")])
    assert [r.label for r in runs] == [str(tmp_path / "x" / "run"), str(tmp_path / "y" / "run")]


@pytest.mark.slow  # over 1.5 s here: out of the fast tier
def test_cli_prints_the_table_and_writes_png_and_html(tmp_path):
    a, b = make_run(tmp_path / "runs" / "layer2"), make_run(tmp_path / "runs" / "layer3", seed=3)
    proc = run_cli(str(a), str(b), "--out", str(tmp_path / "cmp"))
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = [line for line in proc.stdout.splitlines() if "layer2" in line or "layer3" in line]
    assert len(lines) == 4 and "p99 ms" in proc.stdout and "KB up" in proc.stdout
    assert (tmp_path / "cmp" / "compare.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    page = (tmp_path / "cmp" / "compare.html").read_text()
    assert page.count('src="data:image/png;base64,') == 1 and "layer3" in page
    assert 'href="../runs/layer2/report.html"' in page  # each run's own report, relative to the page


@pytest.mark.slow  # over 1.5 s here: out of the fast tier
def test_cli_default_output_is_the_first_runs_parent(tmp_path):
    a = make_run(tmp_path / "results" / "a")
    proc = run_cli(str(a), str(a))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (tmp_path / "results" / "compare.html").exists() and (tmp_path / "results" / "compare.png").exists()


@pytest.mark.slow  # over 1.5 s here: out of the fast tier
@pytest.mark.parametrize("make_bad, says", [
    (lambda d: d.mkdir(), "no summary.json (not a splitbed run's results folder)"),
    (lambda d: write_summary_only(d, {"status": "complete"}), "not a splitbed summary (no strategies)"),
    (lambda d: (d.mkdir(), (d / "summary.json").write_text("{")), "cannot be read"),
])
def test_cli_exits_2_naming_a_folder_it_cannot_compare(tmp_path, make_bad, says):
    good, bad = make_run(tmp_path / "good"), tmp_path / "bad"
    make_bad(bad)
    proc = run_cli(str(good), str(bad), "--out", str(tmp_path / "cmp"))
    assert proc.returncode == 2
    assert str(bad) in proc.stderr and says in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "cmp").exists()  # nothing written


def test_topology_runs_still_parse_beside_the_subcommands(tmp_path, write_topology, minimal_yaml):
    from testbed.cli import main

    assert main([str(write_topology(minimal_yaml)), "--validate"]) == 0
    with pytest.raises(SystemExit) as e:
        main(["compare"])  # DIR is required
    assert e.value.code == 2
