"""The typed results of a request's steps, and the one place its record is built from them.

Each step of a device's request (the split choice, the compute, the radio's start, the send, the answer)
returns a frozen result; `Steps` holds the ones the request reached, so a request that failed half-way
keeps what it did. The record is built once, at the end (`Steps.fields`, then `EnergyResult`): no
field is written twice, and each field comes from exactly one step.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from testbed.domain.energy import RadioModel, compute_energy_mj, radio_transfer_mj, tail_energy_mj
from testbed.results.record import RequestRecord


@dataclass(frozen=True)
class Arrival:
    strategy: str
    phase: str  # warmup or measure
    device_id: int
    group: str
    request_id: int
    t_arrival_s: float


@dataclass(frozen=True)
class Choice:
    cut: str
    est_uplink_mbps: float
    predicted_ms: float | None


@dataclass(frozen=True)
class ComputeResult:
    """The device's side: its times (at its own speed) and what goes up."""

    emu_wait_ms: float
    head_ms: float
    encode_ms: float
    payload: bytes
    header: dict[str, Any]  # device_only: its top1; a tensor cut: its codec

    def fields(self) -> dict[str, Any]:
        out: dict[str, Any] = {"emu_wait_ms": self.emu_wait_ms, "head_ms": self.head_ms, "encode_ms": self.encode_ms}
        if "top1" in self.header:  # device_only answers itself
            out["top1"] = self.header["top1"]
        return out


@dataclass(frozen=True)
class RadioResult:
    """The RRC state the request found, and the promotion it waited for and paid (testbed.domain.rrc)."""

    rrc_state: str
    rrc_promotion_ms: float | None
    promotion_mj: float | None


@dataclass(frozen=True)
class UplinkResult:
    """What the shaper did with the frame; `shaper_ms` is the uplink time where no answer gave a better one."""

    bytes_up: int
    shaper_ms: float
    uplink_error_ms: float
    lost_packets: int
    queue_drops: int


@dataclass(frozen=True)
class ExchangeResult:
    """The cloud's answer; a rejection has only bytes_down, replica and server_ms."""

    bytes_down: int
    replica: int | None
    server_ms: float | None
    uplink_ms: float | None = None  # to the cloud's receipt of the last byte, with the RRC promotion
    queue_ms: float | None = None
    cloud_ms: float | None = None
    batch_size: int | None = None
    top1: int | None = None
    uplink_ideal_ms: float | None = None
    downlink_ms: float | None = None
    rrc_drx_ms: float | None = None
    rrc_ms: float | None = None


@dataclass(frozen=True)
class Outcome:
    status: str  # testbed.results.metrics.STATUSES
    reason: str | None
    e2e_ms: float


@dataclass
class Steps:
    """The results a request has reached so far, one per step (a retried send replaces the lost one)."""

    arrival: Arrival
    choice: Choice | None = None
    compute: ComputeResult | None = None
    radio: RadioResult | None = None
    uplink: UplinkResult | None = None
    exchange: ExchangeResult | None = None
    retried_after: str | None = None  # the replica lost before a retry that was answered
    outcome: Outcome | None = None
    energy: EnergyResult | None = None  # set when the request ends; its tail may come later

    def fields(self) -> dict[str, Any]:
        """Every record field but the energy, each from the one step that knows it."""
        out: dict[str, Any] = {**vars(self.arrival), **_fields(self.choice)}
        for part in (self.compute.fields() if self.compute else {}, _radio_fields(self.radio),
                     _uplink_fields(self.uplink), _exchange_fields(self.exchange), _fields(self.outcome)):
            clash = out.keys() & part.keys()
            if clash:
                raise AssertionError(f"record fields written twice: {sorted(clash)}")
            out.update(part)
        up, ex = self.uplink, self.exchange
        out["bytes_up"] = up.bytes_up if up else 0
        out["bytes_down"] = ex.bytes_down if ex else 0
        out["uplink_ms"] = ex.uplink_ms if ex and ex.uplink_ms is not None else up.shaper_ms if up else None
        return out

    def row(self) -> dict[str, Any]:
        """The request's row (after the request ended): its fields and its energy."""
        assert self.energy is not None
        return RequestRecord(**self.fields(), **self.energy.fields()).as_row()


def _fields(part: Any) -> dict[str, Any]:
    return dict(vars(part)) if part is not None else {}


def _radio_fields(radio: RadioResult | None) -> dict[str, Any]:
    return {} if radio is None else {"rrc_state": radio.rrc_state, "rrc_promotion_ms": radio.rrc_promotion_ms}


def _uplink_fields(up: UplinkResult | None) -> dict[str, Any]:
    if up is None:
        return {}
    return {"uplink_error_ms": up.uplink_error_ms, "lost_packets": up.lost_packets, "queue_drops": up.queue_drops}


def _exchange_fields(ex: ExchangeResult | None) -> dict[str, Any]:
    return {} if ex is None else {k: v for k, v in vars(ex).items() if k not in ("bytes_down", "uplink_ms")}


@dataclass(frozen=True)
class EnergyResult:
    """A request's energy parts (mJ); totals are unknown where the radio's coefficients are."""

    compute_mj: float
    transfer_mj: float | None
    promotion_mj: float
    tail_mj: float
    totals_known: bool

    @classmethod
    def of(cls, f: dict[str, Any], power_w: float, radio: RadioModel, used_radio: bool,
           promotion_mj: float | None) -> EnergyResult:
        """From the record's fields `f`: compute, transfer, promotion and the tail known so far (the wait for
        the answer). `used_radio`: the request reached its radio's start."""
        compute = round(compute_energy_mj(power_w, (f.get("head_ms") or 0) + (f.get("encode_ms") or 0)), 4)
        transfer: float | None = 0.0 if not used_radio else None
        if used_radio and radio.known:  # the bytes on the air: not the promotion before them nor the DRX wait after
            transfer = round(radio_transfer_mj(
                radio, f.get("bytes_up") or 0, max(0.0, (f.get("uplink_ms") or 0) - (f.get("rrc_promotion_ms") or 0)),
                f.get("bytes_down") or 0, max(0.0, (f.get("downlink_ms") or 0) - (f.get("rrc_drx_ms") or 0))), 4)
        # between the last uplink byte and the answer (its DRX wait included) the radio is idle: tail power
        idle_ms = (f.get("server_ms") or 0.0) + (f.get("rrc_drx_ms") or 0.0)
        tail = round(tail_energy_mj(radio, idle_ms), 4) if used_radio else 0.0
        return cls(compute, transfer, round(promotion_mj or 0.0, 4), tail, radio.known or not used_radio)

    def with_tail(self, tail_mj: float) -> EnergyResult:
        """The radio tail that ran after the request ended, now known (only a request that used the radio)."""
        return replace(self, tail_mj=round(self.tail_mj + tail_mj, 4))

    def fields(self) -> dict[str, Any]:
        """energy_radio = transfer + promotion + tail; unknown radio coefficients leave both totals unknown."""
        radio = (self.transfer_mj or 0.0) + self.promotion_mj + self.tail_mj
        known = self.totals_known
        return {"energy_compute_mj": self.compute_mj, "energy_transfer_mj": self.transfer_mj,
                "energy_promotion_mj": self.promotion_mj, "energy_tail_mj": self.tail_mj,
                "energy_radio_mj": round(radio, 4) if known else None,
                "energy_mj": round(self.compute_mj + radio, 4) if known else None}
