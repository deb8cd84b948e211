"""Built-in named profiles: networks (link + radio power model) and device classes.

A topology names a profile (`network: lte`, `device_class: phone`) and may
override any field of it (`networks: {lte: {uplink_mbps: 10}}`). Every number
here carries its source next to it; where no published figure exists, the
profile says "assumed" (meant to be overridden) or leaves the value null
(unknown: the testbed then says it cannot estimate that quantity).
docs/sources.md records how far each value was checked.
"""

from __future__ import annotations

from typing import Any

# Radio power model P = alpha_u * t_u + alpha_d * t_d + beta (mW, t in Mbit/s) from J. Huang,
# F. Qian, A. Gerber, Z. M. Mao, S. Sen, O. Spatscheck, "A Close Examination of Performance and
# Power Characteristics of 4G LTE Networks", MobiSys 2012. Checked against two quotations:
#   BOTTLENET: the parameter table of BottleNet (Eshratifar, Esmaili, Pedram, ISLPED 2019),
#              which quotes alpha_u and beta for 3G, LTE and WiFi;
#   ARO:       AT&T's Application Resource Optimizer (the RRC/energy model co-developed with the
#              paper's authors), com.att.aro.core.configuration.impl.ProfileFactoryImpl defaults,
#              which carry the LTE alpha_u, alpha_d, promotion and tail parameters.
HUANG2012 = "Huang et al., MobiSys 2012"
BOTTLENET = "BottleNet (Eshratifar et al., ISLPED 2019) parameter table"
ARO = "AT&T ARO ProfileFactoryImpl defaults"

# Uplink rates 1.1 / 5.85 / 18.88 Mbit/s: the 3G / 4G / WiFi rates of BottleNet's parameter
# table, which cites the 2017 US Speedtest market report.


def _drx_mw(ping_ms: float, period_ms: float, ping_mw: float, sleep_mw: float) -> float:
    """Mean power of a DRX cycle: a ping of `ping_ms` at `ping_mw` every `period_ms`, asleep at `sleep_mw`."""
    return (ping_ms * ping_mw + (period_ms - ping_ms) * sleep_mw) / period_ms


def _phase(state: str, ms: float, mw: float, **timing: float) -> dict[str, Any]:
    return {"state": state, "ms": ms, "mw": mw, **timing}


# RRC parameter sets by source (networks.<name>.radio.profile). Each is the promotion from idle, the tail
# phases (duration, mean power, how the radio listens, what sending from it costs) and idle listening.
# docs/sources.md gives each value with the place it was read, marked checked or recalled.
ARO_REPO = "AT&T ARO (github.com/attdevsupport/ARO)"


def _rrc(promotion_ms: float, promotion_mw: float, tail: list[dict[str, Any]], source: str,
         idle: tuple[float, float] = (0.0, 0.0), known: bool = True) -> dict[str, Any]:
    """One RRC parameter set: promotion from idle, tail phases, idle listening (cycle ms, on ms), its source."""
    return {"promotion_ms": promotion_ms, "promotion_mw": promotion_mw, "tail": tail,
            "idle": {"cycle_ms": idle[0], "on_ms": idle[1]}, "rrc_known": known, "rrc_source": source}


def _lte_tail(cr_mw: float, long_ms: float, on_ms: float, on_mw: tuple[float, float], base_mw: float) -> list[Any]:
    """Continuous reception 100 ms, short DRX 20 ms (20 ms cycle), long DRX `long_ms` (40 ms cycle)."""
    return [_phase("continuous_reception", 100.0, cr_mw),
            _phase("short_drx", 20.0, round(_drx_mw(on_ms, 20.0, on_mw[0], base_mw), 2), cycle_ms=20.0, on_ms=on_ms),
            _phase("long_drx", long_ms, round(_drx_mw(on_ms, 40.0, on_mw[1], base_mw), 2), cycle_ms=40.0, on_ms=on_ms)]


