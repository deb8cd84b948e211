"""Typed reads of summary.json: an old run's file (fewer keys) and a full one read the same way."""

from __future__ import annotations

import json

import pytest

from testbed.results.summary_view import SummaryView
from tests.results_factory import make_run

OLD = {  # an early summary.json: no timeline, hardware, population, groups, faults or cloud_device
    "status": "complete", "topology": {"name": "old", "strategies": ["cloud_only", "butterfly"],
                                       "devices": [{"name": "lte", "count": 1}]},
    "backends": {"link": "userspace shaper", "cpu": "time-scaled"}, "phases_done": ["cloud_only"],
    "strategies": {}, "comparison": {}, "replicas": [],
}


def test_an_old_summary_reads_with_empty_defaults(tmp_path):
    path = tmp_path / "summary.json"
    path.write_text(json.dumps(OLD))
    v = SummaryView.of(json.loads(path.read_text()))
    assert (v.name, v.status, v.link_text, v.cpu_text) == ("old", "complete", "userspace shaper", "time-scaled")
    assert v.strategies_done == ["cloud_only"] and v.strategy_names == ["cloud_only", "butterfly"]
    assert v.faults == [] and v.groups == {} and v.timeline_s == {} and v.hardware == {} and v.cloud_devices == []
    assert v.group_order() == []


def test_a_full_summary_names_what_the_reports_read(tmp_path):
    folder = make_run(tmp_path / "run")
    raw = json.loads((folder / "summary.json").read_text())
    v = SummaryView.of(raw)
    assert v.strategies == raw["strategies"] and v.strategy_names == ["butterfly", "cloud_only"]
    assert v.server_busy_by_strategy == {"butterfly": 0.2, "cloud_only": 0.2}
    assert v.cloud_devices == ["Test CPU (cpu)"] and v.replicas[0]["max_queue_depth"] == 3
    assert v.raw is raw
    with pytest.raises(AttributeError):
        v.status = "failed"  # type: ignore[misc]  # a view, not a place to write
