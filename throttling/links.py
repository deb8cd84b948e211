"""Which link backend a run uses, and what each side's userspace shaper still does under it.

`userspace`: the shaper does rate, delay, jitter and loss on the real bytes.
`tc`: the kernel does the rate (tbf per device and direction in namespaces);
netem does delay, jitter and loss where the kernel has it, otherwise the
userspace shaper still does those. `auto` picks tc when a probe shows it works
here and falls back to userspace with the reason. The chosen mechanism is
written into every run's output.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from throttling.netns import probe
from throttling.shaper import LinkDirection

USERSPACE_MECHANISM = ("userspace shaper (token-bucket rate, propagation delay, jitter, loss as "
                       "retransmission delay, applied to the real bytes on each device's TCP socket)")


MESSAGE_DELIVERY = ("; MESSAGE delivery (throttling.delivery: message): each message's bytes are written at once "
                    "when its last byte would arrive, so completion times are the link's but packet spacing is not")


class BackendUnavailable(RuntimeError):
    """The topology asks for a backend this machine cannot provide."""


@dataclass(frozen=True)
class LinkBackend:
    name: str  # "userspace" | "tc"
    netem: bool = False
    reason: str = ""
    subnet: str = ""
    delivery: str = "packet"  # throttling.delivery: how the userspace shaper writes a message

    def describe(self) -> str:
        return self._mechanism() + (MESSAGE_DELIVERY if self.delivery == "message" else "")

    def _mechanism(self) -> str:
        if self.name == "userspace":
            return USERSPACE_MECHANISM + (f" [{self.reason}]" if self.reason else "")
        rest = ("netem (delay, jitter, loss)" if self.netem else
                "delay, jitter and loss by the userspace shaper (no sch_netem in this kernel)")
        return (f"kernel tc: tbf per device and direction on veth pairs in network namespaces "
                f"({self.subnet}) for the rate (traced links: the rate is set from the trace every "
                f"throttling.trace_update_ms); {rest}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def choose_backend(requested: str, subnet: str, delivery: str = "packet") -> LinkBackend:
    if requested == "userspace":
        return LinkBackend("userspace", delivery=delivery)

    support = probe()
    if support.usable:
        return LinkBackend("tc", support.netem, support.reason, subnet, delivery)
    if requested == "tc":
        raise BackendUnavailable(f"throttling.backend is tc, but {support.reason}")
    return LinkBackend("userspace", reason=f"auto: tc not usable here: {support.reason}", delivery=delivery)


def userspace_part(direction: LinkDirection, backend: LinkBackend) -> LinkDirection:
    """What the userspace shaper still does for a link under `backend`."""
    if backend.name != "tc":
        return direction
    if backend.netem:  # the kernel does everything; the shaper only passes bytes through
        return dataclasses.replace(direction, kernel_rate=True, delay_ms=0.0, jitter_ms=0.0, loss_pct=0.0)
    return dataclasses.replace(direction, kernel_rate=True)
