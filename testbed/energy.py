"""Device energy per request: compute + radio transfer (first version).

compute_mj = P_compute[W] * t_compute[ms]                     (W*ms = mJ)
radio_mj   = P_up * t_up + P_down * t_down, with
    P_up   = alpha_u * thr_up   + beta    (mW, thr in Mbit/s, during the uplink)
    P_down = alpha_d * thr_down + beta    (mW, during the downlink)
so P_up * t_up = alpha_u * Mbit_up + beta * t_up (mW*s = mJ).

The radio model is Huang et al., MobiSys 2012 (coefficients in
`testbed.profiles`). RRC promotion and tail energy come with the full energy
model (profiles issue); this version counts transfer energy only.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RadioModel:
    alpha_up_mw_per_mbps: float
    alpha_down_mw_per_mbps: float
    beta_mw: float


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


def radio_energy_mj(radio: RadioModel, bytes_up: int, uplink_ms: float,
                    bytes_down: int, downlink_ms: float) -> float:
    return (transfer_energy_mj(radio.alpha_up_mw_per_mbps, radio.beta_mw, bytes_up, uplink_ms)
            + transfer_energy_mj(radio.alpha_down_mw_per_mbps, radio.beta_mw, bytes_down, downlink_ms))