RADIO_PROFILES: dict[str, dict[str, dict[str, Any]]] = {
    "lte": {
        # Huang et al. 2012, Table 3 (recalled; ARO, co-developed with the authors, agrees on every value it
        # shares, in rounded form): promotion 260.1 ms at 1210.7 mW; tail 11.576 s at the tail base power
        # 1060 mW with 1 ms on-durations at 1680.2 / 1680.1 mW every 20 ms (short DRX) / 40 ms (long DRX);
        # DRX inactivity timer 100 ms and short DRX 20 ms (as ARO's INACTIVITY_TIMER, T_SHORT_DRX); idle
        # paging 43.2 ms every 1280 ms.
        "huang2012": _rrc(260.1, 1210.7, _lte_tail(1060.0, 11_456.0, 1.0, (1680.2, 1680.1), 1060.0),
                          f"{HUANG2012} Table 3 (recalled, see docs/sources.md); inactivity and short DRX timers: "
                          f"{ARO_REPO} lte.conf", (1280.0, 43.2)),
        # ARO lte.conf (checked): T_PROMOTION 0.26 s at P_PROMOTION 1.21 W; INACTIVITY_TIMER 0.1 s at LTE_BETA
        # 1.2 W; T_SHORT_DRX 0.02 s and T_LONG_DRX 10 s, each a T_DRX_PING 2 ms ping at 1.68 W every 20 / 40 ms
        # with P_TAIL 1.06 W between; idle ping 0.043 s every 1.28 s.
        "aro": _rrc(260.0, 1210.0, _lte_tail(1200.0, 10_000.0, 2.0, (1680.0, 1680.0), 1060.0),
                    f"{ARO_REPO} ARODataAnalyzer/src/lte.conf (checked)", (1280.0, 43.0)),
    },
    "3g": {
        # ARO's 3G profile i997.conf (Samsung i997, AT&T; checked): IDLE->DCH 2.0 s (average) at 0.65 W;
        # DCH 4 s at 1.30 W, then FACH 10 s at 0.30 W; FACH->DCH 1.5 s (average) at 0.80 W.
        "aro": _rrc(2000.0, 650.0, [_phase("dch", 4000.0, 1300.0),
                                    _phase("fach", 10_000.0, 300.0, promotion_ms=1500.0, promotion_mw=800.0)],
                    f"{ARO_REPO} ARODataAnalyzer/src/i997.conf (checked)"),
        # ARO's hard-coded fallbacks when no profile file is read (ProfileFactoryImpl.create3G; checked):
        # IDLE->DCH 2.0 s at 0.53 W; DCH 5 s at 0.70 W; FACH 12 s at 0.35 W; FACH->DCH 1.5 s at 0.55 W.
        "aro_fallback": _rrc(2000.0, 530.0, [_phase("dch", 5000.0, 700.0),
                                             _phase("fach", 12_000.0, 350.0, promotion_ms=1500.0, promotion_mw=550.0)],
                             "AT&T VideoOptimizer (ARO) ProfileFactoryImpl.create3G defaults (checked)"),
        # Huang et al. 2012 Table 3, 3G column (recalled, not checked): promotion 582.1 ms at 659.4 mW; DCH tail
        # 8088.2 ms at 803.9 mW; FACH tail 824.2 ms at 601.3 mW; idle DRX 55.4 ms every 5112.4 ms. The table
        # has no FACH->DCH promotion: ARO i997's 1.5 s at 0.80 W stands in.
        "huang2012": _rrc(582.1, 659.4, [_phase("dch", 8088.2, 803.9),
                                         _phase("fach", 824.2, 601.3, promotion_ms=1500.0, promotion_mw=800.0)],
                          f"{HUANG2012} Table 3 (recalled, not checked); FACH->DCH: {ARO_REPO} i997.conf",
                          (5112.4, 55.4)),
    },
    "wifi": {
        # ARO WiFi.conf (checked): no promotion; WIFI_TAIL_TIME 0.25 s at POWER_WIFI_ACTIVE 0.403 W. ARO does
        # not model power-save beacons: idle listening is left out (a downlink answer is never held).
        "aro": _rrc(0.0, 0.0, [_phase("active_tail", 250.0, 403.0)],
                    f"{ARO_REPO} ARODataAnalyzer/src/WiFi.conf (checked)"),
        # Huang et al. 2012 Table 3, WiFi column (recalled, not checked): promotion 79.1 ms at 124.4 mW; tail
        # 238.1 ms at 119.3 mW; power save: a 7.6 ms beacon every 308.2 ms.
        "huang2012": _rrc(79.1, 124.4, [_phase("active_tail", 238.1, 119.3)],
                          f"{HUANG2012} Table 3 (recalled, not checked)", (308.2, 7.6)),
    },
    # 5G: no RRC timer or power figure was checked for this testbed (Narayanan et al., SIGCOMM'21 measure NSA
    # and SA state machines; their values were not read). The waits are reported unknown, never 0.
    **{tech: {"unknown": _rrc(0.0, 0.0, [], "no checked source: RRC waits unknown", known=False)}
       for tech in ("5g_nsa", "5g_sa")},
}


def _radio(technology: str, profile: str) -> dict[str, Any]:
    return {"technology": technology, "profile": profile, **RADIO_PROFILES[technology][profile]}


