"""The request record: one typed row per request, whose fields are the `requests.csv` columns.

Declared once here; `testbed.results.metrics.REQUEST_COLUMNS` (the CSV header, the summary's reads) is derived from
the field order. A value of None is an unknown, written as an empty cell, never a flag: a request that did
not reach a step leaves that step's fields at their defaults (None, or 0 bytes).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, kw_only=True)
class RequestRecord:
    strategy: str | None = None
    cut: str | None = None
    phase: str | None = None  # warmup or measure
    device_id: int | None = None
    group: str | None = None
    request_id: int | None = None
    t_arrival_s: float | None = None
    status: str | None = None  # testbed.results.metrics.STATUSES
    reason: str | None = None
    bytes_up: int | None = None
    bytes_down: int | None = None
    emu_wait_ms: float | None = None
    head_ms: float | None = None
    encode_ms: float | None = None
    uplink_ms: float | None = None
    queue_ms: float | None = None
    cloud_ms: float | None = None
    server_ms: float | None = None
    downlink_ms: float | None = None
    e2e_ms: float | None = None
    energy_mj: float | None = None
    energy_compute_mj: float | None = None
    energy_radio_mj: float | None = None
    energy_transfer_mj: float | None = None
    energy_promotion_mj: float | None = None
    energy_tail_mj: float | None = None
    replica: int | None = None
    batch_size: int | None = None
    uplink_ideal_ms: float | None = None
    uplink_error_ms: float | None = None
    lost_packets: int | None = None
    top1: int | None = None
    predicted_ms: float | None = None
    est_uplink_mbps: float | None = None
    device_full_model_ms: float | None = None  # the device's own (testbed/domain/population.py)
    device_uplink_kbps: float | None = None
    device_downlink_kbps: float | None = None
    # RRC (testbed.domain.rrc): the state a request found, the promotion before its first byte (in uplink_ms) and the
    # DRX wait of its answer (in downlink_ms); 0 with throttling.rrc off; None: timers unknown
    rrc_state: str | None = None
    rrc_promotion_ms: float | None = None
    rrc_drx_ms: float | None = None
    rrc_ms: float | None = None
    queue_drops: int | None = None  # uplink packets the drop-tail queue refused (each resent): throttling.queues

    def as_row(self) -> dict[str, Any]:
        """The CSV row: every column, in order (the form pools hand the driver)."""
        return {name: getattr(self, name) for name in COLUMNS}


COLUMNS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(RequestRecord))


def record_row(**fields: Any) -> dict[str, Any]:
    """A row from some of the record's fields; a name that is not a column is a KeyError (a typo is not data)."""
    unknown = set(fields) - set(COLUMNS)
    if unknown:
        raise KeyError(f"unknown record fields: {sorted(unknown)}")
    return RequestRecord(**fields).as_row()
