"""`cloud.compute: replay`: a replica that answers after the calibrated tail time, without running the model.

The cloud tier's own path stays real: TCP ingress, frame parsing, the payload's
decode (int8 + zstd or JPEG), the dynamic batcher, the executor hop, the
shaped downlink. Only the network after the cut is replaced: at start the
replica builds the real model and times it on this host for batches of 1 and
`max_batch_size` (the fastest of 3 after a warm-up); each batch then holds the
executor thread (as it would hold the accelerator) for the time interpolated
between the two, divided by `cloud.replay_speed` (how many times faster than
this host the emulated cloud is, e.g. a GPU); the devices' split predictions get
that replayed time too. Answers carry `top1: -1`:
no class is computed.

It exists for density runs: on a 2-core host no real tail keeps up with 1,000
requests/s (ResNet-18's tail at 64x64 pixels does about 840 items/s on one
core, ResNet-50's at 224 about 26), so the emulation's own limits could not
be measured. Every place that names the replica says it is replayed.
"""

from __future__ import annotations

import time
from typing import Any

from actors.cloud_server import CloudServer, Job, Outcome, decode_items
from testbed.base.clock import now


class TailReplay:
    """Batch time in ms from two calibrated points (batch 1 and the largest batch), scaled by 1/speed."""

    def __init__(self, host_ms: dict[int, float], speed: float):
        if not host_ms or speed <= 0:
            raise ValueError("need at least one calibrated batch size and speed > 0")
        self.host_ms = dict(sorted(host_ms.items()))
        self.speed = speed

    def batch_ms(self, n: int) -> float:
        sizes = list(self.host_ms)
        lo, hi = sizes[0], sizes[-1]
        if hi == lo or n <= lo:
            host = self.host_ms[lo] * n / lo
        else:  # linear between the two points, extrapolated per item past the largest
            per_item = (self.host_ms[hi] - self.host_ms[lo]) / (hi - lo)
            host = self.host_ms[lo] + per_item * (n - lo)
        return host / self.speed

    def describe(self) -> str:
        points = ", ".join(f"batch {n}: {ms:.1f} ms" for n, ms in self.host_ms.items())
        return f"tail replayed at {self.speed:g}x this host's calibrated time ({points} on the host); no model run"


class ReplayCloudServer(CloudServer):
    """CloudServer whose batches sleep for the replayed tail time instead of running it."""

    replays: dict[str, TailReplay]

    def _build(self) -> dict[str, Any]:
        self.replays = {}
        info = super()._build()
        for kind in self._parts:  # one per cut the run's policies may send (some already, via _item_ms)
            self._replay(kind)
        label = "; ".join(f"{k}: {r.describe()}" for k, r in self.replays.items())
        return {**info, "device_name": f"{info['device_name']}, REPLAYED cloud ({label})", "compute": "replay"}

    def _replay(self, cut: str) -> TailReplay:
        if cut not in self.replays:
            sizes = tuple(sorted({1, self.topo.cloud.max_batch_size}))
            self.replays[cut] = TailReplay(self._calibrate_part(cut, sizes), self.topo.cloud.replay_speed)
        return self.replays[cut]

    def _item_ms(self, cut: str) -> float:
        """What this replica takes for one item: the replayed time, not the host's (split predictions)."""
        return self._replay(cut).batch_ms(1)

    def _compute(self, kind: str, jobs: list[Job]) -> list[Outcome]:
        t0 = now()
        # the payload is decoded for real: that cost belongs to the tier
        _, errors = decode_items(kind, jobs, self.topo.model)
        n = len(jobs) - len(errors)
        remaining = t0 + self.replays[kind].batch_ms(n) / 1000 - now() if n else 0.0
        if remaining > 0:
            time.sleep(remaining)  # holds the executor, as the accelerator would be held
        t1 = now()
        if n:
            with self._counters_lock:
                self._count_batch(n, t1 - t0)
        return [Outcome(-1, t0, (t1 - t0) * 1000, n, errors.get(i)) for i in range(len(jobs))]

    def stats(self) -> dict[str, Any]:
        return {**super().stats(), "device": f"{self.device}, tail replayed at {self.topo.cloud.replay_speed:g}x"}