NETWORKS: dict[str, dict[str, Any]] = {
    "3g": {
        "uplink_mbps": 1.1,  # BOTTLENET
        "downlink_mbps": 2.0,  # assumed: Huang 2012 Fig. 7 3G medians are 1-2 Mbit/s
        "rtt_ms": 100.0,  # assumed, typical HSPA RTT
        "jitter_ms": 10.0,  # assumed
        "loss_pct": 0.0,
        "radio": {
            "alpha_up_mw_per_mbps": 868.98,  # HUANG2012 via BOTTLENET
            "alpha_down_mw_per_mbps": 122.12,  # HUANG2012 as widely quoted; NOT checked (docs/sources.md)
            "beta_mw": 817.88,  # HUANG2012 via BOTTLENET
            **_radio("3g", "aro"),  # ARO's i997 profile (its hard-coded fallbacks: profile aro_fallback)
            "source": f"alpha_u, beta: {HUANG2012} via {BOTTLENET}; alpha_d: {HUANG2012}, unchecked; "
                      f"promotion, tail: see rrc_source",
        },
        "source": f"uplink: {BOTTLENET}; others assumed",
    },
    "lte": {
        "uplink_mbps": 5.85,  # BOTTLENET
        "downlink_mbps": 13.0,  # HUANG2012: median LTE downlink 13 Mbit/s (abstract)
        "rtt_ms": 70.0,  # assumed round value (Huang 2012 reports LTE RTTs of this order)
        "jitter_ms": 5.0,  # assumed
        "loss_pct": 0.0,
        "radio": {
            "alpha_up_mw_per_mbps": 438.39,  # HUANG2012 via BOTTLENET and ARO
            "alpha_down_mw_per_mbps": 51.97,  # HUANG2012 via ARO
            "beta_mw": 1288.04,  # HUANG2012 via BOTTLENET
            **_radio("lte", "huang2012"),  # the paper's RRC values; ARO's: profile aro
            "source": f"alpha_u, alpha_d, beta: {HUANG2012} via {BOTTLENET} and {ARO}; promotion, tail: see "
                      "rrc_source",
        },
        "source": f"uplink: {BOTTLENET}; downlink: {HUANG2012}; rtt, jitter assumed",
    },
    "wifi": {
        "uplink_mbps": 18.88,  # BOTTLENET
        "downlink_mbps": 30.0,  # assumed
        "rtt_ms": 20.0,  # assumed
        "jitter_ms": 2.0,  # assumed
        "loss_pct": 0.0,
        "radio": {
            "alpha_up_mw_per_mbps": 283.17,  # HUANG2012 via BOTTLENET
            "alpha_down_mw_per_mbps": 137.01,  # HUANG2012 as widely quoted; NOT checked (docs/sources.md)
            "beta_mw": 132.86,  # HUANG2012 via BOTTLENET
            **_radio("wifi", "aro"),
            "source": f"alpha_u, beta: {HUANG2012} via {BOTTLENET}; alpha_d: {HUANG2012}, unchecked; "
                      f"promotion, tail: see rrc_source",
        },
        "source": f"uplink: {BOTTLENET}; others assumed",
    },
    "5g": {
        # 5G sub-6 GHz. No published radio power coefficients in the form of this model were
        # found and checked for this profile: alpha/beta are unknown (null), so radio energy is
        # reported as unknown until a topology supplies them (networks.5g.radio.*).
        "uplink_mbps": 30.0,  # assumed
        "downlink_mbps": 200.0,  # assumed
        "rtt_ms": 30.0,  # assumed
        "jitter_ms": 3.0,  # assumed
        "loss_pct": 0.0,
        "radio": {
            "alpha_up_mw_per_mbps": None,
            "alpha_down_mw_per_mbps": None,
            "beta_mw": None,
            **_radio("5g_nsa", "unknown"),
            "source": "no published coefficients checked for 5G: radio energy unknown unless overridden",
        },
        "source": "rates and RTT assumed (no checked source); radio model unknown",
    },
}

# Device classes. `speed` is relative to the host that runs the emulation (0.5 = the head takes
# twice as long as on this host); each run calibrates the host's model time and stretches compute
# to it. `full_model_ms`, where set, is the device's own time for the whole ResNet-50, and the run
# derives the speed from it (absolute profile). Power is the compute power drawn while the model runs.
DEVICE_CLASSES: dict[str, dict[str, Any]] = {
    "host": {
        "speed": 1.0,
        "compute_power_w": 15.0,
        "source": "assumed: a laptop-class CPU package under load",
    },
    "phone": {
        "speed": 0.5,
        "compute_power_w": 2.5,
        "source": "assumed: big-core cluster of a phone SoC under DNN load; override it",
    },
    "jetson_tx2": {
        "speed": 0.5,
        "compute_power_w": 7.5,
        "source": "power: NVIDIA Jetson TX2 Max-Q mode, 7.5 W module budget; speed assumed "
                  "(set full_model_ms to a measured ResNet-50 time for an absolute profile)",
    },
    "raspberry_pi4": {
        "speed": 0.25,
        "compute_power_w": 6.4,
        "source": "assumed: Raspberry Pi 4B board power under full CPU load; speed assumed",
    },
}
