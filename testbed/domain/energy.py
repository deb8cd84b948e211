"""Device energy per request: compute + radio (transfer, RRC promotion, shared tail).

compute_mj   = P_compute[W] * t_compute[ms]                      (W*ms = mJ)
transfer_mj  = (alpha_u * thr_up + beta) * t_up + (alpha_d * thr_down + beta) * t_down
               (mW and Mbit/s, thr = achieved throughput = bits / measured transfer time)
promotion_mj = P_pro * T_pro, paid when a transfer starts on an idle radio (RRC_IDLE -> CONNECTED)
tail_mj      = integral of the tail's power over the idle time the radio spends connected: the
               wait between a request's uplink and its answer, and the time after the answer
               until the next transfer or the end of the tail, whichever comes first.

The tail after a request is shared: when the next request of the same device starts
within it, that request pays no promotion and the previous one is charged only the part
of the tail that actually elapsed. A device sending every 100 ms never leaves the
high-power state; one sending every 30 s pays promotion + the full tail every time.

The states and their timers are `testbed.domain.rrc`: the same timeline tells the link how long a transfer waits
for the radio (promotion, DRX) and tells this module which request pays which energy.

The radio model is Huang et al., MobiSys 2012; the coefficients and their sources are in
`testbed.domain.profiles` and docs/sources.md. A network without published coefficients has
`RadioModel.known == False`, and its radio energy is reported as unknown (None), never 0.
"""

from __future__ import annotations

from dataclasses import dataclass

from testbed.domain.rrc import IDLE, RrcMachine, RrcPhase, RrcStart, uplink_promotion


@dataclass(frozen=True)
class RadioModel:
    alpha_up_mw_per_mbps: float | None
    alpha_down_mw_per_mbps: float | None
    beta_mw: float | None
    promotion_ms: float = 0.0
    promotion_mw: float = 0.0
    tail: tuple[tuple[float, float], ...] = ()  # (duration ms, power mW) phases after the last transfer
    phases: tuple[RrcPhase, ...] = ()  # how the radio listens in each tail phase (missing: continuously)
    idle: RrcPhase = RrcPhase(IDLE)  # RRC_IDLE / power save: its paging or beacon cycle
    rrc_known: bool = True  # False: no checked source for the RRC timers; their waits are reported unknown
    profile: str = ""  # the named parameter set (networks.<name>.radio.profile)

    def phase(self, k: int) -> RrcPhase:
        return self.phases[k] if k < len(self.phases) else RrcPhase()

    @property
    def known(self) -> bool:
        return None not in (self.alpha_up_mw_per_mbps, self.alpha_down_mw_per_mbps, self.beta_mw)

    @property
    def tail_ms(self) -> float:
        return sum(ms for ms, _ in self.tail)

    @property
    def promotion_mj(self) -> float:
        return self.promotion_mw * self.promotion_ms / 1000.0


def compute_energy_mj(power_w: float, compute_ms: float) -> float:
    return power_w * compute_ms


def transfer_energy_mj(alpha_mw_per_mbps: float, beta_mw: float, nbytes: int, ms: float) -> float:
    """Energy of one transfer of `nbytes` that took `ms` (achieved throughput = bits / time)."""
    if ms <= 0 or nbytes <= 0:
        return 0.0
    seconds = ms / 1000.0
    mbit = nbytes * 8 / 1e6
    throughput_mbps = mbit / seconds
    return (alpha_mw_per_mbps * throughput_mbps + beta_mw) * seconds


def radio_transfer_mj(radio: RadioModel, bytes_up: int, uplink_ms: float,
                      bytes_down: int, downlink_ms: float) -> float:
    assert radio.known, "radio coefficients unknown"
    assert radio.alpha_up_mw_per_mbps is not None and radio.alpha_down_mw_per_mbps is not None
    assert radio.beta_mw is not None
    return (transfer_energy_mj(radio.alpha_up_mw_per_mbps, radio.beta_mw, bytes_up, uplink_ms)
            + transfer_energy_mj(radio.alpha_down_mw_per_mbps, radio.beta_mw, bytes_down, downlink_ms))


def tail_energy_mj(radio: RadioModel, idle_ms: float) -> float:
    """Energy of the first `idle_ms` of the tail (all of it when idle_ms reaches the tail's end)."""
    left, total = max(0.0, idle_ms), 0.0
    for ms, mw in radio.tail:
        step = min(left, ms)
        total += step * mw / 1000.0
        left -= step
        if left <= 0:
            break
    return total


class RadioAccount(RrcMachine):
    """One device's radio energy on its RRC timeline: who pays promotion, and how much tail each request gets.

    `start(t)` when a request's first byte is ready; `end(t)` when its last byte has arrived.
    A request that leaves the radio idle becomes the tail owner; its tail is settled by the next
    `start` (the elapsed idle time, capped at the tail) or by `expire`/`flush` (the full tail).
    Times are seconds on the device's clock.
    """

    def start(self, t: float) -> RrcStart:
        """The request's promotion (state, time, energy) and the tail energy owed by the previous tail owner."""
        if self.active:
            self.active += 1
            return RrcStart("connected", self.wait_ms(0.0), 0.0, None)
        idle_ms = self.idle_ms(t)
        state, promotion_ms, promotion_mj = uplink_promotion(self.radio, idle_ms)
        self.active = 1
        owed = None if self.last_end == -float("inf") else tail_energy_mj(self.radio, (t - self.last_end) * 1000.0)
        return RrcStart(state, self.wait_ms(promotion_ms), promotion_mj, owed)

    def begin(self, t: float) -> tuple[float, float | None]:
        """(promotion mJ for this request, tail mJ owed by the previous tail owner or None if none)."""
        s = self.start(t)
        return s.promotion_mj, s.owed_tail_mj

    def end(self, t: float) -> bool:
        """Record the end of one request's radio use; True when it left the radio idle (it owns the tail)."""
        self.active = max(0, self.active - 1)
        self.last_end = max(self.last_end, t)
        self.activity(t)
        return self.active == 0

    def expired(self, t: float) -> bool:
        """The tail has run out without a new transfer: its owner can be charged in full."""
        return self.active == 0 and (t - self.last_end) * 1000.0 >= self.radio.tail_ms

    def full_tail_mj(self) -> float:
        return tail_energy_mj(self.radio, self.radio.tail_ms)
