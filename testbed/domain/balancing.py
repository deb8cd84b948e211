"""Which cloud replica a device sends a request to.

Policies, chosen with `cloud.load_balancing`:
- `static`: device i always uses replica i mod R, over one connection (the default).
- `round_robin`: each device cycles over the replicas.
- `least_outstanding`: the replica with the fewest of this device's requests in flight plus
  the queue depth that replica last reported to it.
- `power_of_two`: two replicas drawn at random, and the one with the lower load by that measure
  (Mitzenmacher's "power of two choices", as in Ray Serve's router).

A device knows only its own requests in flight and what each replica reported in its last
answer: real clients have no global view either. Pure logic, so it is unit-tested on its own.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

POLICIES = ("static", "round_robin", "least_outstanding", "power_of_two")


class ReplicaChooser:
    def __init__(self, policy: str, replicas: int, device_id: int, seed: int = 0):
        if policy not in POLICIES:
            raise ValueError(f"unknown load-balancing policy {policy!r}; allowed: {', '.join(POLICIES)}")
        if replicas < 1:
            raise ValueError("need at least one replica")
        self.policy, self.replicas, self.device_id = policy, replicas, device_id
        self._next = device_id % replicas
        self._rng = random.Random(f"{seed}:{device_id}")

    def connects_to(self) -> list[int]:
        """Replicas this device opens a connection to."""
        return [self.device_id % self.replicas] if self.policy == "static" else list(range(self.replicas))

    def pick(self, in_flight: Sequence[int], reported_queue: Sequence[int]) -> int:
        """Index into connects_to() for the next request."""
        if self.policy == "static" or self.replicas == 1:
            return 0
        if self.policy == "round_robin":
            choice, self._next = self._next, (self._next + 1) % self.replicas
            return choice
        load = [in_flight[i] + reported_queue[i] for i in range(self.replicas)]
        if self.policy == "least_outstanding":
            low = min(load)
            return self._rng.choice([i for i, x in enumerate(load) if x == low])
        a, b = self._rng.sample(range(self.replicas), 2)
        return a if load[a] <= load[b] else b
