"""Any model, any cut, through `run.py`: bad arch / import path / cut exit 2 naming the key path; the catalogue
command; EfficientNet with the butterfly split and dynamic, and a user's model by import path, on a local Ray."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from testbed.cli import main

ROOT = Path(__file__).resolve().parent.parent
DSC = str(ROOT / "topologies/dsc_efficientnet.yaml")
SMALL = ["--set", "model.input_size=64"]


@pytest.mark.parametrize(("overrides", "says"), [
    (["model.arch=efficientnet_b9"], "model.arch: unknown model; close names: efficientnet_b7"),
    (["model.arch=no_such_pkg.models:build"], "model.arch: import path 'no_such_pkg.models:build': module "
                                              "no_such_pkg.models does not import (ModuleNotFoundError"),
    (["model.arch=tests.user_model:not_a_module", "model.split=stem", "policy.cuts=auto"],
     "model.arch: cannot build the model: import path 'tests.user_model:not_a_module': the factory returned str, "
     "not an nn.Module"),
    (["model.split=features.99", "policy.cuts=auto", "strategies=[dynamic]"],
     "model.split: not a cut of this model; allowed: features.0.0, "),
    (["policy.cuts=[cloud_only, features.99]"], "policy.cuts[1]: not a cut of this model; allowed: cloud_only, "
                                                "device_only, features.0.0"),
    (["strategies=[static:features.4.1.block]"], "strategies[0]: not a cut of this model"),
    (["policy.cuts=[features.4.2]"], "policy.cuts[0]: this cut is named features.4 in the catalogue"),
    (["model.butterfly_channels=80"], "model.butterfly_channels: must be below the 80 channels at split features.4"),
])
def test_bad_model_input_exits_2_with_the_key_path(capsys, overrides, says):
    args = [DSC, "--validate", *SMALL]
    for o in overrides:
        args += ["--set", o]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert f"{DSC}: {says}" in err
    if "not a cut" in says:
        assert "(78 in all: run.py TOPOLOGY --catalogue lists them)" in err


def test_catalogue_lists_every_cut_with_bytes_share_and_bottlenecks(capsys):
    assert main([DSC, "--catalogue", *SMALL]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("cuts found by torch.fx tracing; 78 cuts")
    rows = {ln.split()[0]: ln.split() for ln in lines[2:] if ln.split()[4].endswith("%")}
    assert "before zstd" in lines[-1]
    assert rows["input"][1:4] == ["3x64x64", "49,152", "12,288"]
    assert rows["features.4"][1:4] == ["80x4x4", "5,120", "1,280"]  # int8: one byte a value before zstd
    assert rows["features.4"][-1] == "*" and len(rows["features.0.0"]) == 5  # 32x32x32 > the input: no mark
    shares = [float(r[4].rstrip("%")) for name, r in rows.items() if name != "input"]
    assert shares == sorted(shares) and 0 < shares[0] < shares[-1] < 100


def _run(topology: str, out: Path, *overrides: str) -> subprocess.CompletedProcess[str]:
    args = [sys.executable, str(ROOT / "run.py"), topology, "--out", str(out)]
    for o in overrides:
        args += ["--set", o]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}  # Ray's workers import the user's model from here too
    return subprocess.run(args, capture_output=True, text=True, timeout=500, cwd=ROOT, env=env)


def _records(out: Path) -> list[dict[str, str]]:
    with (out / "requests.csv").open() as f:
        return list(csv.DictReader(f))


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_efficientnet_butterfly_and_dynamic_end_to_end(tmp_path):
    out = tmp_path / "dsc"
    proc = _run(DSC, out, "model.input_size=64", "duration_s=4", "strategies=[butterfly, dynamic]",
                "devices[0].count=2", "devices[1].count=2", "faults[0].duration_s=2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "calibrated in" in proc.stdout + proc.stderr
    rows = _records(out)
    done = [r for r in rows if r["status"] == "completed"]
    assert {r["strategy"] for r in done} == {"butterfly", "dynamic"}
    assert {r["cut"] for r in done if r["strategy"] == "butterfly"} == {"features.4+butterfly"}
    butterfly_bytes = [int(r["bytes_up"]) for r in done if r["strategy"] == "butterfly"]
    assert all(0 < b < 8 * 4 * 4 + 200 for b in butterfly_bytes)  # 8 channels of 4x4 int8, plus the codec header
    summary = json.loads((out / "summary.json").read_text())
    names = [r["cut"] for r in summary["split_catalogue"]]
    assert "features.4" in names and len(names) == 79
    assert {r["cut"] for r in done if r["strategy"] == "dynamic"} <= set(names) | {
        "cloud_only", "device_only", "features.4+butterfly"}


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_a_users_model_by_import_path_end_to_end(tmp_path):
    out = tmp_path / "user"
    proc = _run(str(ROOT / "topologies/smoke.yaml"), out, "model.arch=tests.user_model:build", "model.split=stem",
                "model.butterfly_channels=2", "model.input_size=32", "duration_s=3",
                "strategies=[butterfly, static:stem, cloud_only]")
    assert proc.returncode == 0, proc.stderr[-3000:]
    done = [r for r in _records(out) if r["status"] == "completed"]
    assert {r["cut"] for r in done} == {"stem+butterfly", "stem", "cloud_only"}
    raw = [int(r["bytes_up"]) for r in done if r["cut"] == "stem"]
    reduced = [int(r["bytes_up"]) for r in done if r["cut"] == "stem+butterfly"]
    assert all(0 < b < 8 * 16 * 16 + 300 for b in raw)  # at most 8x16x16 int8 and a header (zstd takes the zeros)
    assert max(reduced) < min(raw)  # the butterfly's 2 channels
