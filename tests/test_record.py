"""The request record: its fields are the requests.csv columns, in order, declared once."""

from __future__ import annotations

import csv
import dataclasses

import pytest

from testbed.results.folder import CsvLog
from testbed.results.metrics import REQUEST_COLUMNS, new_record
from testbed.results.record import COLUMNS, RequestRecord, record_row


def test_a_records_row_has_exactly_the_csv_columns_in_order(tmp_path):
    rec = RequestRecord(strategy="butterfly", cut="layer2+butterfly", request_id=7, status="completed", e2e_ms=12.5)
    row = rec.as_row()
    assert tuple(row) == COLUMNS == REQUEST_COLUMNS
    log = CsvLog(tmp_path / "requests.csv", REQUEST_COLUMNS)
    log.append([row])
    log.close()
    with open(tmp_path / "requests.csv") as f:
        header, line = list(csv.reader(f))
    assert header == list(COLUMNS)
    assert dict(zip(header, line, strict=True))["e2e_ms"] == "12.5" and line[COLUMNS.index("cut")] == "layer2+butterfly"


def test_every_column_name_carries_its_unit_or_is_a_label():
    labels = {"strategy", "cut", "phase", "device_id", "group", "request_id", "status", "reason", "replica",
              "batch_size", "top1", "rrc_state", "lost_packets", "queue_drops"}
    units = ("_ms", "_mj", "_s", "_mbps", "_kbps", "bytes_")
    unlabelled = [c for c in COLUMNS if c not in labels and not any(u in c for u in units)]
    assert unlabelled == []


def test_a_record_is_frozen_and_refuses_unknown_fields():
    rec = RequestRecord(status="failed")
    with pytest.raises(dataclasses.FrozenInstanceError):
        rec.status = "completed"  # type: ignore[misc]
    with pytest.raises(KeyError, match="latency"):
        record_row(latency=1)
    assert new_record(status="failed", reason="x") == {**dict.fromkeys(COLUMNS), "status": "failed", "reason": "x"}
