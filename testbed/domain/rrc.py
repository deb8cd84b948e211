"""RRC state machine of one device's radio: the time a transfer waits for the radio, from the device's own traffic.

A cellular radio sleeps between bursts. After its last transfer it walks down the *tail*: LTE's continuous
reception (the DRX inactivity timer), short DRX, long DRX, then RRC_IDLE; 3G's DCH, FACH, then IDLE; WiFi's
active tail, then power save. Each tail phase is one `RrcPhase` beside its (duration, power) in
`testbed.domain.energy.RadioModel.tail`, so the energy model and the link read the same timeline:

- an uplink transfer that starts in RRC_IDLE waits `promotion_ms` before its first byte (IDLE -> CONNECTED);
  one that starts in a phase with its own promotion (3G FACH -> DCH) waits that phase's `promotion_ms`;
  one that starts while the radio is connected waits nothing;
- a downlink packet that arrives in a DRX phase (`cycle_ms` > 0) waits for the next on-duration (`on_ms` at
  the start of each cycle, cycles counted from the start of the phase); one that arrives in idle waits for
  the next paging on-duration (`RadioModel.idle`) and then the promotion.

The device's clock is the only clock here (seconds); the cycles are laid from the end of its last transfer.
A radio whose RRC timers have no checked source (`RadioModel.rrc_known` False) reports its waits as unknown
(None), never as 0. Pure: no Ray, no torch, no I/O.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from testbed.domain.energy import RadioModel

IDLE = "idle"
CONNECTED = "connected"


@dataclass(frozen=True)
class RrcPhase:
    """How a radio listens in one state: continuously (cycle_ms 0) or `on_ms` at the start of every `cycle_ms`;
    and what it takes to send from it (`promotion_ms` at `promotion_mw`; 0: it can send at once)."""

    state: str = ""
    cycle_ms: float = 0.0
    on_ms: float = 0.0
    promotion_ms: float = 0.0
    promotion_mw: float = 0.0

    @property
    def promotion_mj(self) -> float:
        return self.promotion_mw * self.promotion_ms / 1000.0


@dataclass(frozen=True)
class RrcStart:
    """What the radio did when a request's first byte was ready: its state then, the promotion it paid
    (time and energy) and the tail energy the previous request still owed (None: none owed)."""

    state: str
    promotion_ms: float | None  # None: the radio's RRC timers are unknown
    promotion_mj: float
    owed_tail_mj: float | None


def phase_at(radio: RadioModel, idle_ms: float) -> tuple[int | None, float]:
    """(index of the tail phase, ms into it) `idle_ms` after the last transfer; (None, ms into idle) past the tail."""
    into = max(0.0, idle_ms)
    for k, (ms, _) in enumerate(radio.tail):
        if into < ms:
            return k, into
        into -= ms
    return None, into


def state_at(radio: RadioModel, idle_ms: float) -> str:
    k, _ = phase_at(radio, idle_ms)
    return IDLE if k is None else radio.phase(k).state or f"tail{k}"


def uplink_promotion(radio: RadioModel, idle_ms: float) -> tuple[str, float, float]:
    """(state, promotion ms, promotion mJ) of a transfer that starts `idle_ms` after the last one."""
    k, _ = phase_at(radio, idle_ms)
    if k is None:
        return IDLE, radio.promotion_ms, radio.promotion_mj
    phase = radio.phase(k)
    return phase.state or f"tail{k}", phase.promotion_ms, phase.promotion_mj


def _to_on_duration_ms(into_ms: float, phase: RrcPhase) -> float:
    if phase.cycle_ms <= 0:
        return 0.0
    pos = into_ms % phase.cycle_ms
    return 0.0 if pos < phase.on_ms else phase.cycle_ms - pos


def downlink_wait_ms(radio: RadioModel, idle_ms: float) -> float:
    """How long a downlink packet arriving `idle_ms` after the last transfer waits until the radio listens."""
    k, into = phase_at(radio, idle_ms)
    if k is None:  # idle: the next paging occasion, then the promotion to connected
        return _to_on_duration_ms(into, radio.idle) + radio.promotion_ms
    return _to_on_duration_ms(into, radio.phase(k))


def mean_downlink_wait_ms(radio: RadioModel, idle_ms: float) -> float:
    """The DRX wait expected for a packet `idle_ms` after the last transfer when its phase in the cycle is
    unknown (uniform): (cycle - on)^2 / (2 cycle) in a DRX phase; paging + promotion in idle."""
    k, _ = phase_at(radio, idle_ms)
    phase = radio.idle if k is None else radio.phase(k)
    wait = (phase.cycle_ms - phase.on_ms) ** 2 / (2 * phase.cycle_ms) if phase.cycle_ms > 0 else 0.0
    return wait + (radio.promotion_ms if k is None else 0.0)


@dataclass(frozen=True)
class RrcExpectation:
    promotion_ms: float
    promotion_mj: float
    drx_ms: float


def expected_rrc(radio: RadioModel, idle_ms: float | None, gap_ms: float, busy_ms: float, poisson: bool,
                 answer_idle_ms: float) -> RrcExpectation:
    """What the RRC states add to one request, for the split predictions (testbed.domain.split_policy).

    idle_ms: the radio's idle time when the first byte is ready, if known (the dynamic policy knows its radio);
    otherwise from the arrivals: the gap after a request that kept the radio busy `busy_ms` (periodic: promoted
    when the gap outlasts the tail; Poisson: with probability exp(-(tail + busy) / gap)). answer_idle_ms: the
    time from the last uplink byte to the answer (server + propagation), for its DRX wait.
    """
    if idle_ms is not None:
        _, ms, mj = uplink_promotion(radio, idle_ms)
        return RrcExpectation(ms, mj, mean_downlink_wait_ms(radio, answer_idle_ms))
    if poisson:
        share = math.exp(-(radio.tail_ms + busy_ms) / gap_ms) if gap_ms > 0 else 0.0
    else:
        share = 1.0 if gap_ms - busy_ms >= radio.tail_ms else 0.0
    promoted = RrcExpectation(radio.promotion_ms, radio.promotion_mj, 0.0)
    if share < 1.0:  # the state a request finds within the tail: the mean over the gap's phases
        _, within_ms, within_mj = uplink_promotion(radio, max(0.0, gap_ms - busy_ms) if not poisson else 0.0)
    else:
        within_ms, within_mj = 0.0, 0.0
    return RrcExpectation(share * promoted.promotion_ms + (1 - share) * within_ms,
                          share * promoted.promotion_mj + (1 - share) * within_mj,
                          mean_downlink_wait_ms(radio, answer_idle_ms))


class RrcMachine:
    """One device's radio over time, driven by its own traffic.

    `start(t)` when a request's first byte is ready (returns the promotion it waits for), `activity(t)` when a
    transfer's last byte has crossed (the uplink done, an answer received), `end(t)` when a request no longer
    uses the radio. `enabled` False (`throttling.rrc: off`): the states are still walked for the energy model,
    but no transfer waits for them. Times are seconds on the device's clock.
    """

    def __init__(self, radio: RadioModel, enabled: bool = True):
        self.radio = radio
        self.enabled = enabled
        self.active = 0  # requests using the radio now
        self.last_end = -math.inf  # the last request's end: where its tail starts
        self.last_activity = -math.inf  # the last transfer's last byte (any request's)

    def idle_ms(self, t: float) -> float:
        return (t - self.last_activity) * 1000.0

    def _promotion(self, t: float) -> tuple[str, float, float]:
        if self.active:
            return CONNECTED, 0.0, 0.0
        return uplink_promotion(self.radio, self.idle_ms(t))

    def wait_ms(self, ms: float) -> float | None:
        """The time a transfer is held for the radio: `ms` when RRC is on and known; 0 when off; None unknown."""
        if not self.enabled:
            return 0.0
        return ms if self.radio.rrc_known else None

    def downlink_wait(self, t: float) -> float | None:
        """The DRX (or paging + promotion) wait of a downlink packet that reaches the device at `t`."""
        return self.wait_ms(downlink_wait_ms(self.radio, self.idle_ms(t)))

    def activity(self, t: float) -> None:
        self.last_activity = max(self.last_activity, t)

    def reset(self) -> None:
        """A new phase: the radio starts idle (phases are separate experiments)."""
        self.active, self.last_end, self.last_activity = 0, -math.inf, -math.inf
