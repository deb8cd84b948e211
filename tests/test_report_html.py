"""report.html: self-contained, one plot per view, built from a folder's files alone (full, partial, sweep)."""

from __future__ import annotations

import base64
import io
import re
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image
from results_factory import make_run, write_summary_only

from testbed.report import html_report
from testbed.report.html_report import ReportError, write_report
from testbed.report.sweep import SweepTable, folder_name
from testbed.results.folder import CsvLog, read_rows
from testbed.results.metrics import REQUEST_COLUMNS
from testbed.run.experiment import _write_html_report

ROOT = Path(__file__).resolve().parent.parent
RUN_PLOTS = {"latency_cdf", "breakdown", "over_time", "energy"}
IMG = re.compile(r'<img alt="[^"]*"(?: data-plot="([^"]+)")? src="data:image/png;base64,([^"]+)">')


def plots(page: str) -> dict[str, tuple[int, int]]:
    """data-plot name -> decoded PNG size, for every embedded image."""
    found = {}
    for name, data in IMG.findall(page):
        with Image.open(io.BytesIO(base64.b64decode(data))) as im:
            assert im.format == "PNG"
            found[name] = im.size
    return found


def test_run_report_embeds_every_plot_and_links_nothing_outside(tmp_path):
    folder = make_run(tmp_path / "run", faults=[{"name": "uplink outage", "start_s": 3, "end_s": 5}])
    page = write_report(folder).read_text()
    found = plots(page)
    assert set(found) == RUN_PLOTS | {"server_load_butterfly", "server_load_cloud_only"}
    assert all(w > 300 and h > 200 for w, h in found.values())
    assert page.count("<img") == len(found)  # nothing outside the pattern (no linked images)
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", page)  # no URL leaves the file
    assert "document.body.dataset.plotsLoaded" in page  # the inline script that counts decoded plots


def test_summary_and_mechanisms_tables_show_what_summary_json_holds(tmp_path):
    page = write_report(make_run(tmp_path / "run")).read_text()
    assert "<h1>splitbed: run (complete)</h1>" in page
    for text in ("butterfly", "cloud_only", "p95 ms", "cloud_only/butterfly", "userspace shaper (synthetic)",
                 "backends.link_backend.name", "fidelity.uplink_vs_configured_pct.p95", "host.cpu_model",
                 "batch histogram"):
        assert text in page, text


@pytest.fixture(scope="module")
def records(tmp_path_factory):
    return read_rows(make_run(tmp_path_factory.mktemp("r") / "run") / "requests.csv")


def test_fault_windows_are_shaded_only_when_summary_lists_them(records):
    faults = [{"name": "outage", "start_s": 2.0, "end_s": 3.5}, {"name": "slow cloud", "start_s": 6, "end_s": 7}]
    with_faults = html_report._time_figure(records, ["butterfly", "cloud_only"], 1.0, faults)
    without = html_report._time_figure(records, ["butterfly", "cloud_only"], 1.0, [])
    for ax in with_faults.axes:
        spans = [p for p in ax.patches if p.get_alpha() == 0.15]
        assert sorted(tuple(round(x, 2) for x in (p.get_x(), p.get_x() + p.get_width())) for p in spans) == [
            (2.0, 3.5), (6.0, 7.0)]
    assert [t.get_text() for t in with_faults.axes[0].texts] == ["outage", "slow cloud"]
    assert all(not ax.patches and not ax.texts for ax in without.axes)


@pytest.mark.parametrize("radio_parts, segments", [
    (False, ["compute", "radio"]),
    (True, ["compute", "transfer", "promotion", "tail"]),
])
def test_energy_stacks_the_finer_radio_parts_when_requests_csv_has_them(tmp_path, radio_parts, segments):
    folder = make_run(tmp_path / "run", radio_parts=radio_parts)
    measured = [r for r in read_rows(folder / "requests.csv") if r["phase"] == "measure"]
    fig = html_report._energy_figure(measured, ["butterfly", "cloud_only"])
    assert fig.axes[0].get_legend_handles_labels()[1] == segments
    heights = [p.get_height() for p in fig.axes[0].patches]  # segment by segment, one bar per strategy
    assert heights[:2] == pytest.approx([225.0, 0.0], abs=20)  # compute: butterfly's head, none for cloud_only


