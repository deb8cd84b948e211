"""Typed reads of summary.json: report modules ask a `SummaryView` instead of walking string paths.

The file's shape is unchanged (old results folders stay readable): the view only names what the readers use
and gives each key the default an older or partial summary implies (a missing list is empty, a missing
mapping is empty, a missing text is "").
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class SummaryView:
    """What the reports read from one summary.json."""
    status: str | None  # None only in a file that never said
    topology: dict[str, Any]
    error: str | None = None
    started_at: str | None = None
    wall_s: float | None = None
    topology_file: str | None = None
    strategies: dict[str, dict[str, Any]] = field(default_factory=dict)  # per strategy: testbed.results.metrics stats
    comparison: dict[str, dict[str, float]] = field(default_factory=dict)
    groups: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)  # group -> strategy -> stats
    replicas: list[dict[str, Any]] = field(default_factory=list)
    fidelity: dict[str, Any] = field(default_factory=dict)
    faults: list[dict[str, Any]] = field(default_factory=list)
    fault_baseline: dict[str, dict[str, int]] = field(default_factory=dict)
    failover: dict[str, dict[str, Any]] = field(default_factory=dict)
    strategies_done: list[str] = field(default_factory=list)  # summary.json "phases_done"
    server_busy_by_strategy: dict[str, float] = field(default_factory=dict)
    timeline_s: dict[str, float] = field(default_factory=dict)
    hardware: dict[str, Any] = field(default_factory=dict)
    split_catalogue: list[dict[str, Any]] = field(default_factory=list)
    accuracy_by_cut: dict[str, Any] = field(default_factory=dict)
    device_population: dict[str, Any] = field(default_factory=dict)
    link_text: str = ""  # backends.link: how links are shaped, in words
    cpu_text: str = ""  # backends.cpu: how device compute is emulated, in words
    cloud_devices: list[str] = field(default_factory=list)  # backends.cloud_device
    event_loops: list[str] = field(default_factory=list)  # backends.event_loop: the replicas' (uvloop or asyncio)
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False)  # for the key/value tables of the report

    @classmethod
    def of(cls, summary: Mapping[str, Any]) -> SummaryView:
        backends = summary.get("backends") or {}
        return cls(
            status=summary.get("status"), topology=dict(summary.get("topology") or {}),
            error=summary.get("error"), started_at=summary.get("started_at"), wall_s=summary.get("wall_s"),
            topology_file=summary.get("topology_file"),
            strategies=dict(summary.get("strategies") or {}), comparison=dict(summary.get("comparison") or {}),
            groups=dict(summary.get("groups") or {}), replicas=list(summary.get("replicas") or []),
            fidelity=dict(summary.get("fidelity") or {}), faults=list(summary.get("faults") or []),
            fault_baseline=dict(summary.get("fault_baseline") or {}), failover=dict(summary.get("failover") or {}),
            strategies_done=list(summary.get("phases_done") or []),
            server_busy_by_strategy=dict(summary.get("server_busy_by_strategy") or {}),
            timeline_s=dict(summary.get("timeline_s") or {}), hardware=dict(summary.get("hardware") or {}),
            split_catalogue=list(summary.get("split_catalogue") or []),
            accuracy_by_cut=dict(summary.get("accuracy_by_cut") or {}),
            device_population=dict(summary.get("device_population") or {}),
            link_text=str(backends.get("link", "")), cpu_text=str(backends.get("cpu", "")),
            cloud_devices=list(backends.get("cloud_device") or []),
            event_loops=list(backends.get("event_loop") or []), raw=summary)

    @property
    def name(self) -> str:
        """The topology's name."""
        return str(self.topology.get("name", "?"))

    @property
    def strategy_names(self) -> list[str]:
        """The strategies measured, else those the topology lists."""
        return list(self.strategies) or list(self.topology.get("strategies") or [])

    def present(self, keys: tuple[str, ...]) -> dict[str, Any]:
        """The given top-level keys that hold something, in the given order (the report's key/value tables)."""
        return {k: self.raw[k] for k in keys if self.raw.get(k)}

    def group_order(self) -> list[str]:
        """Groups with statistics, in the topology's order of device groups."""
        return [g["name"] for g in self.topology.get("devices") or [] if g.get("name") in self.groups]
