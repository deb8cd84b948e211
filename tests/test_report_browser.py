"""The report pages open in a real browser: headless Chromium loads them from file:// and decodes every plot.

The pages count their own decoded images after load (`<body data-plots-loaded=N>`, an inline script);
Chromium's --dump-dom prints the DOM after that script ran. Chromium is a test-only dependency: CI installs
it (.ci/run), and there the test fails without it; elsewhere it is skipped, saying why.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from results_factory import make_run

from testbed.report import compare
from testbed.report.html_report import write_report

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def loaded_plots(page: Path, tmp_path: Path) -> tuple[int, str]:
    """(data-plots-loaded after load, the dumped DOM) for a page opened from file:// in headless Chromium."""
    if CHROMIUM is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is missing in CI: .ci/run installs it (apt-get install chromium)")
        pytest.skip("chromium not installed (test-only dependency; apt-get install chromium); CI runs this test")
    profile = tmp_path / "chromium-profile"
    profile.mkdir()
    proc = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         f"--user-data-dir={profile}", "--virtual-time-budget=5000", "--dump-dom", page.resolve().as_uri()],
        capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    m = re.search(r'<body[^>]*\bdata-plots-loaded="(\d+)"', proc.stdout)
    assert m, f"the page's load script did not run; DOM starts: {proc.stdout[:500]!r}"
    return int(m.group(1)), proc.stdout


@pytest.mark.slow  # over 1.5 s here: out of the fast tier
def test_every_plot_of_report_html_decodes_in_chromium(tmp_path):
    page = write_report(make_run(tmp_path / "run", faults=[{"name": "outage", "start_s": 2, "end_s": 4}]))
    embedded = page.read_text().count("<img")
    assert embedded == 6  # CDF, breakdown, over time, energy, one server-load panel per strategy
    loaded, dom = loaded_plots(page, tmp_path)
    assert loaded == embedded
    assert len(re.findall(r'<img [^>]*data-plot="', dom)) == embedded


def test_compare_html_plot_decodes_in_chromium(tmp_path):
    runs = compare.load_runs([make_run(tmp_path / "a"), make_run(tmp_path / "b", seed=5)])
    _, page = compare.write(runs, compare.rows(runs), tmp_path / "cmp")
    assert loaded_plots(page, tmp_path)[0] == 1


@pytest.mark.slow  # over 1.5 s here: out of the fast tier
def test_a_broken_image_is_not_counted(tmp_path):
    """The check can fail: an image the browser cannot decode is left out of the count."""
    page = write_report(make_run(tmp_path / "run"))
    text = page.read_text()
    page.write_text(text.replace("base64,iVBORw0KGgo", "base64,AAAAAAAAAA", 1))
    assert loaded_plots(page, tmp_path)[0] == text.count("<img") - 1
