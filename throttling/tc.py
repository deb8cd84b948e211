"""tc command builders for the kernel link backend (pure: they return argv lists).

As in Mininet's `TCIntf.bwCmds()`, building a command is kept apart from
running it, so what would be installed is unit-tested without root. The
runner (`throttling.netns`) executes them in batches.

Rates: a topology gives link rates as goodput (what a speed test reports, what
the papers quote). tbf counts whole frames, so the kernel rate is raised by the
per-packet header overhead (Ethernet 14 + IPv4 20 + TCP 32 with timestamps on a
1500-byte MTU: 1514 bytes on the wire carry 1448 bytes of payload).
"""

from __future__ import annotations

MTU_BYTES = 1500
FRAME_BYTES = MTU_BYTES + 14
TCP_PAYLOAD_BYTES = MTU_BYTES - 20 - 32
BURST_BYTES = FRAME_BYTES + 26  # at least one frame
BURST_S = 0.0005  # and half a millisecond of the rate: at 32 Mbit/s a one-frame burst ran 5-8% slow,
# half a millisecond kept 100 KB and 1 MB within 1.5% (measured on veth, this kernel)
MIN_LIMIT_BYTES = 200_000
QUEUE_S = 0.5  # queue up to half a second of data before tbf drops (cellular links buffer deeply)


def wire_rate_mbps(goodput_mbps: float) -> float:
    """The L2 rate that delivers `goodput_mbps` of TCP payload with full-size segments."""
    return goodput_mbps * FRAME_BYTES / TCP_PAYLOAD_BYTES


def burst_bytes_for(goodput_mbps: float) -> int:
    return max(BURST_BYTES, int(wire_rate_mbps(goodput_mbps) * 1e6 / 8 * BURST_S))


def tbf_args(dev: str, goodput_mbps: float, burst_bytes: int | None = None) -> list[str]:
    """Replace the root qdisc of `dev` with a token bucket at the link's rate."""
    burst_bytes = burst_bytes or burst_bytes_for(goodput_mbps)
    rate_kbit = max(1, round(wire_rate_mbps(goodput_mbps) * 1000))
    limit = max(MIN_LIMIT_BYTES, int(goodput_mbps * 1e6 / 8 * QUEUE_S))
    return ["qdisc", "replace", "dev", dev, "root", "handle", "1:", "tbf", "rate", f"{rate_kbit}kbit",
            "burst", str(burst_bytes), "limit", str(limit)]


def tbf_change_args(dev: str, goodput_mbps: float, burst_bytes: int | None = None) -> list[str]:
    """Change the rate in place (trace-driven links follow the trace this way)."""
    args = tbf_args(dev, goodput_mbps, burst_bytes)
    args[1] = "change"
    return args


def netem_args(dev: str, delay_ms: float, jitter_ms: float, loss_pct: float) -> list[str]:
    """netem under the tbf (parent 1:1): delay, jitter (normal) and loss, where the kernel has netem."""
    args = ["qdisc", "replace", "dev", dev, "parent", "1:1", "handle", "10:", "netem",
            "delay", f"{delay_ms:g}ms"]
    if jitter_ms > 0:
        args += [f"{jitter_ms:g}ms", "distribution", "normal"]
    if loss_pct > 0:
        args += ["loss", f"{loss_pct:g}%"]
    return args


def to_batch(commands: list[list[str]]) -> str:
    """Lines for `tc -batch -` / `ip -batch -` (arguments never contain spaces here)."""
    for cmd in commands:
        for arg in cmd:
            if not arg or any(c.isspace() for c in arg):
                raise ValueError(f"batch argument {arg!r} is empty or has white space")
    return "".join(" ".join(cmd) + "\n" for cmd in commands)
