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


# ARO's LTE RRC_CONNECTED tail after the last packet: 0.1 s continuous reception at 1.2 W
# (INACTIVITY_TIMER, LTE_BETA), 0.02 s short DRX and 10 s long DRX, each a 2 ms ping at 1.68 W
# every 20 ms / 40 ms with the tail base power 1.06 W in between (T_SHORT_DRX, T_LONG_DRX,
# T_DRX_PING, T_*_DRX_PING_PERIOD, P_*_DRX_PING, P_TAIL). Promotion: 0.26 s at 1.21 W.
LTE_TAIL = [
    {"ms": 100.0, "mw": 1200.0},
    {"ms": 20.0, "mw": round(_drx_mw(2.0, 20.0, 1680.0, 1060.0), 2)},
    {"ms": 10_000.0, "mw": round(_drx_mw(2.0, 40.0, 1680.0, 1060.0), 2)},
]

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
            # ARO 3G defaults (its i997 profile): IDLE->DCH promotion 2.0 s (average) at 0.53 W;
            # tail: DCH 5 s at 0.70 W, then FACH 12 s at 0.35 W.
            "promotion_ms": 2000.0,
            "promotion_mw": 530.0,
            "tail": [{"ms": 5000.0, "mw": 700.0}, {"ms": 12_000.0, "mw": 350.0}],
            "source": f"alpha_u, beta: {HUANG2012} via {BOTTLENET}; alpha_d: {HUANG2012}, unchecked; "
                      f"promotion, tail: {ARO} (3G)",
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
            "promotion_ms": 260.0,  # ARO T_PROMOTION
            "promotion_mw": 1210.0,  # ARO P_PROMOTION
            "tail": LTE_TAIL,  # ARO, see LTE_TAIL
            "source": f"alpha_u, alpha_d, beta: {HUANG2012} via {BOTTLENET} and {ARO}; promotion, tail: {ARO}",
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
            # ARO WiFi defaults: no promotion; a 0.25 s tail at the active power 0.403 W
            "promotion_ms": 0.0,
            "promotion_mw": 0.0,
            "tail": [{"ms": 250.0, "mw": 403.0}],
            "source": f"alpha_u, beta: {HUANG2012} via {BOTTLENET}; alpha_d: {HUANG2012}, unchecked; "
                      f"tail: {ARO} (WiFi)",
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
            "promotion_ms": 0.0,
            "promotion_mw": 0.0,
            "tail": [],
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
