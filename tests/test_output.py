"""Output that cannot be written, and results that must not be overwritten (testbed.results.folder)."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from testbed.results.folder import OutputError, RunFolder, prepare_out, read_rows
from testbed.results.metrics import REQUEST_COLUMNS, new_record
from tests.limits import preexec

ROOT = Path(__file__).resolve().parent.parent


@contextlib.contextmanager
def tmpfs(path: Path, options: str):
    """A small file system of our own (root only): a real full disk or a read-only place."""
    path.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.decode().strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def test_an_earlier_runs_results_are_never_overwritten(tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "requests.csv").write_text("earlier\n")
    with pytest.raises(OutputError, match=r"run: holds an earlier run's results \(requests.csv\); nothing was"):
        prepare_out(tmp_path / "run")
    assert prepare_out(tmp_path / "run", pick_new=True) == tmp_path / "run-2"  # the default name: a new folder
    assert (tmp_path / "run" / "requests.csv").read_text() == "earlier\n"
    assert prepare_out(tmp_path / "empty") == tmp_path / "empty"  # new or empty: fine
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputError, match="file: is not a folder"):
        prepare_out(tmp_path / "file")
    with pytest.raises(OutputError, match="cannot write there"):
        prepare_out(tmp_path / "file" / "below")


def test_the_csv_files_are_created_exclusively(tmp_path):
    (tmp_path / "requests.csv").write_text("earlier\n")
    with pytest.raises(OutputError, match="requests.csv: cannot create: File exists"):
        RunFolder(tmp_path)
    assert (tmp_path / "requests.csv").read_text() == "earlier\n"


def test_a_read_only_place_is_an_error_before_the_run(tmp_path):
    with tmpfs(tmp_path / "ro", "ro,size=64k") as ro, pytest.raises(OutputError, match="Read-only file system"):
        prepare_out(ro / "results")


@pytest.mark.slow  # over 1.5 s here: out of the fast tier
def test_the_cli_refuses_an_unusable_out_with_exit_2(tmp_path):
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "summary.json").write_text("{}")
    (tmp_path / "afile").write_text("x")
    for out, says in ((tmp_path / "old", "holds an earlier run's results (summary.json)"),
                      (tmp_path / "afile", "is not a folder")):
        proc = subprocess.run([sys.executable, str(ROOT / "run.py"), str(ROOT / "topologies" / "smoke.yaml"),
                               "--out", str(out)], capture_output=True, text=True, timeout=60, cwd=ROOT,
                              preexec_fn=preexec(mem_mb=6144, cpu_s=30))  # torch maps ~3.8 GB
        assert proc.returncode == 2 and f"--out: {out}: {says}" in proc.stderr, proc.stderr[-1000:]
        assert "ray" not in proc.stderr.lower()  # refused before anything started
    assert (tmp_path / "old" / "summary.json").read_text() == "{}"


def test_a_disk_that_fills_keeps_whole_rows_and_a_summary_that_says_why(tmp_path):
    with tmpfs(tmp_path / "small", "size=1400k") as small:
        folder = RunFolder(small / "run")
        rows = [new_record(strategy="butterfly", phase="measure", device_id=i, status="completed",
                           reason="x" * 200) for i in range(50)]
        with pytest.raises(OutputError) as err:
            for _ in range(10_000):
                folder.requests.append(rows)
        assert f"{small}/run/requests.csv: cannot write: No space left on device" in str(err.value)
        written = folder.requests.rows
        folder.requests.append(rows)  # after the failure: nothing more, no second error
        folder.write_summary({"status": "failed", "error": f"OutputError: {err.value}"})  # the reserve makes room
        folder.close()
        got = read_rows(small / "run" / "requests.csv")
        assert len(got) == written > 0
        assert list(got[-1]) == list(REQUEST_COLUMNS) and got[-1]["reason"] == "x" * 200  # the last row is whole
        summary = json.loads((small / "run" / "summary.json").read_text())
        assert summary["status"] == "failed" and "No space left on device" in summary["error"]
        assert not (small / "run" / ".reserve").exists()
