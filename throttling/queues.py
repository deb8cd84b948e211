"""What a link does to packets besides clocking them: a bounded queue (drop-tail) and bursty loss (Gilbert-Elliott).

DropTail: the bottleneck's queue holds the packets that are ready but not yet clocked out; a packet that would
take it past `packets` or `bytes` is dropped at the tail, as Mahimahi's `droptail` queue does. The shaper then
resends it after the link's retransmission delay (as TCP would after a loss) and tries the queue again.

GilbertElliott: a two-state Markov chain stepped once per packet (good -> bad with `p_good_bad`, bad -> good
with `p_bad_good`), each state with its own loss probability (`loss_good`, `loss_bad`). Losses come in bursts
of mean length about 1 / p_bad_good when loss_bad is near 1; independent loss is the case p_good_bad = 0.

Both keep their state across the messages of one link direction. Pure: no I/O.
"""

from __future__ import annotations

import random
from collections import deque
from dataclasses import dataclass


@dataclass(frozen=True)
class GeParams:
    p_good_bad: float
    p_bad_good: float
    loss_good: float
    loss_bad: float

    @property
    def mean_loss(self) -> float:
        """The stationary loss rate: the bad state's share weighted by each state's loss."""
        total = self.p_good_bad + self.p_bad_good
        bad = self.p_good_bad / total if total > 0 else 0.0
        return (1 - bad) * self.loss_good + bad * self.loss_bad


class GilbertElliott:
    def __init__(self, params: GeParams, rng: random.Random):
        self.p, self.rng = params, rng
        self.bad = False

    def lost(self) -> bool:
        """Step the chain for one packet; True if that packet is lost."""
        p = self.p
        self.bad = (self.rng.random() >= p.p_bad_good) if self.bad else (self.rng.random() < p.p_good_bad)
        return self.rng.random() < (p.loss_bad if self.bad else p.loss_good)


class DropTail:
    """Occupancy of the bottleneck queue over time: the packets ready at or before `t` and still to depart."""

    def __init__(self, packets: int | None = None, nbytes: int | None = None):
        self.packets, self.nbytes = packets, nbytes
        self._queued: deque[tuple[float, int]] = deque()  # (departure, size), in departure order
        self._bytes = 0

    def _drain(self, t: float) -> None:
        while self._queued and self._queued[0][0] <= t:
            self._bytes -= self._queued.popleft()[1]

    def admits(self, size: int, t: float) -> bool:
        """Whether a packet of `size` ready at `t` fits (call with non-decreasing `t`)."""
        self._drain(t)
        if self.packets is not None and len(self._queued) + 1 > self.packets:
            return False
        return self.nbytes is None or self._bytes + size <= self.nbytes

    def enqueue(self, size: int, departure: float) -> None:
        self._queued.append((departure, size))
        self._bytes += size

    def reset(self) -> None:
        self._queued.clear()
        self._bytes = 0
