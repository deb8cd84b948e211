"""Built-in named profiles: networks (link + radio power model) and device classes.

A topology names a profile (`network: lte`, `device_class: phone`) and may
override any field of it (`networks: {lte: {uplink_mbps: 10}}`). Every number
here carries its source next to it; where no published figure exists, the
profile says "assumed" and the value is meant to be overridden.
"""

from __future__ import annotations

from typing import Any

# Radio power model P = alpha_u * t_u + alpha_d * t_d + beta (mW, t in Mbit/s)
# from J. Huang, F. Qian, A. Gerber, Z. M. Mao, S. Sen, O. Spatscheck, "A Close
# Examination of Performance and Power Characteristics of 4G LTE Networks",
# MobiSys 2012 (data-transfer power model). alpha_u and beta were checked against
# the parameter table of BottleNet (Eshratifar, Esmaili, Pedram, ISLPED 2019),
# which quotes them; alpha_d is the value as widely quoted from the same paper and
# was not checked against the paper's table here (see docs/sources.md).
HUANG2012 = "Huang et al., MobiSys 2012 (alpha_u, beta as quoted by BottleNet, ISLPED 2019)"

# Uplink rates 1.1 / 5.85 / 18.88 Mbit/s: the 3G / 4G / WiFi rates of BottleNet's
# parameter table (Eshratifar et al., ISLPED 2019), which cites the 2017 US
# Speedtest market report.
UPLINK_SOURCE = "BottleNet (Eshratifar et al., ISLPED 2019) parameter table"

NETWORKS: dict[str, dict[str, Any]] = {
    "3g": {
        "uplink_mbps": 1.1,  # UPLINK_SOURCE
        "downlink_mbps": 2.0,  # assumed: Huang 2012 Fig. 7 3G medians are 1-2 Mbit/s
        "rtt_ms": 100.0,  # assumed, typical HSPA RTT
        "jitter_ms": 10.0,  # assumed
        "loss_pct": 0.0,
        "radio": {
            "alpha_up_mw_per_mbps": 868.98,
            "alpha_down_mw_per_mbps": 122.12,
            "beta_mw": 817.88,
            "source": HUANG2012,
        },
        "source": f"uplink: {UPLINK_SOURCE}; radio: {HUANG2012}; others assumed",
    },
    "lte": {
        "uplink_mbps": 5.85,  # UPLINK_SOURCE
        "downlink_mbps": 13.0,  # Huang 2012: median LTE downlink 13 Mbit/s (abstract)
        "rtt_ms": 70.0,  # Huang 2012 reports LTE RTTs of ~70 ms (4GTest); assumed round value
        "jitter_ms": 5.0,  # assumed
        "loss_pct": 0.0,
        "radio": {
            "alpha_up_mw_per_mbps": 438.39,
            "alpha_down_mw_per_mbps": 51.97,
            "beta_mw": 1288.04,
            "source": HUANG2012,
        },
        "source": f"uplink: {UPLINK_SOURCE}; downlink, radio: {HUANG2012}; jitter assumed",
    },
    "wifi": {
        "uplink_mbps": 18.88,  # UPLINK_SOURCE
        "downlink_mbps": 30.0,  # assumed
        "rtt_ms": 20.0,  # assumed
        "jitter_ms": 2.0,  # assumed
        "loss_pct": 0.0,
        "radio": {
            "alpha_up_mw_per_mbps": 283.17,
            "alpha_down_mw_per_mbps": 137.01,
            "beta_mw": 132.86,
            "source": HUANG2012,
        },
        "source": f"uplink: {UPLINK_SOURCE}; radio: {HUANG2012}; others assumed",
    },
}

# Device classes. `speed` is relative to the host that runs the emulation
# (0.5 = the head takes twice as long as on this host); each run calibrates the
# host's head time and stretches compute to it. Power is the compute power drawn
# while the head runs.
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
        "source": "power: NVIDIA Jetson TX2 Max-Q mode, 7.5 W module budget; speed assumed",
    },
    "raspberry_pi4": {
        "speed": 0.25,
        "compute_power_w": 6.4,
        "source": "assumed: Raspberry Pi 4B board power under full CPU load; speed assumed",
    },
}