def test_an_energy_part_nobody_could_estimate_is_left_out_not_drawn_as_zero(tmp_path):
    folder = make_run(tmp_path / "run", radio_parts=True)
    measured = [r for r in read_rows(folder / "requests.csv") if r["phase"] == "measure"]
    for r in measured:
        if r["strategy"] == "cloud_only":  # e.g. a network whose radio coefficients are unknown
            r.update(energy_transfer_mj=None, energy_promotion_mj=None, energy_tail_mj=None)
    fig = html_report._energy_figure(measured, ["butterfly", "cloud_only"])
    heights = [p.get_height() for p in fig.axes[0].patches]  # (butterfly, cloud_only) per segment
    assert heights[3] != heights[3] and heights[5] != heights[5] and heights[7] != heights[7]  # NaN: no bar
    assert heights[2] > 0 and heights[1] == pytest.approx(0.0)


@pytest.mark.parametrize("emu_wait, segments", [
    (True, ["emu_wait", "head + encode", "uplink", "queue", "cloud", "downlink"]),
    (False, ["head + encode", "uplink", "queue", "cloud", "downlink"]),
])
def test_breakdown_shows_emulation_wait_only_when_there_was_some(tmp_path, emu_wait, segments):
    folder = make_run(tmp_path / "run", emu_wait=emu_wait)
    measured = [r for r in read_rows(folder / "requests.csv") if r["phase"] == "measure"]
    fig = html_report._breakdown_figure(measured, ["butterfly", "cloud_only"])
    assert fig.axes[0].get_legend_handles_labels()[1] == segments
    tops = {}
    for p in fig.axes[0].patches:
        tops[p.get_x()] = max(tops.get(p.get_x(), 0.0), p.get_y() + p.get_height())
    done = [r for r in measured if r["status"] == "completed" and r["strategy"] == "butterfly"]
    mean_e2e = sum(r["e2e_ms"] for r in done) / len(done)
    assert min(tops.values()) > 0 and max(tops.values()) == pytest.approx(mean_e2e, rel=0.01)  # the parts add up


def test_partial_run_gets_a_page_without_the_panels_it_has_no_data_for(tmp_path):
    folder = tmp_path / "run"
    folder.mkdir()
    CsvLog(folder / "requests.csv", REQUEST_COLUMNS).close()  # header only: stopped before any request ended
    summary = {"status": "interrupted", "partial": True, "error": "interrupted (Ctrl-C or SIGTERM)",
               "topology": {"name": "smoke", "duration_s": 6, "warmup_s": 1}, "strategies": {}, "replicas": [],
               "backends": {"link": "userspace shaper"}}
    write_summary_only(folder, summary)
    page = write_report(folder).read_text()
    assert "splitbed: smoke (interrupted)" in page and "interrupted (Ctrl-C or SIGTERM)" in page
    assert plots(page) == {} and "userspace shaper" in page


def test_a_folder_without_results_is_refused_naming_it(tmp_path):
    with pytest.raises(ReportError, match=re.escape(f"{tmp_path}: no summary.json or sweep.csv")):
        write_report(tmp_path)
    write_summary_only(tmp_path, ["not", "a", "summary"])
    with pytest.raises(ReportError, match="not a splitbed summary"):
        write_report(tmp_path)
    (tmp_path / "summary.json").write_text("{broken")
    with pytest.raises(ReportError, match="cannot be read"):
        write_report(tmp_path)


def test_a_report_failure_at_the_end_of_a_run_is_noted_not_raised(tmp_path):
    class Notes:
        lines: list[str] = []

        def note(self, text: str) -> None:
            self.lines.append(text)

    notes = Notes()
    _write_html_report(tmp_path / "nothing", notes)  # type: ignore[arg-type]
    assert notes.lines and notes.lines[0].startswith("report.html not written: ReportError")


