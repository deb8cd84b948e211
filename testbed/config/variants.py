"""The variants of one topology, every one validated before any runs: a sweep's points and a ladder's rungs.

A sweep point adds one `key=value`; a ladder rung adds its `set:` overrides to the rungs before it (a later value
of a key replaces an earlier one) and `unset:` drops an earlier rung's override, so the topology's own value
comes back. One bad variant stops the whole set before anything starts, and each problem names its variant.
"""

from __future__ import annotations

from testbed.config.errors import ConfigError, Problem
from testbed.config.loading import load_topology
from testbed.config.schema import Topology


def parse_sweep(spec: str) -> tuple[str, list[str]]:
    """`devices.count=10,50` -> ('devices.count', ['10', '50'])."""
    key, sep, values = spec.partition("=")
    items = [v.strip() for v in values.split(",") if v.strip()]
    if not sep or not key.strip() or not items:
        raise ValueError(f"--sweep {spec!r}: expected key.path=v1,v2,...")
    return key.strip(), items


def load_points(topology_file: str, overrides: list[str], key: str, values: list[str]) -> list[Topology]:
    """Every point validated up front: one bad value stops the sweep before anything runs."""
    return load_variants(topology_file, overrides, [(f"--sweep {key}={v}", [f"{key}={v}"]) for v in values])


def load_variants(topology_file: str, overrides: list[str], variants: list[tuple[str, list[str]]]) -> list[Topology]:
    """The topology under each (label, extra overrides), all validated before any runs: every variant's problems
    are raised together, each tagged with its label (a sweep's points, a ladder's rungs)."""
    topos, problems = [], []
    for label, extra in variants:
        try:
            topos.append(load_topology(topology_file, [*overrides, *extra]))
        except ConfigError as e:
            problems += [Problem(p.path, f"{p.message} [{label}]", p.value, p.has_value) for p in e.problems]
    if problems:
        raise ConfigError(topology_file, problems)
    return topos


def rung_overrides(topo: Topology, upto: int) -> list[str]:
    """The overrides in force at rung `upto` (0-based): every earlier set, minus what a later rung unset."""
    active: dict[str, str] = {}
    for rung in topo.ladder[: upto + 1]:
        for key in rung.unset:
            active.pop(key, None)
        for assignment in rung.set:
            active[assignment.split("=", 1)[0].strip()] = assignment
    return list(active.values())


def load_rungs(topology_file: str, overrides: list[str], only: list[str] | None = None) -> list[tuple[str, Topology]]:
    """(rung name, its topology) for every rung (or those named in `only`), all validated before any runs."""
    base = load_topology(topology_file, overrides)
    names = [r.name for r in base.ladder]
    unknown = [n for n in only or [] if n not in names]
    if unknown:
        raise ConfigError(topology_file, [Problem("ladder", "no such rung; allowed: " + ", ".join(names),
                                                  unknown, True)])
    chosen = [(i, r.name) for i, r in enumerate(base.ladder) if not only or r.name in only]
    topos = load_variants(topology_file, overrides,
                          [(f"ladder[{i}] {name}", [*rung_overrides(base, i), "ladder=[]"]) for i, name in chosen])
    return [(name, topo) for (_, name), topo in zip(chosen, topos, strict=True)]
