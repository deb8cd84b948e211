"""Hostile topologies are refused at their key path, quickly, within a memory limit (testbed.config.bounds).

Every load runs in a forked child under RLIMIT_AS and RLIMIT_CPU (tests/limits.py): before the bounds, the
first of these allocated until MemoryError, the alias bomb kept the loader busy past 60 s and the deep
nesting raised RecursionError; a regression now fails here instead of exhausting the machine.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import typing
from pathlib import Path

import pytest
from pydantic import BaseModel

from testbed.config import bounds
from testbed.config.errors import ConfigError
from testbed.config.loading import load_topology
from testbed.config.schema import Topology
from tests.limits import limited, preexec

ROOT = Path(__file__).resolve().parent.parent
SMOKE = str(ROOT / "topologies" / "smoke.yaml")


def outcome(path: str, overrides: list[str]) -> list[str]:
    """The rendered problems (or ['valid']), computed in the child."""
    try:
        load_topology(path, overrides)
    except ConfigError as e:
        return [p.render(e.file) for p in e.problems]
    return ["valid"]


def refused(path: str, *overrides: str, mem_mb: int = 400) -> str:
    t0 = time.monotonic()
    lines = limited(outcome, path, list(overrides), mem_mb=mem_mb, cpu_s=10, wall_s=20)
    assert time.monotonic() - t0 < 10
    assert lines != ["valid"], "accepted"
    return "\n".join(lines)


@pytest.mark.parametrize("override, key, allowed", [
    ("devices[0].count=9223372036854775808", "devices[0].count", "at most 65533"),
    ("cloud.replicas=1000000000", "cloud.replicas", "at most 256"),
    ("devices[0].arrival.rate_hz=1.0e+308", "devices[0].arrival.rate_hz", "at most 1000"),
    ("duration_s=1.0e+308", "duration_s", "at most 604800"),
    ("duration_s=.inf", "duration_s", "a finite number"),
    ("pools.devices_per_pool=1000000000000000000000000000000", "pools.devices_per_pool", "at most 65533"),
    ("networks.lte.rtt_ms=1.0e+300", "networks.lte.rtt_ms", "at most 600000"),
    ("cloud.queue_limit=10000000000", "cloud.queue_limit", "at most 1e+06"),
    ("name=" + "n" * 5000, "name", "at most 4096 characters"),
])
def test_each_number_beyond_its_bound_is_refused_at_its_key_path(override, key, allowed):
    text = refused(SMOKE, override)
    assert f"smoke.yaml: {key}: " in text and allowed in text, text


def test_totals_are_bounded_too():
    # 60,000 devices in two groups fit each group's bound but not the pools: 600 per pool at least
    text = refused(SMOKE, "devices[0].count=60000", "devices[1].count=5000", "pools.devices_per_pool=1")
    assert "devices: 65000 devices in all; allowed: at most 65533" not in text
    assert "pools.devices_per_pool: 65000 devices make 65000 pools; allowed: at most 1000" in text, text
    text = refused(SMOKE, "devices[0].arrival.rate_hz=1000", "devices[0].count=5000", "duration_s=3600")
    assert "duration_s: plans" in text and "allowed: at most 2,000,000" in text, text


def _write(tmp_path: Path, body: str) -> str:
    path = tmp_path / "topo.yaml"
    path.write_text(Path(SMOKE).read_text() + body)
    return str(path)


@pytest.mark.slow  # over 1.5 s here: out of the fast tier
def test_more_nodes_than_the_budget_are_refused_while_composing(tmp_path):
    text = refused(_write(tmp_path, "\nx: [" + ",".join(["1"] * 60_000) + "]\n"))
    assert "not valid YAML: line 37: more than 50000 nodes" in text, text


def test_an_alias_bomb_is_refused_without_expanding_it(tmp_path):
    levels = ["a0: &a0 [" + ", ".join(['"xxxxxxxx"'] * 9) + "]"]
    levels += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, 9)]  # 9**9 leaves
    for where in ("extra", "field", "trace"):
        if where == "extra":
            body = "\n" + "\n".join(levels) + "\n"
        elif where == "field":
            body = "\nreferences:\n" + "\n".join("  - " + level.split(": ", 1)[1] for level in levels) + "\n"
        else:
            body = "\nnetworks:\n  lte:\n    uplink_trace:\n" + "\n".join("      " + lv for lv in levels) + "\n"
        text = refused(_write(tmp_path, body))
        key = {"extra": "a4", "field": "references", "trace": "networks.lte.uplink_trace.a4"}[where]
        assert f"topo.yaml: {key}: not valid YAML: aliases expand to more than 50000 nodes" in text, (where, text)


def test_a_recursive_alias_is_refused(tmp_path):
    text = refused(_write(tmp_path, "\nloop: &loop [1, *loop]\n"))
    assert "contains it" in text, text


def test_ten_thousand_levels_of_nesting_are_a_clean_error(tmp_path):
    for deep in ("[" * 10_000 + "]" * 10_000, "{a: " * 10_000 + "1" + "}" * 10_000):
        text = refused(_write(tmp_path, f"\ndescription: {deep}\n"))
        assert "nested more than 32 levels deep" in text and "RecursionError" not in text, text[:300]


def test_a_key_path_thousands_deep_is_refused():
    text = refused(SMOKE, ".".join(["x"] * 5000) + "=1")
    assert "a key path of 5000 parts; allowed: at most 32" in text, text[:300]


def test_a_long_list_section_is_refused_quickly(tmp_path):
    groups = "".join(f"\n  - {{count: 1, device_class: phone, network: lte, arrival: {{rate_hz: 1}}, name: g{i}}}"
                     for i in range(10_000))
    text = refused(_write(tmp_path, "\nx_groups:" + groups + "\n"))
    assert "cannot read the file: " in text and "allowed: a regular file of at most 262,144 bytes" in text, text
    many = ", ".join(f"{{count: 1, device_class: phone, network: lte, arrival: {{rate_hz: 1}}, name: g{i}}}"
                     for i in range(1500))
    text = refused(SMOKE, f"devices=[{many}]")
    assert "devices: " in text and "allowed: at most 1000" in text, text[:300]


def test_an_oversized_topology_file_is_refused_before_it_is_read(tmp_path):
    big = tmp_path / "big.yaml"
    with big.open("wb") as f:
        f.truncate(2 << 30)  # a 2 GB sparse file: never read
    text = refused(str(big))
    assert "allowed: a regular file of at most 262,144 bytes" in text, text


@pytest.mark.parametrize("key", ["networks.lte.uplink_trace", "devices[0].link.downlink_trace", "model.weights"])
def test_a_fifo_device_file_or_folder_is_an_error_at_its_key_path(tmp_path, key):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    for target, kind in ((fifo, "a FIFO"), ("/dev/zero", "a device file"), (tmp_path, "a folder")):
        text = refused(SMOKE, f"{key}={target}")
        assert f": {key}: " in text and f"not a regular file ({kind})" in text, text


def test_a_sparse_trace_beyond_the_size_limit_is_refused(tmp_path):
    trace = tmp_path / "huge.up"
    with trace.open("wb") as f:
        f.truncate(1 << 30)
    text = refused(SMOKE, f"networks.lte.uplink_trace={trace}")
    assert "networks.lte.uplink_trace: not a usable Mahimahi trace: 1,073,741,824 bytes; allowed: a regular file " \
           "of at most 67,108,864 bytes" in text, text


def test_image_dir_must_be_a_folder_of_regular_images(tmp_path):
    text = refused(SMOKE, f"model.image_dir={SMOKE}")
    assert "model.image_dir: not a folder (a file)" in text, text
    os.mkfifo(tmp_path / "frame.jpg")
    text = refused(SMOKE, f"model.image_dir={tmp_path}")
    assert "model.image_dir: " in text and "frame.jpg: not a regular file (a FIFO)" in text, text


@pytest.mark.slow  # over 1.5 s here: out of the fast tier
def test_the_cli_refuses_with_exit_2_within_seconds(tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    for args in ([str(fifo)], [SMOKE, "--set", f"networks.lte.uplink_trace={fifo}"],
                 [SMOKE, "--set", "devices[0].count=9223372036854775808"]):
        t0 = time.monotonic()
        proc = subprocess.run([sys.executable, str(ROOT / "run.py"), *args, "--validate"], capture_output=True,
                              text=True, timeout=30, cwd=ROOT, preexec_fn=preexec(mem_mb=2048, cpu_s=20))
        assert proc.returncode == 2, proc.stderr[-1000:]
        assert "Traceback" not in proc.stderr and time.monotonic() - t0 < 15


def _numeric_fields(cls: type[BaseModel], prefix: str) -> list[str]:
    out = []
    for name, f in cls.model_fields.items():
        path = f"{prefix}.{name}" if prefix else name
        out += _numbers_in(f.annotation, path)
    return out


def _numbers_in(ann: typing.Any, path: str) -> list[str]:
    origin, args = typing.get_origin(ann), typing.get_args(ann)
    if isinstance(ann, type) and issubclass(ann, BaseModel):
        return _numeric_fields(ann, path)
    if ann in (int, float):
        return [path]
    if origin is list:
        return _numbers_in(args[0], f"{path}[*]")
    if origin is dict:
        return _numbers_in(args[1], f"{path}.*")
    return sorted({p for a in args for p in _numbers_in(a, path)})


def test_every_number_in_the_schema_has_an_upper_bound():
    fields = _numeric_fields(Topology, "")
    assert len(fields) > 60
    missing = [f for f in fields if f not in bounds.LIMITS and f.rsplit(".", 1)[-1] not in bounds.CLOSED]
    assert not missing, missing


def test_the_shipped_topologies_are_within_the_bounds():
    for path in sorted((ROOT / "topologies").glob("*.yaml")):
        assert limited(outcome, str(path), [], mem_mb=600) == ["valid"], path