def test_sweep_folder_report_has_the_curves_and_links_each_point(tmp_path):
    key = "devices[0].count"
    table = SweepTable(tmp_path / "sweep.csv")
    for i, value in enumerate(("10", "50")):
        make_run(tmp_path / folder_name(key, value), seed=i)
        table.append([{"value": value, "strategy": s, "offered_rps": 5.0 * (i + 1), "throughput_rps": 4.9 * (i + 1),
                       "completed_fraction": 1.0, "p50_ms": 200.0 + 100 * i, "p99_ms": 300.0 + 400 * i, "rejected": 0,
                       "timed_out": 0, "server_busy_fraction": 0.3 + 0.5 * i, "saturated": bool(i)}
                      for s in ("butterfly", "cloud_only")])
    table.close()
    page = write_report(tmp_path).read_text()
    assert set(plots(page)) == {"sweep"}
    assert "Sweep over devices_0_.count" in page  # the key, as far as the folder names still tell it
    assert 'href="devices_0_.count=10/report.html"' in page and 'href="devices_0_.count=50/report.html"' in page
    assert f"Sweep over {key}" in write_report(tmp_path, sweep_key=key).read_text()


def test_read_rows_gives_back_the_types_that_were_written(tmp_path):
    log = CsvLog(tmp_path / "x.csv", ("s", "i", "f", "none", "flag", "nan"))
    log.append([{"s": "lte", "i": 3, "f": 2.5, "none": None, "flag": True, "nan": float("nan")}])
    log.close()
    [row] = read_rows(tmp_path / "x.csv")
    assert row["s"] == "lte" and row["i"] == 3 and row["f"] == 2.5 and row["none"] is None and row["flag"] is True
    assert row["nan"] != row["nan"]
    assert read_rows(tmp_path / "missing.csv") == []


@pytest.mark.slow  # over 1.5 s here: out of the fast tier
def test_cli_report_rebuilds_the_page_and_exits_2_on_a_bad_folder(tmp_path):
    folder = make_run(tmp_path / "run")
    ok = subprocess.run([sys.executable, str(ROOT / "run.py"), "report", str(folder)], capture_output=True, text=True,
                        timeout=120, cwd=ROOT)
    assert ok.returncode == 0, ok.stderr[-2000:]
    assert ok.stdout.strip() == str(folder / "report.html") and (folder / "report.html").stat().st_size > 10_000
    bad = subprocess.run([sys.executable, str(ROOT / "run.py"), "report", str(tmp_path / "nope")],
                         capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert bad.returncode == 2
    assert f"{tmp_path / 'nope'}: no summary.json or sweep.csv" in bad.stderr and "Traceback" not in bad.stderr


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_a_real_run_writes_report_html_and_compare_reads_it(tmp_path):
    out = tmp_path / "run"
    proc = subprocess.run([sys.executable, str(ROOT / "run.py"), str(ROOT / "topologies/smoke.yaml"), "--out",
                           str(out), "--set", "duration_s=3", "--set", "warmup_s=0",
                           "--set", "strategies=[butterfly, cloud_only]"],
                          capture_output=True, text=True, timeout=500, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "report.html" in proc.stdout
    expected = RUN_PLOTS | {"server_load_butterfly", "server_load_cloud_only"}
    assert set(plots((out / "report.html").read_text())) == expected
    (out / "report.html").unlink()
    rebuilt = subprocess.run([sys.executable, str(ROOT / "run.py"), "report", str(out)], capture_output=True,
                             text=True, timeout=120, cwd=ROOT)
    assert rebuilt.returncode == 0 and set(plots((out / "report.html").read_text())) == expected
    cmp = subprocess.run([sys.executable, str(ROOT / "run.py"), "compare", str(out), str(out), "--out",
                          str(tmp_path / "cmp")], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert cmp.returncode == 0, cmp.stderr[-2000:]
    assert cmp.stdout.count("butterfly") == 2 and set(plots((tmp_path / "cmp" / "compare.html").read_text())) == {
        "compare"}


def test_the_stacked_bars_cover_every_breakdown_part_once_in_order():
    from testbed.results.metrics import BREAKDOWN_KEYS

    assert tuple(c for _, cols in html_report.STAGES for c in cols) == BREAKDOWN_KEYS
