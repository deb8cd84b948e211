"""Property: any topology file, however mangled, loads as a Topology or fails as a ConfigError that names the file
and a key path; never any other exception, and the CLI never shows a traceback.

The shipped topologies are mutated the ways people and scripts break them: a key deleted, a value of another
type, an unknown key, numbers negative, zero or huge, garbage strings, a mapping where a list belongs (and back),
file paths (weights, images, traces) that point nowhere.

Every load runs in a forked child under a memory and a CPU-time limit (tests/limits.py), and every CLI run in a
subprocess under the same limits: a draw that once made the loader allocate until the host OOM-killed pytest
(`devices.count: 2**63`) is now refused by testbed.config.bounds, and a regression fails here instead of exhausting
the machine.
"""

from __future__ import annotations

import math
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from testbed.config.errors import ConfigError
from testbed.config.loading import load_topology
from testbed.config.schema import Topology
from tests.limits import limited, preexec

ROOT = Path(__file__).resolve().parent.parent
BASES = {name: yaml.safe_load((ROOT / "topologies" / name).read_text())
         for name in ("smoke.yaml", "lte_100devices.yaml")}
NOWHERE = ("missing.pt", "/nonexistent/dir/x.trace", "sub/none.up", "", "nul\x00.pt", "n" * 300)  # last: too long
FILE_KEYS = ("model.weights", "model.image_dir", "networks.lte.uplink_trace", "networks.wifi.downlink_trace",
             "devices[0].link.uplink_trace", "devices[0].link.downlink_trace")
SETTINGS = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=30)  # any UTF-8 text (no lone surrogates)
numbers = st.sampled_from([0, -1, -0.5, 10**30, -(10**30), 1e308, math.inf, -math.inf, math.nan, 2**63, 0.0,
                           10**6, 10**9])
scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True), text, numbers)
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                       st.dictionaries(st.one_of(text, st.integers()), inner,
                                                                       max_size=3)), max_leaves=6)


def node_paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every key path below the root, e.g. ('devices', 0, 'arrival', 'rate_hz')."""
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    out = []
    for k, v in items:
        out.append((*prefix, k))
        out += node_paths(v, (*prefix, k))
    return out


def parent_of(raw: dict[str, Any], path: tuple[Any, ...]) -> Any:
    node: Any = raw
    for part in path[:-1]:
        node = node[part]
    return node


@st.composite
def mutated(draw: st.DrawFn) -> dict[str, Any]:
    raw = yaml.safe_load(yaml.safe_dump(BASES[draw(st.sampled_from(sorted(BASES)))]))  # a deep copy
    for _ in range(draw(st.integers(1, 3))):
        paths = node_paths(raw)
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        parent, key = parent_of(raw, path), path[-1]
        old = parent[key]
        kind = draw(st.sampled_from(["delete", "retype", "unknown_key", "number", "garbage", "nesting", "file",
                                     "aliases"]))
        if kind == "delete":
            del parent[key]
        elif kind == "retype":
            parent[key] = draw(values.filter(lambda v, old=old: type(v) is not type(old)))
        elif kind == "unknown_key":
            target = old if isinstance(old, dict) else parent if isinstance(parent, dict) else raw
            target[draw(st.one_of(text, st.integers()))] = draw(values)
        elif kind == "number":
            parent[key] = draw(numbers)
        elif kind == "garbage":
            parent[key] = draw(st.one_of(text, st.sampled_from(["\x00", "../../etc/passwd", " ", "~", "{", "-1"])))
        elif kind == "aliases":  # shared lists: safe_dump writes anchors, a few hundred bytes expanding to 9**k
            bomb: Any = ["x" * 8]
            for _ in range(draw(st.integers(2, 8))):
                bomb = [bomb] * 9
            parent[key] = bomb
            break  # walking it again here (node_paths) would expand it
        elif kind == "nesting":
            parent[key] = [old] if isinstance(old, dict) else {"value": old} if isinstance(old, list) else [[old]]
        else:
            where = draw(st.sampled_from(FILE_KEYS))
            _set(raw, where, draw(st.sampled_from(NOWHERE)))
    return raw


def _set(raw: dict[str, Any], dotted: str, value: Any) -> None:
    """Set a path like devices[0].link.uplink_trace, creating mappings on the way (where the shape allows)."""
    node: Any = raw
    parts = dotted.replace("[0]", ".0").split(".")
    for part in parts[:-1]:
        key: Any = int(part) if part.isdigit() else part
        if isinstance(node, dict):
            node = node.setdefault(key, {})
        elif isinstance(node, list) and isinstance(key, int) and node:
            node = node[0]
        else:
            return
        if not isinstance(node, dict | list):
            return
    if isinstance(node, dict):
        node[parts[-1]] = value
    elif isinstance(node, list) and node and isinstance(node[0], dict):  # devices written as a list
        node[0][parts[-1]] = value


def write(raw: dict[str, Any], folder: str) -> Path:
    path = Path(folder) / "topo.yaml"
    path.write_text(yaml.safe_dump(raw, allow_unicode=True))
    return path


def check(path: Path) -> None:
    """`_check` in a child under a memory and a CPU limit."""
    limited(_check, path, mem_mb=600, cpu_s=20, wall_s=40)


def _check(path: Path) -> None:
    """Valid, or a ConfigError naming the file and, for every problem, a key path."""
    try:
        topo = load_topology(path)
    except ConfigError as e:
        assert e.file == str(path) and e.problems
        for p in e.problems:
            assert p.path, f"a problem without a key path: {p}"
            assert p.render(str(path)).startswith(f"{path}: {p.path}: ")
        assert str(e).startswith(f"{path}: ")
    else:
        assert isinstance(topo, Topology)


@pytest.mark.slow  # over 1.5 s here: out of the fast tier
@settings(SETTINGS, max_examples=180)
@given(mutated())
def test_mutated_topologies_load_or_fail_with_file_and_key_path(raw):
    with tempfile.TemporaryDirectory() as folder:
        check(write(raw, folder))


@pytest.mark.slow  # over 1.5 s here: out of the fast tier
@settings(SETTINGS, max_examples=10)
@given(mutated())
def test_cli_validate_exits_0_or_2_without_a_traceback(raw):
    with tempfile.TemporaryDirectory() as folder:
        path = write(raw, folder)
        proc = subprocess.run([sys.executable, str(ROOT / "run.py"), str(path), "--validate"], capture_output=True,
                              text=True, timeout=60, cwd=ROOT,
                              preexec_fn=preexec(mem_mb=6144, cpu_s=40))  # torch maps ~3.8 GB
    assert proc.returncode in (0, 2), proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    assert (f"{path}: valid" in proc.stdout) if proc.returncode == 0 else (f"{path}: " in proc.stderr)


def test_the_unmutated_bases_are_valid():
    with tempfile.TemporaryDirectory() as folder:
        for raw in BASES.values():
            assert isinstance(load_topology(write(raw, folder)), Topology)
